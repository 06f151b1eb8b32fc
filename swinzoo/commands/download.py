"""`swinzoo download NAME|hf-hub:ORG/NAME[@REV]`: a thin wrapper over `swinzoo.download`, which fetches weights into
the Hugging Face cache ahead of time (with huggingface_hub's progress bars), so later commands work offline."""

from __future__ import annotations

from swinzoo.commands import examples


def register(subparsers) -> None:
    p = subparsers.add_parser("download", help="fetch a zoo name's or a Hub repo's weights into the HF cache",
                              epilog=examples(
        "swinzoo download swin_b_224",
        "swinzoo download hf-hub:microsoft/swinv2-tiny-patch4-window8-256 --check"))
    p.add_argument("ref", metavar="NAME|hf-hub:ORG/NAME[@REV]", help="zoo name or Hub reference")
    p.add_argument("--check", action="store_true", help="also read the weights and print the detected config")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    from swinzoo.hub import download

    console = Console()
    folder = download(args.ref)
    if folder.is_file():
        console.print(f"{args.ref} ships inside swinzoo ({folder}): nothing to download", soft_wrap=True, markup=False)
    else:
        console.print(f"{args.ref} -> {folder}", soft_wrap=True, markup=False)
    if args.check:
        from swinzoo.sources import read_checkpoint  # torch and the models: only to read the weights

        cfg = read_checkpoint(args.ref).config
        console.print(f"V{cfg.version}, {cfg.img_size} px, window {cfg.window_size}, {cfg.num_classes} classes",
                      soft_wrap=True)
    return 0
