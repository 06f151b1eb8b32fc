"""`swinzoo recipes`: the packaged fine-tuning and SimMIM pretraining recipes, one line each (or one in full)."""

from __future__ import annotations

from swinzoo.commands import examples, print_json


def register(subparsers) -> None:
    p = subparsers.add_parser("recipes", help="the packaged fine-tuning and pretraining recipes, one line each",
                              epilog=examples("swinzoo recipes",
                                              "swinzoo recipes swin_224to384          # every value of one recipe",
                                              "swinzoo recipes --json"))
    p.add_argument("name", nargs="?", metavar="NAME", help="print this recipe in full (YAML), as --recipe uses it")
    p.add_argument("--json", action="store_true", help="print JSON: name, description, res, window and every value")
    p.set_defaults(func=run)


def run(args) -> int:
    import yaml
    from rich.console import Console

    from swinzoo.train.recipes import OFFICIAL_MOVES, PLAIN_RECIPE, describe_recipes, load_recipe

    if args.name:
        recipe = load_recipe(args.name)
        values = recipe.to_dict()
        if args.json:
            print_json(values, indent=1)
        else:
            print(yaml.safe_dump(values, sort_keys=False).rstrip())
        return 0
    rows = describe_recipes()
    if args.json:
        print_json([load_recipe(name).to_dict() for name, _ in rows], indent=1)
        return 0
    console = Console()
    soft = not console.is_terminal  # piped (`| grep NAME`): a line each, not wrapped at 80 or $COLUMNS
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        console.print(f"[bold]{name:<{width}}[/bold]  {description}", highlight=False, soft_wrap=soft)
    moves = ", ".join(f"V{v} {a}->{b}: {n}" for (v, a, b), n in OFFICIAL_MOVES.items())
    console.print(f"\nWithout --recipe, finetune picks the one its source names, else the official recipe of the move "
                  f"({moves}; 22k->1k at 224: swin_22kto1k), else {PLAIN_RECIPE}. Without --res it keeps the source's "
                  "resolution. swinzoo pretrain uses simmim_pretrain unless --recipe names another.", highlight=False,
                  soft_wrap=soft)
    return 0
