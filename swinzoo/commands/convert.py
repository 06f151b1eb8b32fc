"""`swinzoo convert` and `swinzoo export`: thin wrappers over `swinzoo.convert` and `swinzoo.export`."""

from __future__ import annotations

from rich.console import Console

from swinzoo.commands import add_trust_flag, positive_int
from swinzoo.conversion import Converted, convert, export
from swinzoo.converters import EXPORT_FORMATS
from swinzoo.sources import FORMAT_CHOICES


def register(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert a checkpoint to swinzoo format (and transfer it)")
    p.add_argument("src", metavar="SRC", help="checkpoint file or folder, zoo name, or hf-hub:ORG/NAME[@REV]")
    p.add_argument("-o", "--output", required=True, metavar="OUT.safetensors")
    add_source_arguments(p)
    p.set_defaults(func=run_convert)

    p = subparsers.add_parser("export", help="write a checkpoint in the official, timm, hf or torchvision format")
    p.add_argument("src", metavar="SRC", help="checkpoint file or folder, zoo name, or hf-hub:ORG/NAME[@REV]")
    p.add_argument("--to", required=True, choices=EXPORT_FORMATS, help="target format")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="a .pth file (official, torchvision) or a "
                   "folder (timm, hf)")
    add_source_arguments(p)
    p.add_argument("--allow-numeric-change", action="store_true",
                   help="torchvision only: export a V2 model with pretrained windows anyway (its biases change)")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that holds other files, replacing "
                   "only the export's own (config.json, model.safetensors, ...)")
    p.set_defaults(func=run_export)


def add_source_arguments(p) -> None:
    p.add_argument("--from-format", default="auto", choices=FORMAT_CHOICES)
    p.add_argument("--arch", metavar="NAME", help="zoo name giving the source architecture where the file cannot")
    p.add_argument("--res", type=positive_int, help="target resolution (default: the source's)")
    p.add_argument("--window", type=positive_int, help="target window (default: the source's window scaled with --res)")
    p.add_argument("--num-classes", type=positive_int, help="target class count (default: the source head's)")
    add_trust_flag(p)
    p.add_argument("--allow-nonfinite", action="store_true", help="read weights holding NaN or Inf anyway")


def _source_kwargs(args) -> dict:
    return dict(res=args.res, window=args.window, num_classes=args.num_classes, from_format=args.from_format,
                arch=args.arch, trust_checkpoint=args.trust_checkpoint, allow_nonfinite=args.allow_nonfinite)


def run_convert(args) -> int:
    _report(convert(args.src, args.output, **_source_kwargs(args)), "swinzoo", load_hint=False)
    return 0


def run_export(args) -> int:
    done = export(args.src, args.to, args.output, allow_numeric_change=args.allow_numeric_change,
                  overwrite=args.overwrite, **_source_kwargs(args))
    _report(done, args.to, load_hint=True)
    return 0


def _report(done: Converted, fmt: str, load_hint: bool) -> None:
    console = Console()
    if done.report.changed:
        done.report.print_to(console)
    cfg = done.config
    console.print(f"wrote {done.output} ({fmt}, V{cfg.version}, {cfg.img_size} px, window {cfg.window_size}, "
                  f"{cfg.num_classes} classes)", soft_wrap=True)
    if load_hint:
        console.print(f"load it with {done.how_to_load}", soft_wrap=True, markup=False)
