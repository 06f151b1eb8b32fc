"""`swinzoo export SRC --to official|timm|hf|torchvision -o OUT`: any source swinzoo reads -> another library's
format, optionally moved to a new resolution, window or class count first (the transfer report is printed).

- official: `{"model": state_dict}` .pth with the buffers the official code keeps (strict-clean load);
- timm: a folder (config.json + model.safetensors) for `timm.create_model("local-dir:OUT", pretrained=True)`;
- hf: a folder for `transformers.AutoModelForImageClassification.from_pretrained(OUT)` (4.x key layout);
- torchvision: a .pth state dict for `torchvision.models.swin_t(...)`-style builders (strict).
"""

from __future__ import annotations

from rich.console import Console

from swinzoo.commands.convert import add_target_arguments, load_and_transfer
from swinzoo.formats import FORMATS

TARGETS = ("official", "timm", "hf", "torchvision")


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a checkpoint in the official, timm, hf or torchvision format")
    p.add_argument("src", metavar="SRC", help="checkpoint file or folder, zoo name, or hf-hub:ORG/NAME[@REV]")
    p.add_argument("--to", required=True, choices=TARGETS, help="target format")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="a .pth file (official, torchvision) or a "
                   "folder (timm, hf)")
    p.add_argument("--from-format", default="auto", choices=FORMATS)
    p.add_argument("--arch", metavar="NAME", help="zoo name giving the source architecture where the file cannot")
    add_target_arguments(p)
    p.add_argument("--allow-numeric-change", action="store_true",
                   help="torchvision only: export a V2 model with pretrained windows anyway (its biases change)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="trust the file: allow a full (unsafe) torch.load of checkpoints holding Python objects")
    p.set_defaults(func=run)


def export(state_dict, cfg, to: str, out: str, allow_numeric_change: bool = False) -> str:
    """Write canonical weights of config `cfg` in format `to` at `out`; returns how to load the result."""
    from converters import hf, official, timm, torchvision
    from converters.common import save_torch

    if to == "official":
        from swinzoo.models import parameter_shapes

        # the official key order (a safetensors source comes back sorted by name)
        ordered = {k: state_dict[k] for k in parameter_shapes(cfg) if k in state_dict}
        save_torch(official.to_official({**ordered, **state_dict}, cfg), out)
        return "the official SwinTransformer(...).load_state_dict(torch.load(OUT)['model'])"
    if to == "timm":
        timm.write_timm_folder(state_dict, cfg, out)
        return f'timm.create_model("local-dir:{out}", pretrained=True)'
    if to == "hf":
        hf.write_hf_folder(state_dict, cfg, out)
        return f'transformers.AutoModelForImageClassification.from_pretrained("{out}")'
    save_torch(torchvision.from_canonical(state_dict, cfg, allow_numeric_change), out)
    args = ", ".join(f"{k}={v}" for k, v in torchvision.builder_kwargs(cfg).items())
    v2 = ", block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2" if cfg.version == 2 else ""
    return f"torchvision.models.swin_transformer.SwinTransformer({args}{v2})"


def run(args) -> int:
    console = Console()
    _, dst, state_dict, _ = load_and_transfer(args, console)
    how = export(state_dict, dst, args.to, args.output, args.allow_numeric_change)
    console.print(f"wrote {args.output} ({args.to}, V{dst.version}, {dst.img_size} px, window {dst.window_size}, "
                  f"{dst.num_classes} classes)", soft_wrap=True)
    console.print(f"load it with {how}", soft_wrap=True, markup=False)
    return 0
