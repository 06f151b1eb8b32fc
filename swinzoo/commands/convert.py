"""`swinzoo convert` and `swinzoo export`: thin wrappers over `swinzoo.convert` and `swinzoo.export`."""

from __future__ import annotations

from swinzoo.commands import EXPORT_CHOICES, SOURCE_HELP, add_reading_flags, examples, positive_int, reading_kwargs

CONVERT_EPILOG = examples(
        "swinzoo convert swin_base_patch4_window7_224.pth -o b224.safetensors",
        "swinzoo convert swin_base_patch4_window7_224.pth -o b384.safetensors --res 384",
        "swinzoo convert ckpt_22k.pth --arch swin_l_224 --num-classes 1000 -o l1k.safetensors",
        "swinzoo convert mask_rcnn_swin_tiny_patch4_window7.pth -o det_backbone.safetensors",
        "swinzoo convert swin_t_224 --features --window 12 -o backbone_w12.safetensors",
        "swinzoo convert hf-hub:timm/swin_tiny_patch4_window7_224.ms_in1k -o t.safetensors")
EXPORT_EPILOG = examples(
        "swinzoo export m.safetensors --to timm -o out_timm",
        "swinzoo export swinv2_n_64_w4 --to hf -o out_hf --res 128",
        "swinzoo export m.safetensors --to official -o m.pth",
        "swinzoo export swin_t_224 --to onnx -o swin_t.onnx",
        "swinzoo export swin_t_224 --features --to pt2 -o swin_t_backbone.pt2")

# finetune's and pretrain's spelling, read as -o: as a prefix it was refused as ambiguous (--output, --out-indices)
OUT_SPELLING = {"--out": "--output"}


def register(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert a checkpoint to swinzoo format (and transfer it)",
                              epilog=CONVERT_EPILOG, hidden_options=OUT_SPELLING)
    p.add_argument("src", metavar="SRC", help=SOURCE_HELP)
    p.add_argument("-o", "--output", required=True, metavar="OUT.safetensors", help="the swinzoo file to write")
    add_source_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it exists")
    p.set_defaults(func=run_convert)

    p = subparsers.add_parser("export", help="write a checkpoint in another library's format, or as an ONNX / "
                              "torch.export graph with dynamic batch, height and width",
                              epilog=EXPORT_EPILOG, hidden_options=OUT_SPELLING)
    p.add_argument("src", metavar="SRC", help=SOURCE_HELP)
    p.add_argument("--to", required=True, choices=EXPORT_CHOICES, help="target format")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="a .pth file (official, torchvision), a "
                   "folder (timm, hf), a .onnx or a .pt2 file")
    add_source_arguments(p)
    p.add_argument("--allow-numeric-change", action="store_true",
                   help="torchvision only: export a V2 model with pretrained windows anyway (its biases change)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT file, or write into a folder "
                   "that holds other files or another kind of export, replacing only the export's own (config.json, "
                   "model.safetensors, ...)")
    p.set_defaults(func=run_export)


def add_source_arguments(p) -> None:
    add_reading_flags(p, "SRC")
    p.add_argument("--res", type=positive_int, help="target resolution (default: the source's)")
    p.add_argument("--window", type=positive_int, help="target window (default: the source's window scaled with --res)")
    p.add_argument("--num-classes", type=positive_int, help="target class count (default: the source head's)")
    p.add_argument("--features", action="store_true", help="the detection backbone (NCHW maps at strides "
                   "4-32, official detection numerics) instead of the classifier; --window is then its window")
    p.add_argument("--out-indices", type=int, nargs="+", metavar="I", help="the stages a backbone returns "
                   "(default: all; implies --features)")
    p.add_argument("--allow-nonfinite", action="store_true", help="read weights holding NaN or Inf anyway")


def _source_kwargs(args) -> dict:
    out_indices = tuple(args.out_indices) if args.out_indices is not None else None
    return dict(res=args.res, window=args.window, num_classes=args.num_classes, allow_nonfinite=args.allow_nonfinite,
                features=args.features, out_indices=out_indices, **reading_kwargs(args))


def run_convert(args) -> int:
    from swinzoo.conversion import convert

    _report(convert(args.src, args.output, overwrite=args.overwrite, **_source_kwargs(args)), "swinzoo",
            load_hint=False)
    return 0


def run_export(args) -> int:
    from swinzoo.conversion import export

    done = export(args.src, args.to, args.output, allow_numeric_change=args.allow_numeric_change,
                  overwrite=args.overwrite, **_source_kwargs(args))
    _report(done, args.to, load_hint=True)
    return 0


def _report(done, fmt: str, load_hint: bool) -> None:
    from rich.console import Console

    console = Console()
    if done.report.changed:
        done.report.print_to(console)
    cfg = done.config
    simmim = "MaskedImageModeling" in done.how_to_load or "load_simmim" in done.how_to_load
    what = (f"detection backbone, outputs {list(cfg.out_indices)}" if cfg.is_backbone else
            f"{cfg.img_size} px, window {cfg.window_size}, "
            + ("SimMIM encoder + decoder" if simmim else f"{cfg.num_classes} classes"))
    if cfg.is_backbone:
        what += f", window {cfg.window_size}"
    console.print(f"wrote {done.output} ({fmt}, V{cfg.version}, {what})", soft_wrap=True, markup=False)
    if load_hint:
        console.print(f"load it with {done.how_to_load}", soft_wrap=True, markup=False)
