"""`swinzoo push`: a thin wrapper over `swinzoo.push` (a fine-tuning output folder or a model file -> the Hub)."""

from __future__ import annotations

from swinzoo.commands import add_reading_flags, examples, reading_kwargs


def register(subparsers) -> None:
    p = subparsers.add_parser("push", help="push a model to the Hugging Face Hub (timm- and swinzoo-loadable)",
                              epilog=examples(
        "swinzoo push runs/b384 --repo my-org/swin-b-384-pets",
        "swinzoo push runs/b384 --repo my-org/swin-b-384-pets --dry-run preview"))
    p.add_argument("src", metavar="SRC", help="fine-tuning output folder or model file")
    p.add_argument("--repo", required=True, metavar="ORG/NAME", help="the Hub repo (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", metavar="BRANCH", help="branch to commit to (created if missing)")
    p.add_argument("--commit-message", metavar="M", help="message of the commit (default: a line naming the size)")
    p.add_argument("--overwrite-card", action="store_true", help="replace a README.md already on the Hub")
    p.add_argument("--dry-run", metavar="DIR", help="write the folder that would be uploaded to DIR; upload nothing")
    add_reading_flags(p, "SRC")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    from swinzoo.upload import push

    console = Console()
    result = push(args.src, args.repo, private=args.private, revision=args.revision,
                  commit_message=args.commit_message, overwrite_card=args.overwrite_card, dry_run=args.dry_run,
                  console=console, **reading_kwargs(args))
    if args.dry_run:
        console.print(f"wrote {result} (what `--repo {args.repo}` would receive; nothing uploaded)", soft_wrap=True,
                      markup=False)
    else:
        console.print(f"pushed {args.src} to {args.repo}: {result}", soft_wrap=True, markup=False)
    return 0
