"""`swinzoo download NAME|hf-hub:ORG/NAME[@REV]`: fetch weights into the Hugging Face cache ahead of time (with
huggingface_hub's progress bars), so later commands work offline (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

from rich.console import Console

from swinzoo import hub
from swinzoo.zoo import get_entry


def register(subparsers) -> None:
    p = subparsers.add_parser("download", help="fetch a zoo name's or a Hub repo's weights into the HF cache")
    p.add_argument("ref", metavar="NAME|hf-hub:ORG/NAME[@REV]")
    p.add_argument("--check", action="store_true", help="also read the weights and print the detected config")
    p.set_defaults(func=run)


def run(args) -> int:
    console = Console()
    ref = args.ref
    if not hub.is_hub_ref(ref):
        get_entry(ref)  # unknown names fail here, with the closest names
        ref = hub.zoo_repo(args.ref)
    folder = hub.fetch(ref)
    console.print(f"{ref} -> {folder}", soft_wrap=True, markup=False)
    if args.check:
        from swinzoo.sources import load_source

        cfg = load_source(args.ref).config
        console.print(f"V{cfg.version}, {cfg.img_size} px, window {cfg.window_size}, {cfg.num_classes} classes",
                      soft_wrap=True)
    return 0
