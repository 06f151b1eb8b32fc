"""`swinzoo pretrain`: a thin wrapper over `swinzoo.pretrain` (SimMIM), parsed as `swinzoo finetune` is.

The parser is jsonargparse, as finetune's: every flag is a config key, `--config run.yaml` reads them,
`--print-config` prints the merged config, OUT/config.yaml replays a run, and any `lightning.Trainer` argument is
`--trainer.NAME VALUE` (or `--trainer NAME=VALUE`). The spelling fixes and the one-line errors are the ones
finetune uses (`run_parsing`). `--help` builds the parser without Lightning, so it stays fast.
"""

from __future__ import annotations

from swinzoo.commands import examples
from swinzoo.commands.run_parsing import (
    TRAINER_HELP,
    add_hardware_arguments,
    add_output_arguments,
    add_reading_arguments,
    add_recipe_overrides,
    add_schedule_arguments,
    add_trainer_group,
    help_formatter,
    parse_run_options,
)

EXAMPLES = examples(
    "swinzoo pretrain --from swin_n_64 --data shapes --max-steps 200   # the nano model's encoder, offline",
    "swinzoo pretrain --from swin_b_224 --scratch --res 192 --window 6 --data imagenet/ --devices 8 --strategy ddp",
    "swinzoo pretrain --from simmim_swin_base.pth --data photos/ --max-steps 1000   # continue a SimMIM model",
    "swinzoo pretrain --from swin_n_64 --data shapes --print-config > pre.yaml   # the whole run as YAML",
    "swinzoo pretrain --config pre.yaml --out runs/pre                # ... and run it",
    "swinzoo pretrain --resume runs/pre --max-steps 400               # continue a stopped run from last.ckpt",
    "swinzoo finetune --from runs/pre/model.safetensors --data shapes  # then fine-tune its encoder")

DESCRIPTION = """SimMIM masked-image pretraining of a Swin encoder (official recipe and numerics), with Lightning.
The source is a zoo name or classification file (its encoder, a fresh mask token and decoder), a SimMIM checkpoint
(continued), or a zoo architecture from scratch. OUT/model.safetensors holds the SimMIM model; each validation
draws OUT/reconstructions/step_N.png. Every flag is also a key of a YAML config (--config)."""


def register(subparsers) -> None:
    # listed in `swinzoo --help`; `swinzoo.cli` hands everything after `pretrain` to `main` before argparse runs
    subparsers.add_parser("pretrain", add_help=False,
                          help="SimMIM self-supervised pretraining of a Swin encoder on images (no labels)")


def build_parser(with_trainer: bool = True):
    """The pretrain parser; `with_trainer` types every `lightning.Trainer` argument (imports Lightning)."""
    from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser

    p = ArgumentParser(prog="swinzoo pretrain", description=DESCRIPTION, epilog=EXAMPLES, exit_on_error=False,
                       formatter_class=help_formatter())
    p.add_argument("--config", action=ActionConfigFile, help="a YAML file of these keys (flags after it override)")
    source = p.add_argument_group("source and target")
    source.add_argument("--from", dest="from", type=str | None, metavar="SRC",
                        help="zoo name (swin_n_64), classification or SimMIM file or folder, or hf-hub:ORG/NAME")
    source.add_argument("--scratch", action=ActionYesNo(no_prefix="no-"), default=False,
                        help="fresh weights of the zoo architecture SRC names")
    source.add_argument("--res", type=int | None, help="pretraining resolution (default: the source's)")
    source.add_argument("--window", type=int | None, help="window (default: the official choice for --res)")
    add_reading_arguments(source)
    data = p.add_argument_group("data, masks and recipe")
    data.add_argument("--data", type=str | None, help="a folder of images (with train/ and val/, or without: a fixed "
                      "validation set is held out), hf:NAME[:CONFIG], or shapes (built in); labels are not used")
    for flag, kind, text in (("--train-split", str, "the training split (default: train)"),
                             ("--val-split", str, "the validation split (default: the first of validation, val, valid, "
                              "test, else carved from train)"),
                             ("--val-fraction", float, "fraction of train held out when there is no validation "
                              "split (default: 0.1)"),
                             ("--image-column", str, "the image column (default: the one image feature)"),
                             ("--label-column", str, "labels that stratify a carved validation "
                              "split (default: the label feature, if any)"),
                             ("--split-seed", int, "seed of the carved validation split (default: 0)")):
        data.add_argument(flag, dest=flag[2:].replace("-", "_"), type=kind | None, help=f"hf: {text}")
    data.add_argument("--mask-ratio", dest="mask_ratio", type=float | None,
                      help="share of mask units masked (default: the recipe's, official 0.6)")
    data.add_argument("--mask-patch-size", dest="mask_patch_size", type=int | None,
                      help="side of a mask unit in pixels; divides --res (default: the recipe's, official 32)")
    data.add_argument("--norm-targets", dest="norm_targets", action=ActionYesNo(no_prefix="no-"), default=None,
                      help="L1 against locally normalised pixels, as the official SwinV2-B (default: the recipe's)")
    data.add_argument("--recipe", type=str | dict | None,
                      help="recipe name, YAML path or mapping of recipe keys (default: simmim_pretrain; a mapping of "
                      "some keys changes it)")
    add_recipe_overrides(data)
    add_schedule_arguments(data, "stop after this many optimizer steps (warmup and cosine span them)",
                           "random seed: weights, data order and masks (default: the recipe's)")
    add_hardware_arguments(p)
    add_output_arguments(p, "runs/SRC-simmim-RES")
    add_trainer_group(p, with_trainer, TRAINER_HELP.replace("val/top1", "val/loss"))
    return p


def parse(argv: list[str]):
    """argv (after `pretrain`) -> PretrainOptions, or an exit code when help or the config was printed."""
    from swinzoo.train.pretrain_options import PretrainOptions

    return parse_run_options(argv, build_parser, "pretrain", PretrainOptions)


def main(argv: list[str]) -> int:
    from rich.console import Console

    options = parse(argv)
    if isinstance(options, int):
        return options
    from swinzoo.train.pretrain import run_pretrain

    run_pretrain(options, Console())
    return 0
