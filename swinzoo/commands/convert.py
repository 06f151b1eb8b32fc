"""`swinzoo convert`: any supported checkpoint -> a swinzoo .safetensors file, optionally moved to a new
resolution, window or class count on the way (the transfer report is printed)."""

from __future__ import annotations

from rich.console import Console

from swinzoo.config import SwinConfig, geometry_problem, scaled_window, suggest_geometry
from swinzoo.errors import SwinzooError
from swinzoo.io import save_state_dict, verify_state_dict
from swinzoo.models import parameter_shapes
from swinzoo.sources import FORMATS, load_source
from swinzoo.transfer import transfer


def register(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert a checkpoint to swinzoo format (and transfer it)")
    p.add_argument("src", metavar="SRC", help="checkpoint file or folder")
    p.add_argument("-o", "--output", required=True, metavar="OUT.safetensors")
    p.add_argument("--from-format", default="auto", choices=FORMATS)
    p.add_argument("--arch", metavar="NAME", help="zoo name giving the source architecture where the file cannot")
    add_target_arguments(p)
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="trust the file: allow a full (unsafe) torch.load of checkpoints holding Python objects")
    p.set_defaults(func=run)


def add_target_arguments(p) -> None:
    p.add_argument("--res", type=int, help="target resolution (default: the source's)")
    p.add_argument("--window", type=int, help="target window (default: the source's window scaled with --res)")
    p.add_argument("--num-classes", type=int, help="target class count (default: the source head's)")


def target_config(src: SwinConfig, res: int | None, window: int | None, num_classes: int | None) -> SwinConfig:
    """The config the user asked for: the source with resolution, window and classes replaced."""
    img_size = res or src.img_size
    if window is None:
        window = src.window_size if img_size == src.img_size else scaled_window(src, img_size)
    problem = geometry_problem(img_size, window, src.patch_size, src.num_stages)
    if problem:
        raise SwinzooError(f"{problem}; {suggest_geometry(img_size, window, src.patch_size, src.num_stages)}")
    changes = {"img_size": img_size, "window_size": window}
    if num_classes is not None and num_classes != src.num_classes:
        changes.update(num_classes=num_classes, class_names=None)
    return src.replace(**changes)


def load_and_transfer(args, console: Console):
    """Read SRC, move it to the target the flags describe and print the transfer report.
    Returns (source, target config, state dict, report); shared by convert and export."""
    source = load_source(args.src, args.from_format, args.arch, args.trust_checkpoint)
    dst = target_config(source.config, args.res, args.window, args.num_classes)
    state_dict, dst, report = transfer(source.state_dict, source.config, dst)
    if report.changed:
        console.print("[bold]transfer[/bold]")
        for line in report.lines():
            console.print(f"  {line}", soft_wrap=True)
    return source, dst, state_dict, report


def run(args) -> int:
    console = Console()
    source, dst, state_dict, report = load_and_transfer(args, console)
    verify_state_dict(parameter_shapes(dst), state_dict, args.src)
    provenance = dict(source.provenance)
    provenance.setdefault("source", args.src)
    if report.changed:
        provenance["transfer"] = {"from": source.config.to_dict(), **report.to_dict()}
    save_state_dict(state_dict, dst, args.output, provenance)
    console.print(f"wrote {args.output} (V{dst.version}, {dst.img_size} px, window {dst.window_size}, "
                  f"{dst.num_classes} classes)", soft_wrap=True)
    return 0

