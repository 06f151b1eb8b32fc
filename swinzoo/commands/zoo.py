"""`swinzoo list` and `swinzoo info`: thin wrappers over `swinzoo.zoo` and `swinzoo.model_info`."""

from __future__ import annotations

from swinzoo.commands import SOURCE_HELP, add_reading_flags, examples, print_json, reading_kwargs, table_console
from swinzoo.errors import SwinzooError, printable


def register(subparsers) -> None:
    p = subparsers.add_parser("list", help="table of the zoo, and which weights are already local", epilog=examples(
        "swinzoo list",
        "swinzoo list swinv2                    # names containing swinv2",
        "swinzoo list 'swin_*_384*' --json"))
    p.add_argument("pattern", nargs="?", metavar="PATTERN", help="only names matching it (a glob, else a substring)")
    p.add_argument("--json", action="store_true", help="print JSON: a list of {name, default, version, res, "
                   "window, params_m, gmacs, top1, classes, hub, local} ([] when nothing matches; docs/scripting.md)")
    p.set_defaults(func=run_list)
    p = subparsers.add_parser("info", help="config, parameters and GMACs of a zoo name or a checkpoint",
                              epilog=examples(
        "swinzoo info swin_b_384",
        "swinzoo info runs/pets/model.safetensors --json"))
    p.add_argument("model", metavar="NAME|PATH", help=SOURCE_HELP)
    p.add_argument("--json", action="store_true", help="print JSON: name, config, params, gmacs and the zoo "
                   "row (tag, top1, hub_repo, ...)")
    add_reading_flags(p, "PATH")
    p.set_defaults(func=run_info)


def run_list(args) -> int:
    from rich import box
    from rich.table import Table

    from swinzoo.zoo import ENTRIES, matches

    rows = []
    for e in ENTRIES:
        for w in e.weights:
            if not matches(f"{e.name}.{w.tag}", args.pattern):
                continue
            rows.append(dict(name=f"{e.name}.{w.tag}", default=w.tag == e.default_tag, version=e.version,
                             res=e.img_size, window=e.window_size, params_m=e.params_m, gmacs=e.gmacs, top1=w.top1,
                             classes=w.num_classes,
                             hub=w.hub_repo or w.official_url or f"swinzoo/data/{w.package_file}", local=local(w)))
    if args.json:  # for scripts: an empty list is an answer, as list_models gives it
        print_json(rows, indent=1)
        return 0
    if not rows:  # an empty table reads like a zoo without such models, not a typo
        raise SwinzooError(f"no model matches {args.pattern!r}; {close_names(args.pattern)}")
    # a header rule only, short headers, one space between columns: 78 columns wide, so it fits an 80-column
    # terminal (and pipes) without cutting a digit
    table = Table(title="paper params (M) / GMACs / ImageNet-1k top-1; * = default weights",
                  caption="local: embedded (in swinzoo), cached (HF cache) or - (needs a download)",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title_justify="left", caption_justify="left",
                  padding=(0, 0), collapse_padding=True)
    for col in ("name", "V", "res", "win", "params", "GMACs", "top-1", "classes", "local"):
        table.add_column(col, justify="left" if col in ("name", "local") else "right", no_wrap=True,
                         min_width=len(col))
    for r in rows:
        table.add_row(r["name"] + (" *" if r["default"] else ""), str(r["version"]), str(r["res"]), str(r["window"]),
                      f"{r['params_m']:.1f}", gmacs_text(r["gmacs"]), "-" if r["top1"] is None else f"{r['top1']:.1f}",
                      str(r["classes"]), r["local"] or "-")
    table_console(100).print(table)  # piped: wide enough for every row
    return 0


def gmacs_text(gmacs: float) -> str:
    """Three characters for the paper's models (4.5, 47.1), two significant digits below 1: the nano models' 0.028
    would read 0.0."""
    return f"{gmacs:.1f}" if gmacs >= 1 else f"{gmacs:.2g}"


def close_names(pattern: str) -> str:
    """The hint for a pattern that matches nothing: the closest names (as an unknown model name gets), else where
    the names are."""
    import difflib

    from swinzoo.zoo import ENTRIES

    names = [e.name for e in ENTRIES]
    word = pattern.strip("*?[]").split(".")[0]
    close = difflib.get_close_matches(word, names, n=3, cutoff=0.5)
    if close:
        return f"did you mean {', '.join(close)}?"
    return "`swinzoo list` shows every name (PATTERN is a substring, or a glob with * ? [)"


def local(weights) -> str | None:
    """`embedded` (shipped in the package), `cached` (in the Hugging Face cache), or None: loading needs a download."""
    from swinzoo.hub import in_cache

    if weights.package_path() is not None:
        return "embedded"
    return "cached" if weights.hub_repo and in_cache(weights.hub_repo) else None


def run_info(args) -> int:
    from rich.table import Table
    from rich.text import Text

    from swinzoo.sources import model_info

    info = model_info(args.model, **reading_kwargs(args))
    if args.json:
        print_json(info, indent=1)
        return 0
    console = table_console(120)  # piped: whole keys and lines for grep, not cut to COLUMNS
    table = Table(title=Text(args.model), show_header=False)  # names, paths and values are text, not rich markup
    for key, value in info["config"].items():
        if key != "class_names":
            table.add_row(key, Text(str(value)))
    names = info["config"].get("class_names") or []
    # up to 1000 names: a few show what the head predicts; --json has them all
    shown = ", ".join(map(printable, names[:5])) + (f", ... ({len(names)})" if len(names) > 5 else "")
    table.add_row("class_names", Text(shown or "-"))
    table.add_row("params", f"{info['params']:,}")
    table.add_row("GMACs", f"{info['gmacs']:.3f}")
    for key, value in info.items():
        if key not in ("name", "config", "params", "gmacs"):
            table.add_row(key, Text("-" if value is None else str(value)))  # as `swinzoo list` shows a blank
    console.print(table)
    return 0
