"""`swinzoo push`: upload a fine-tuning output folder or a model file to the Hugging Face Hub."""

from __future__ import annotations

from rich.console import Console

from swinzoo.push import dry_run, push


def register(subparsers) -> None:
    p = subparsers.add_parser("push", help="push a model to the Hugging Face Hub (timm- and swinzoo-loadable)")
    p.add_argument("src", metavar="SRC", help="fine-tuning output folder or model file")
    p.add_argument("--repo", required=True, metavar="ORG/NAME")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", metavar="BRANCH", help="branch to commit to (created if missing)")
    p.add_argument("--commit-message", metavar="M")
    p.add_argument("--overwrite-card", action="store_true", help="replace a README.md already on the Hub")
    p.add_argument("--dry-run", metavar="DIR", help="write the folder that would be uploaded to DIR; upload nothing")
    p.set_defaults(func=run)


def run(args) -> int:
    console = Console()
    if args.dry_run:
        out = dry_run(args.src, args.repo, args.dry_run)
        console.print(f"wrote {out} (what `--repo {args.repo}` would receive; nothing uploaded)", soft_wrap=True)
        return 0
    url = push(args.src, args.repo, args.private, args.revision, args.commit_message, args.overwrite_card)
    console.print(f"pushed {args.src} to {args.repo}: {url}", soft_wrap=True)
    return 0
