"""`swinzoo eval` and `swinzoo predict`: thin wrappers over `swinzoo.evaluate` and `swinzoo.predict`."""

from __future__ import annotations

import sys

from swinzoo.commands import (
    SOURCE_HELP,
    add_reading_flags,
    examples,
    non_negative_int,
    positive_int,
    print_json,
    reading_kwargs,
)
from swinzoo.errors import SwinzooError, printable

DATA_FLAGS = ("train_split", "val_split", "val_fraction", "split_seed", "image_column", "label_column")


def add_runtime_arguments(p, precision_default: str | None = "fp32", default_text: str = "fp32") -> None:
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when a GPU is visible, else cpu)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=precision_default,
                   help=f"autocast precision (fp16 on a GPU only; default: {default_text})")


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="top-1/top-5 of models on a dataset's val split, at one or more resolutions",
                              epilog=examples(
        "swinzoo eval swin_n_64",
        "swinzoo eval runs/swin_n_64-128 --data shapes --json",
        "swinzoo eval swin_b_224 --data imagenet/ --res 384 --device cuda --precision bf16",
        "swinzoo eval swin_n_64 swinv2_n_64_w4 --res 64 96 128 --plot zero_shot.png   # transfer, no fine-tune"))
    p.add_argument("models", metavar="MODEL", nargs="+", help=SOURCE_HELP)
    p.add_argument("--data", help="folder with val/ class folders (or of class folders), hf:NAME or shapes "
                                  "(default: a fine-tune's own data, read as it read it, from its run.json or "
                                  "provenance; else the model's built-in training dataset)")
    # the finetune flags that say where validation comes from: by default a fine-tune's own, so a carved
    # validation split is the rows the run held out
    for flag, kind, text, otherwise in (
            ("--train-split", str, "the split columns are picked on and carved from", "train"),
            ("--val-split", str, "the split evaluated", "the first of validation, val, valid, test, else carved"),
            ("--val-fraction", float, "evaluate this fraction of the train split, carved off as finetune carves it",
             "0.1 where there is no validation split"),
            ("--split-seed", non_negative_int, "seed of the carved split", "0"),
            ("--image-column", str, "the image column", "the one image feature"),
            ("--label-column", str, "the label column", "the class-label feature, or label/labels")):
        p.add_argument(flag, dest=flag[2:].replace("-", "_"), type=kind,
                       help=f"hf: {text} (default: the fine-tune's, else {otherwise})")
    p.add_argument("--res", type=positive_int, nargs="+", help="evaluation resolution(s) (default: the model's); "
                   "another resolution transfers the model first (official window choice); several: a sweep")
    p.add_argument("--window", type=positive_int, help="window at --res (default: the official choice)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="images per batch")
    p.add_argument("--num-workers", type=non_negative_int, help="data loader workers (default: half the CPUs)")
    p.add_argument("--test-crop", choices=("auto", "yes", "no"), default="auto",
                   help="auto: the model's own preprocessing (official: resize to res/0.875 and center crop below "
                   "384 px); yes: center crop (the model's crop_pct, else 0.875); no: resize the whole image")
    # a fine-tune's own: its top-1 in metrics.json then is this measurement (bf16-mixed moves it a little)
    add_runtime_arguments(p, None, "a fine-tune's, as its metrics.json says it validated (bf16-mixed: bf16), "
                          "else fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    p.add_argument("--plot", metavar="FILE.png", help="draw top-1 against resolution (several --res or models)")
    p.add_argument("--json", action="store_true", help="print {\"top1\", \"top5\", \"n\"} as JSON (a list of rows "
                   "for several models or resolutions)")
    p.add_argument("--per-class", action="store_true", help="also each class's top-1, image count and the class its "
                   "images are most often mistaken for, worst first (JSON: per_class)")
    add_reading_flags(p)
    p.set_defaults(func=run_eval)

    p = subparsers.add_parser("predict", help="top-k classes of images",
                              epilog=examples(
        "swinzoo predict swin_n_64 a.png b.png --topk 3",
        "swinzoo predict runs/pets cat.jpg --json --device cuda"))
    p.add_argument("model", metavar="MODEL", help=SOURCE_HELP)
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files, or folders (the images below them)")
    p.add_argument("--topk", type=positive_int, default=5, help="classes per image")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch")
    add_runtime_arguments(p)
    p.add_argument("--json", action="store_true", help="print a JSON list of {image, predictions: [[class, p]]}")
    add_reading_flags(p)
    p.set_defaults(func=run_predict)


def run_eval(args) -> int:
    from rich.console import Console

    from swinzoo.accuracy_plot import tail_label
    from swinzoo.evaluation import evaluate, sweep
    from swinzoo.plot import check_png_output

    crop = {"auto": None, "yes": True, "no": False}[args.test_crop]
    options = dict(window=args.window, batch_size=args.batch_size, num_workers=args.num_workers, test_crop=crop,
                   device=args.device, precision=args.precision, compile=args.compile,
                   console=Console(stderr=True), **reading_kwargs(args),
                   data_options={k: getattr(args, k) for k in DATA_FLAGS if getattr(args, k) is not None})
    if len(args.models) == 1 and len(args.res or [None]) == 1 and not args.plot:
        result = evaluate(args.models[0], args.data, res=(args.res or [None])[0], per_class=args.per_class,
                          **options)
        if args.json:
            print_json({k: result[k] for k in ("top1", "top5", "n", "per_class") if k in result})
        else:
            split = f" {result['split']}" if result["split"] else ""
            sys.stdout.write(f"{args.models[0]} on {result['data']}{split} at {result['img_size']} px: top1 "
                             f"{result['top1']:.4f}  top5 {result['top5']:.4f}  n {result['n']}\n")
            if args.per_class:
                from swinzoo.per_class import table

                sys.stdout.write(table(result["per_class"]))
        return 0
    if args.per_class:
        raise SwinzooError("--per-class takes one model at one resolution; leave out the other models, --res values "
                           "or --plot")
    if args.res is None:
        raise SwinzooError("a sweep or a plot needs --res: give the resolutions, e.g. --res 64 96 128")
    if args.plot:  # before the evaluation, not after it
        check_png_output(args.plot, "zero_shot.png")
    rows = sweep(args.models, args.res, args.data, **options)
    # the results first: a plot that cannot be written must not cost the evaluation
    if args.json:
        print_json(rows)
    else:
        sys.stdout.write("model                            res  window   top1    top5      n\n")
        for r in rows:
            sys.stdout.write(f"{tail_label(r['model'], 32):<32} {r['res']:>4} {r['window']:>7} {r['top1']:>6.4f} "
                             f"{r['top5']:>7.4f} {r['n']:>6}\n")
        sys.stdout.flush()
    if args.plot:
        from swinzoo.accuracy_plot import draw_accuracy
        from swinzoo.plot import naming_the_plot

        with naming_the_plot(args.plot):
            draw_accuracy(rows, args.plot, f"zero-shot transfer on {args.data or 'the built-in data'}")
        if not args.json:
            sys.stdout.write(f"plot written to {args.plot}\n")
    return 0


def run_predict(args) -> int:
    from swinzoo.prediction import predict

    def print_rows(rows: list[dict]) -> None:
        for row in rows:
            # a line per image: a name's line break or terminal escape is printed escaped (--json keeps it)
            print(printable(row["image"]) + ": " + ", ".join(f"{printable(c)} {p:.3f}" for c, p in row["predictions"]))
        sys.stdout.flush()

    rows = predict(args.model, args.images, topk=args.topk, batch_size=args.batch_size, device=args.device,
                   precision=args.precision, on_batch=None if args.json else print_rows, **reading_kwargs(args))
    if args.json:  # one JSON document: written whole at the end
        print_json(rows)
    return 0
