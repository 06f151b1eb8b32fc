"""`swinzoo finetune`: a thin wrapper over `swinzoo.finetune`, with a jsonargparse parser (as litgpt and
LightningCLI use) so that a whole run is one YAML file.

- Every flag is also a config key (`--max-steps 5` is `max_steps: 5`); `--config run.yaml` reads them, later flags
  override it, `--print-config` prints the merged result and exits. Each run writes OUT/config.yaml, which
  replays it (`swinzoo finetune --config OUT/config.yaml --out NEW`).
- Any `lightning.Trainer` argument is `--trainer.NAME VALUE` (or `--trainer NAME=VALUE`, the older spelling);
  callbacks and loggers are objects given the LightningCLI way (`--trainer.callbacks+=EarlyStopping
  --trainer.callbacks.monitor=val/top1`, or class_path/init_args in YAML) and are added to swinzoo's own.

`swinzoo --help` lists this verb without importing it; `swinzoo finetune --help` builds the parser without
Lightning (the Trainer's own arguments are summarised, not listed), so help stays fast. Parsing for real imports
Lightning, which every run needs anyway, to type the Trainer arguments.
"""

from __future__ import annotations

from swinzoo.commands import examples
from swinzoo.commands.run_parsing import (
    add_hardware_arguments,
    add_output_arguments,
    add_reading_arguments,
    add_recipe_overrides,
    add_schedule_arguments,
    add_trainer_group,
    help_formatter,
    parse_run_options,
)
from swinzoo.train.options import KEEP_CHOICES  # no torch, no Lightning

EXAMPLES = examples(
    "swinzoo finetune --from swin_n_64 --res 128                       # the nano model at 128 px on shapes",
    "swinzoo finetune --from swin_b_224 --res 384 --data pets/ --devices 8 --strategy ddp",
    "swinzoo finetune --from runs/old/model.safetensors --data pets/ --max-steps 500 --trainer.val_check_interval 100",
    "swinzoo finetune --from swin_n_64 --res 96 --logger tensorboard --trainer.callbacks+=EarlyStopping "
    "--trainer.callbacks.monitor=val/top1 --trainer.callbacks.mode=max",
    "swinzoo finetune --from swin_n_64 --res 96 --print-config > run.yaml   # the whole run as YAML",
    "swinzoo finetune --config run.yaml --out runs/again                # ... and run it",
    "swinzoo finetune --config runs/swin_n_64-128/config.yaml --out runs/replay   # replay a finished run",
    "swinzoo finetune --resume runs/swin_b_224-384                     # continue a stopped run from last.ckpt")

DESCRIPTION = """Fine-tune any model swinzoo reads at a new resolution and window, with Lightning.
Values not given come from the recipe and the source. Every flag is also a key of a YAML config (--config);
--print-config prints the merged config, and each run writes OUT/config.yaml, which replays it."""

def register(subparsers) -> None:
    # listed in `swinzoo --help`; `swinzoo.cli` hands everything after `finetune` to `main` before argparse runs
    subparsers.add_parser("finetune", add_help=False,
                          help="fine-tune a model (zoo name or file) at a resolution, on a dataset (YAML configs)")


def build_parser(with_trainer: bool = True):
    """The finetune parser. `with_trainer`: type every `lightning.Trainer` argument under `trainer.` (imports
    Lightning); without it `--trainer.*` is summarised in the help only (what `--help` uses, to stay fast)."""
    from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser

    p = ArgumentParser(prog="swinzoo finetune", description=DESCRIPTION, epilog=EXAMPLES, exit_on_error=False,
                       formatter_class=help_formatter())
    p.add_argument("--config", action=ActionConfigFile, help="a YAML file of these keys (flags after it override)")
    source = p.add_argument_group("source and target")
    source.add_argument("--from", dest="from", type=str | None, metavar="SRC",
                        help="zoo name (swin_n_64), model file or folder, or hf-hub:ORG/NAME")
    source.add_argument("--res", type=int | None, help="target resolution (default: the source's; a --recipe "
                        "that sets one, such as swin_224to384, gives its own)")
    source.add_argument("--window", type=int | None, help="target window (default: the official choice for --res)")
    source.add_argument("--scratch", action=ActionYesNo(no_prefix="no-"), default=False,
                        help="start from fresh weights of SRC's architecture")
    add_reading_arguments(source)
    data = p.add_argument_group("data and recipe")
    data.add_argument("--data", type=str | None, help="folder with train/ and val/ class folders, hf:NAME[:CONFIG], "
                      "or shapes (built in); default: the dataset the source was trained on when it is built in")
    data.add_argument("--train-split", dest="train_split", type=str | None,
                      help="hf: the training split (default: train)")
    data.add_argument("--val-split", dest="val_split", type=str | None,
                      help="hf: the validation split (default: the first of validation, val, valid, test, else carved "
                           "from train)")
    data.add_argument("--val-fraction", dest="val_fraction", type=float | None,
                      help="hf: fraction of train held out (seeded) when there is no validation split (default: 0.1)")
    data.add_argument("--image-column", dest="image_column", type=str | None,
                      help="hf: the image column (default: the one image feature)")
    data.add_argument("--label-column", dest="label_column", type=str | None,
                      help="hf: the label column (default: the class-label feature, or label/labels)")
    data.add_argument("--split-seed", dest="split_seed", type=int | None,
                      help="seed of the carved validation split (hf:) and of --train-fraction's subset, separate "
                      "from --seed (default: 0)")
    data.add_argument("--train-fraction", dest="train_fraction", type=float | None,
                      help="train on this share of the training images, stratified by class (e.g. 0.01 for a 1% "
                      "label budget; validation is unchanged)")
    data.add_argument("--recipe", type=str | dict | None,
                      help="packaged recipe name, YAML path or a mapping of recipe keys (default: the one that fits "
                      "source and target; `swinzoo recipes` lists them); a mapping of some keys changes that default")
    add_recipe_overrides(data)
    add_schedule_arguments(data, "stop after this many optimizer steps (warmup and cosine span them in the recipe's "
                           "proportions)", "random seed (default: the recipe's)")
    add_hardware_arguments(p)
    output = add_output_arguments(p, "runs/SRC-RES", KEEP_CHOICES)
    output.add_argument("--push-to", dest="push_to", type=str | None, metavar="ORG/NAME",
                        help="push OUT to this Hugging Face Hub repo when training ends")
    add_trainer_group(p, with_trainer)
    return p


def parse(argv: list[str]):
    """argv (after `finetune`) -> FinetuneOptions, or an exit code when help or the config was printed."""
    from swinzoo.train.options import FinetuneOptions

    return parse_run_options(argv, build_parser, "finetune", FinetuneOptions)


def main(argv: list[str]) -> int:
    from rich.console import Console

    options = parse(argv)
    if isinstance(options, int):
        return options
    from swinzoo.train.run import run_finetune

    run_finetune(options, Console())
    return 0
