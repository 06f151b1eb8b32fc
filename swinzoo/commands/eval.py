"""`swinzoo eval` and `swinzoo predict`: thin wrappers over `swinzoo.evaluate` and `swinzoo.predict`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from swinzoo.commands import FORMAT_CHOICES, add_trust_flag, examples, non_negative_int, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="top-1/top-5 of a model on a dataset's val split",
                              epilog=examples(
        "swinzoo eval swin_n_64",
        "swinzoo eval runs/swin_n_64-128 --data shapes --json",
        "swinzoo eval swin_b_224 --data imagenet/ --res 384"))
    p.add_argument("model", metavar="MODEL", help="zoo name, .safetensors, fine-tune output folder or .pth")
    p.add_argument("--data", help="folder with val/ class folders, hf:NAME or shapes (default: the model's "
                                  "built-in training dataset)")
    p.add_argument("--res", type=positive_int, help="evaluation resolution (default: the model's); another resolution "
                                           "transfers the model first (official window choice)")
    p.add_argument("--window", type=positive_int, help="window at --res (default: the official choice)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="images per batch")
    p.add_argument("--num-workers", type=non_negative_int, default=0, help="data loader workers")
    p.add_argument("--test-crop", choices=("auto", "yes", "no"), default="auto",
                   help="resize to res/0.875 and center crop (auto: below 384 px, as the official code)")
    p.add_argument("--json", action="store_true", help="print only {\"top1\", \"top5\", \"n\"} as JSON")
    p.add_argument("--from-format", default="auto", choices=FORMAT_CHOICES, help="format of MODEL (auto: detected)")
    add_trust_flag(p)
    p.set_defaults(func=run_eval)

    p = subparsers.add_parser("predict", help="top-k classes of images",
                              epilog=examples(
        "swinzoo predict swin_n_64 a.png b.png --topk 3",
        "swinzoo predict runs/pets cat.jpg --json"))
    p.add_argument("model", metavar="MODEL", help="zoo name, .safetensors, fine-tune output folder or .pth")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    p.add_argument("--topk", type=positive_int, default=5, help="classes per image")
    p.add_argument("--json", action="store_true", help="print a JSON list of {image, predictions: [[class, p]]}")
    p.add_argument("--from-format", default="auto", choices=FORMAT_CHOICES, help="format of MODEL (auto: detected)")
    add_trust_flag(p)
    p.set_defaults(func=run_predict)


def run_eval(args) -> int:
    from rich.console import Console

    from swinzoo.evaluation import evaluate

    crop = {"auto": None, "yes": True, "no": False}[args.test_crop]
    result = evaluate(args.model, args.data, res=args.res, window=args.window, batch_size=args.batch_size,
                      num_workers=args.num_workers, test_crop=crop, from_format=args.from_format,
                      trust_checkpoint=args.trust_checkpoint, console=Console(stderr=True))
    if args.json:
        print(json.dumps({k: result[k] for k in ("top1", "top5", "n")}))
    else:
        sys.stdout.write(f"{args.model} on {result['data']} val at {result['img_size']} px: top1 "
                         f"{result['top1']:.4f}  top5 {result['top5']:.4f}  n {result['n']}\n")
    return 0


def run_predict(args) -> int:
    from swinzoo.evaluation import predict

    rows = predict(args.model, args.images, topk=args.topk, from_format=args.from_format,
                   trust_checkpoint=args.trust_checkpoint)
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        print(Path(row["image"]).name + ": " + ", ".join(f"{c} {p:.3f}" for c, p in row["predictions"]))
    return 0
