"""`swinzoo finetune`: a thin wrapper over `swinzoo.finetune` (any swinzoo-loadable model fine-tuned at a new
resolution/window on a dataset, with Lightning).

Trainer options beyond the named flags pass through as `--trainer KEY=VALUE` (repeatable), e.g.
`--trainer limit_val_batches=10 --trainer log_every_n_steps=5`; those swinzoo sets itself (callbacks, plugins,
enable_checkpointing, and the ones with a flag of their own, such as devices or precision) are refused. Every value
is checked before anything is written (`swinzoo.train.checks.validate_options`).
"""

from __future__ import annotations

import sys
from dataclasses import fields

from swinzoo.commands import FORMAT_CHOICES, add_trust_flag, examples
from swinzoo.train.options import SAVE_DTYPES

EXAMPLES = examples(
    "swinzoo finetune --from swin_n_64 --res 128                       # the nano model at 128 px on shapes",
    "swinzoo finetune --from swin_b_224 --res 384 --data pets/ --devices 8 --strategy ddp",
    "swinzoo finetune --from runs/old/model.safetensors --data pets/ --max-steps 500 --trainer val_check_interval=100",
    "swinzoo finetune --resume runs/swin_b_224-384                     # continue a stopped run from last.ckpt")


def register(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune a model (zoo name or file) at a resolution, on a dataset",
                              description="Fine-tune any model swinzoo reads at a new resolution and window, with "
                              "Lightning.\nValues not given come from the recipe and the source.", epilog=EXAMPLES)
    source = p.add_argument_group("source and target")
    source.add_argument("--from", dest="source", metavar="SRC",
                        help="zoo name (swin_n_64), model file or folder, or hf-hub:ORG/NAME")
    source.add_argument("--res", type=int, help="target resolution (default: the recipe's, else the source's)")
    source.add_argument("--window", type=int, help="target window (default: the official choice for --res)")
    source.add_argument("--scratch", action="store_true", help="start from fresh weights of SRC's architecture")
    source.add_argument("--from-format", default="auto", choices=FORMAT_CHOICES, help="format of SRC")
    source.add_argument("--arch", metavar="NAME", help="zoo name giving the source architecture where the file "
                        "cannot")
    add_trust_flag(source)
    data = p.add_argument_group("data and recipe")
    data.add_argument("--data", help="folder with train/ and val/ class folders, hf:NAME, or shapes (built in); "
                                     "default: the dataset the source was trained on when it is built in")
    data.add_argument("--recipe", help="packaged recipe name or YAML path (default: the source's fine-tune recipe, "
                                       "else swin_224to384)")
    length = data.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="epochs (default: the recipe's)")
    length.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (warmup and cosine "
                                                      "span them in the recipe's proportions)")
    data.add_argument("--batch-size", type=int, help="images per device per step (default: the recipe's)")
    data.add_argument("--lr", type=float, help="peak lr, used as is (default: recipe base_lr x total batch / 512)")
    data.add_argument("--seed", type=int, help="random seed (default: the recipe's)")
    data.add_argument("--num-workers", type=int, help="data loader workers per device (default: half the CPUs)")
    hardware = p.add_argument_group("hardware (Lightning)")
    hardware.add_argument("--devices", default="auto", help="Lightning devices: a count, a list like 0,1, or auto")
    hardware.add_argument("--accelerator", default="auto", help="cpu, gpu, ...")
    hardware.add_argument("--strategy", default="auto", help="ddp, fsdp, ddp_spawn, ...")
    hardware.add_argument("--num-nodes", type=int, default=1, help="machines, each running --devices processes")
    hardware.add_argument("--precision", help="32-true, 16-mixed, bf16-mixed, ... (default: the recipe's)")
    hardware.add_argument("--trainer", action="append", metavar="KEY=VALUE",
                          help="any other lightning.Trainer option (repeatable; values in YAML)")
    output = p.add_argument_group("output")
    output.add_argument("--out", help="output folder (default runs/SRC-RES)")
    output.add_argument("--resume", metavar="OUT", help="continue the run in OUT from OUT/last.ckpt")
    output.add_argument("--ckpt-every", type=int, help="also write OUT/last.ckpt every N optimizer steps")
    output.add_argument("--save-dtype", default="float32", choices=SAVE_DTYPES,
                        help="dtype of the weights in OUT/model.safetensors")
    output.add_argument("--push-to", metavar="ORG/NAME", help="push OUT to this Hugging Face Hub repo when training "
                        "ends")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    from swinzoo.train.checks import parse_trainer_options
    from swinzoo.train.options import FinetuneOptions
    from swinzoo.train.run import run_finetune

    values = {f.name: getattr(args, f.name) for f in fields(FinetuneOptions) if hasattr(args, f.name)}
    values.update(trainer=parse_trainer_options(args.trainer), command=" ".join(["swinzoo", *sys.argv[1:]]))
    run_finetune(FinetuneOptions(**values), Console())
    return 0
