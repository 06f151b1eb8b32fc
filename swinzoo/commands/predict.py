"""`swinzoo predict`: class names and probabilities for image files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from rich.console import Console

from swinzoo.errors import SwinzooError
from swinzoo.sources import FORMATS


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="top-k classes of images")
    p.add_argument("model", metavar="MODEL", help="zoo name, .safetensors, fine-tune output folder or .pth")
    p.add_argument("images", metavar="IMAGE", nargs="+")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print a JSON list of {image, predictions: [[class, p]]}")
    p.add_argument("--from-format", default="auto", choices=FORMATS)
    p.set_defaults(func=run)


def run(args) -> int:
    from swinzoo.commands.eval import load_for_eval
    from swinzoo.train.data import eval_transform

    console = Console(stderr=True)
    model, _ = load_for_eval(args.model, args.from_format, None, None, console)
    cfg = model.config
    names = cfg.class_names or [str(i) for i in range(cfg.num_classes)]
    tf = eval_transform(cfg.img_size)
    batch = []
    for path in args.images:
        try:
            with Image.open(path) as im:
                batch.append(tf(im.convert("RGB")))
        except (OSError, UnidentifiedImageError) as e:
            raise SwinzooError(f"{path} is not a readable image ({e})") from None
    with torch.inference_mode():
        probs = model(torch.stack(batch)).float().softmax(-1)
    k = max(1, min(args.topk, cfg.num_classes))
    values, indices = probs.topk(k, dim=-1)
    rows = [{"image": str(path), "predictions": [[names[i], round(float(p), 6)] for p, i in zip(v, ix)]}
            for path, v, ix in zip(args.images, values.tolist(), indices.tolist())]
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        print(Path(row["image"]).name + ": " + ", ".join(f"{c} {p:.3f}" for c, p in row["predictions"]))
    return 0
