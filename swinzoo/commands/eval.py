"""`swinzoo eval`: top-1 / top-5 accuracy of a model on the validation split of a dataset."""

from __future__ import annotations

import json
import sys

import torch
from rich.console import Console
from rich.progress import Progress
from torchmetrics.classification import MulticlassAccuracy

from swinzoo.errors import SwinzooError
from swinzoo.sources import FORMATS


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="top-1/top-5 of a model on a dataset's val split")
    p.add_argument("model", metavar="MODEL", help="zoo name, .safetensors, fine-tune output folder or .pth")
    p.add_argument("--data", help="folder with val/ class folders, hf:NAME or shapes (default: the model's "
                                  "built-in training dataset)")
    p.add_argument("--res", type=int, help="evaluation resolution (default: the model's); another resolution "
                                           "transfers the model first (official window choice)")
    p.add_argument("--window", type=int, help="window at --res (default: the official choice)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--test-crop", choices=("auto", "yes", "no"), default="auto",
                   help="resize to res/0.875 and center crop (auto: below 384 px, as the official code)")
    p.add_argument("--json", action="store_true", help="print only {\"top1\", \"top5\", \"n\"} as JSON")
    p.add_argument("--from-format", default="auto", choices=FORMATS)
    p.set_defaults(func=run)


def load_for_eval(name: str, fmt: str, res: int | None, window: int | None, console: Console):
    """(model in eval mode, provenance): the source moved to `res`/`window` when they differ from its own."""
    from swinzoo.commands.convert import target_config
    from swinzoo.io import load_strict
    from swinzoo.models import SwinTransformer
    from swinzoo.sources import load_source
    from swinzoo.transfer import transfer

    source = load_source(name, fmt)
    cfg, state_dict = source.config, source.state_dict
    if (res and res != cfg.img_size) or (window and window != cfg.window_size):
        state_dict, dst, report = transfer(state_dict, cfg, target_config(cfg, res, window, None))
        console.print(f"transferred {name}: " + "; ".join(report.lines()[:2]), soft_wrap=True)
        cfg = dst
    model = SwinTransformer(cfg)
    load_strict(model, {k: v.float() for k, v in state_dict.items()}, name)
    return model.eval(), source.provenance


def evaluate(model, data: str, batch_size: int, num_workers: int, test_crop: bool | None,
             console: Console) -> dict:
    from swinzoo.train.data import eval_loader, open_split

    cfg = model.config
    dataset = open_split(data, "val", cfg.img_size)
    if cfg.num_classes != len(dataset.classes):
        raise SwinzooError(f"the model has {cfg.num_classes} classes but {data} has {len(dataset.classes)}; "
                           "fine-tune it on this data first (swinzoo finetune)")
    if cfg.class_names and list(cfg.class_names) != list(dataset.classes):
        console.print(f"note: class names differ from the model's ({dataset.classes[:3]}... vs "
                      f"{cfg.class_names[:3]}...); labels are matched by index", soft_wrap=True)
    top1 = MulticlassAccuracy(cfg.num_classes, top_k=1, average="micro")
    top5 = MulticlassAccuracy(cfg.num_classes, top_k=min(5, cfg.num_classes), average="micro")
    loader = eval_loader(dataset, cfg.img_size, batch_size, num_workers, test_crop)
    with torch.inference_mode(), Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"eval {cfg.img_size} px", total=len(loader))
        for images, labels in loader:
            logits = model(images)
            top1.update(logits, labels)
            top5.update(logits, labels)
            progress.advance(task)
    return {"top1": float(top1.compute()), "top5": float(top5.compute()), "n": len(dataset)}


def run(args) -> int:
    from swinzoo.train.data import BUILTIN

    console = Console(stderr=True)
    model, provenance = load_for_eval(args.model, args.from_format, args.res, args.window, console)
    data = args.data or (provenance.get("dataset") if provenance.get("dataset") in BUILTIN else None)
    if data is None:
        raise SwinzooError("--data is required: a folder with val/ class folders, hf:NAME, or the built-in "
                           f"{', '.join(BUILTIN)}")
    crop = {"auto": None, "yes": True, "no": False}[args.test_crop]
    result = evaluate(model, data, args.batch_size, args.num_workers, crop, console)
    if args.json:
        print(json.dumps(result))
    else:
        sys.stdout.write(f"{args.model} on {data} val at {model.config.img_size} px: top1 {result['top1']:.4f}  "
                         f"top5 {result['top5']:.4f}  n {result['n']}\n")
    return 0
