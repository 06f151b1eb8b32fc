"""What `swinzoo finetune` and `swinzoo pretrain` share in reading their command line: the jsonargparse
spellings they accept besides its own (`normalise_argv`), the help formatting, the Lightning hardware and recipe
override flags, and the one-line errors (`explain`, `check_config_files`) that replace jsonargparse's multi-line
ones. Each verb's module keeps only its own parser (`build_parser`) and entry point.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shlex
import sys
from pathlib import Path
from typing import Literal

from swinzoo.commands import EMA_HELP, FORMAT_CHOICES, TRUST_HELP
from swinzoo.commands.run_config import given_trainer, print_request, printed_config
from swinzoo.errors import SwinzooError
from swinzoo.run_folder import CONFIG_FILE
from swinzoo.train.options import LOGGER_CHOICES, SAVE_DTYPES  # no torch, no Lightning

HELP_FLAGS = ("-h", "--help")

TRAINER_HELP = """any lightning.Trainer argument as --trainer.NAME VALUE (or --trainer NAME=VALUE), e.g.
--trainer.limit_val_batches 10 --trainer.log_every_n_steps 5; callbacks and loggers as objects:
--trainer.callbacks+=EarlyStopping --trainer.callbacks.monitor=val/top1, or class_path/init_args in YAML.
They are added to swinzoo's own (the checkpointing that --resume needs, the CSV log). A value given applies,
even Lightning's default (--trainer.gradient_clip_val null turns the recipe's clipping off); `--print-config`
lists the others with their defaults, as comments. Owned by swinzoo (use the named flag): devices,
accelerator, strategy, num_nodes, precision, max_steps, max_epochs, default_root_dir, plugins,
enable_checkpointing."""


# jsonargparse's names -> the dashed spelling of the other flags, which help lists (both are read)
LISTED_SPELLINGS = {"--print_config": "--print-config", "--recipe_overrides": "--recipe-overrides"}


def _as_listed(text: str) -> str:
    for name, listed in LISTED_SPELLINGS.items():
        text = text.replace(name, listed)
    return text


def help_formatter():
    from jsonargparse import DefaultHelpFormatter

    class Formatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
        """Description and examples as written; each option's type and default shown (jsonargparse's), the
        default only where the help does not say it: `default: the recipe's` needs no `default: null` after it."""

        def _get_help_string(self, action: argparse.Action) -> str:
            text = super()._get_help_string(action)
            if "default" not in (action.help or ""):
                return text
            return text.replace(", default: %(default)s)", ")").replace(" (default: %(default)s)", "")

        def _format_usage(self, *args, **kwargs) -> str:
            return _as_listed(super()._format_usage(*args, **kwargs))

        def _format_action_invocation(self, action: argparse.Action) -> str:
            return _as_listed(super()._format_action_invocation(action))

    return Formatter


def normalise_argv(argv: list[str]) -> list[str]:
    """The spellings jsonargparse does not know: `--print-config`, `--recipe-overrides`, `--recipe.KEY` (see
    `add_recipe_overrides`), and `--trainer KEY=VALUE` (swinzoo's first form) -> `--trainer.KEY=VALUE`."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        for name, listed in LISTED_SPELLINGS.items():
            if arg == listed or arg.startswith(listed + "="):
                arg = arg.replace(listed, name, 1)
        if arg.startswith("--recipe."):
            arg = "--recipe_overrides." + arg[len("--recipe."):]
        if arg == "--trainer" and i + 1 < len(argv) and _is_pair(argv[i + 1]):
            arg, i = "--trainer." + argv[i + 1].strip(), i + 1
        elif arg.startswith("--trainer=") and _is_pair(arg[len("--trainer="):]):
            arg = "--trainer." + arg[len("--trainer="):].strip()
        out.append(arg)
        i += 1
    return out


def _is_pair(text: str) -> bool:
    key = text.partition("=")[0].strip()
    return "=" in text and key.isidentifier()


def explain(error: Exception, parser) -> str:
    """jsonargparse's multi-line error -> one line naming the key, the value and what is wanted."""
    text = str(error)
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    m = re.match(r'Parser key "config": File does not exist: (.+)', first)
    if m:
        path = m.group(1).strip("'")
        return f"--config {path}: no such file; give a YAML config (from --print-config, or a run's OUT/config.yaml)"
    if first.startswith("Unexpected config"):  # inline text that is no mapping (files are checked first)
        given = first.split(":", 1)[1].strip()
        return f"--config {given!r}: neither a YAML file nor a mapping of keys; {CONFIG_FIX}"
    if first.startswith("Problems parsing config"):
        where = re.findall(r"line (\d+), column (\d+)", text)
        at = f" at line {where[-1][0]}, column {where[-1][1]}" if where else ""
        return f"--config: not valid YAML{at} ({first.split(':', 1)[1].strip()}); fix the file"
    m = re.match(r'Parser key "([^"]+)"', first)
    if m and m.group(1) == "trainer":  # a value that is not a mapping (jsonargparse: "Unable to load config '5'")
        from swinzoo.train.trainer_options import not_a_mapping

        given = re.findall(r"Unable to load config '(.*)'", text) or re.findall(r'Unable to load config "(.*)"', text)
        return not_a_mapping(given[0] if given else "that")
    if m:
        key = m.group(1)
        given = re.findall(r"Given value: (.*)", text) or re.findall(r"Got value: (.*)", text)
        value = given[-1].strip() if given else "?"
        problem = re.search(r"Problem with given class_path '([^']+)':\s*(.+)", text)
        flag = _flag(key)
        if problem:
            return f"{flag}: {problem.group(1)}: {problem.group(2).strip()}"
        hint = f"; for {value} write --logger {value}" if key == "trainer.logger" and value in LOGGER_CHOICES else ""
        return f"{flag}={value!r}: {_wanted(key, parser)}{hint}"
    m = re.match(r"Group 'trainer' does not accept option '([^']+)'", first)
    if m:
        return _trainer_key_problem(m.group(1), parser.prog)
    m = re.match(r"Option '([^']+)' is not accepted", first)
    if m:
        return f"unknown config key {m.group(1)!r}; valid keys: {', '.join(_config_keys(parser))}"
    m = re.match(r"unrecognized arguments: --trainer\.([\w.]+)", first)
    if m:
        return _trainer_key_problem(m.group(1).split(".")[0], parser.prog)
    m = re.match(r"unrecognized arguments: (\S+)", first)
    if m:
        flags = [s for a in parser._actions for s in a.option_strings]
        return f"unrecognized argument {m.group(1)}{_closest(m.group(1).split('=')[0], flags, parser.prog)}"
    # the flag last, or its value read as a flag (-1e-3 reads as a number, -inf does not)
    return re.sub(r"^argument (\S+): expected one argument$", r"\1 needs a value (one starting with -: \1=VAL)", first)


def _flag(key: str) -> str:
    if key.startswith("recipe_overrides."):
        return "--recipe." + key[len("recipe_overrides."):]
    return f"--{key}" if key.startswith("trainer.") else f"--{key.replace('_', '-')}"


def _closest(word: str, choices: list[str], prog: str = "swinzoo finetune") -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]}?" if close else f"; see `{prog} --help`"


def _trainer_key_problem(key: str, prog: str = "swinzoo finetune") -> str:
    """An unknown or swinzoo-owned `trainer.KEY`: which, and what to write instead."""
    from swinzoo.train.trainer_options import TRAINER_OWNED, trainer_hints

    if key in TRAINER_OWNED:
        return f"--trainer.{key}: refused, {TRAINER_OWNED[key]}"
    close = difflib.get_close_matches(key, list(trainer_hints()), n=1)
    hint = ""
    if close:
        owned = TRAINER_OWNED.get(close[0])
        hint = f"; did you mean {close[0]}?" + (f" ({owned})" if owned else "")
    return f"--trainer.{key}: not a Trainer option{hint or f'; `{prog} --print-config` lists them'}"


def _config_keys(parser) -> list[str]:
    skip = {"help", "config", "print_config", "print_shtab", "trainer_summary", "trainer"}
    keys = [a.dest for a in parser._actions if a.dest not in skip and not a.dest.startswith("trainer.")]
    return [*dict.fromkeys(keys), "trainer"]


def _wanted(key: str, parser) -> str:
    from swinzoo.train.trainer_options import describe_type

    action = next((a for a in parser._actions if a.dest == key), None)
    kind = getattr(action, "_typehint", None) or getattr(action, "type", None)
    return "expected " + describe_type(kind) if kind is not None else "invalid value"


def add_recipe_overrides(group) -> None:
    """`--recipe.KEY VALUE`, which `normalise_argv` turns into `--recipe_overrides.KEY VALUE`: jsonargparse would
    make it the whole --recipe, dropping the recipe named or chosen."""
    from typing import Any

    group.add_argument("--recipe_overrides", type=dict[str, Any] | None, metavar="{KEY: VALUE}",
                       help="recipe keys set over the recipe, named or chosen (--recipe.KEY VALUE sets one, e.g. "
                       "--recipe.base_lr 1e-3)")


def add_reading_arguments(group) -> None:
    """How SRC is read, as every verb reading a model reads it (`swinzoo.commands.add_reading_flags`)."""
    from jsonargparse import ActionYesNo

    group.add_argument("--from-format", dest="from_format", type=Literal[FORMAT_CHOICES], default="auto",
                       help="format of SRC")
    group.add_argument("--arch", type=str | None, metavar="NAME",
                       help="zoo name giving the source architecture where the file cannot")
    group.add_argument("--trust-checkpoint", dest="trust_checkpoint", action=ActionYesNo(no_prefix="no-"),
                       default=False, help=TRUST_HELP)
    group.add_argument("--ema", action=ActionYesNo(no_prefix="no-"), default=None, help=EMA_HELP)


def add_schedule_arguments(group, max_steps_help: str, seed_help: str) -> None:
    """The run-length and batch flags `finetune` and `pretrain` share (their help differs where their runs do)."""
    group.add_argument("--epochs", type=int | None, help="epochs (default: the recipe's)")
    group.add_argument("--max-steps", dest="max_steps", type=int | None, help=max_steps_help)
    group.add_argument("--batch-size", dest="batch_size", type=int | None,
                       help="images per device per step (default: the recipe's)")
    group.add_argument("--lr", type=float | None, help="peak lr, used as is (default: recipe base_lr x total batch "
                       "/ 512)")
    group.add_argument("--seed", type=int | None, help=seed_help)
    group.add_argument("--num-workers", dest="num_workers", type=int | None,
                       help="data loader workers per device (default: half the CPUs shared by the devices, at most 8)")


def add_output_arguments(p, out_default: str, keep_choices: tuple[str, ...] | None = None):
    """The output flags `finetune` and `pretrain` share; `keep_choices`: finetune's --keep (pretrain keeps the last).
    Returns the group, for a command's own flags."""
    output = p.add_argument_group("output")
    output.add_argument("--out", type=str | None, help=f"output folder (default: {out_default})")
    output.add_argument("--resume", type=str | None, metavar="OUT", help="continue the run in OUT from OUT/last.ckpt")
    if keep_choices:
        output.add_argument("--keep", type=Literal[keep_choices], default=keep_choices[0],
                            help="weights in OUT/model.safetensors: the best on val/top1, or the last step's")
    output.add_argument("--ckpt-every", dest="ckpt_every", type=int | None,
                        help="also write OUT/last.ckpt every N optimizer steps (it is written after every validation, "
                             "epoch and the last step anyway)")
    output.add_argument("--save-dtype", dest="save_dtype", type=Literal[SAVE_DTYPES], default="float32",
                        help="dtype of the weights in OUT/model.safetensors")
    output.add_argument("--logger", type=Literal[LOGGER_CHOICES], default="csv",
                        help="where metrics go besides OUT/logs/metrics.csv (tensorboard, wandb: their packages)")
    return output


def add_hardware_arguments(p) -> None:
    """The Lightning hardware flags `finetune` and `pretrain` share."""
    hardware = p.add_argument_group("hardware (Lightning)")
    hardware.add_argument("--devices", type=int | str, default="auto",
                          help="Lightning devices: a count, a list like 0,1, or auto")
    hardware.add_argument("--accelerator", type=str, default="auto", help="cpu, gpu, ...")
    hardware.add_argument("--strategy", type=str, default="auto",
                          help="ddp, fsdp, deepspeed, ... (not the spawning ones: ddp_spawn, ddp_fork, ddp_notebook)")
    hardware.add_argument("--num-nodes", dest="num_nodes", type=int, default=1,
                          help="machines, each running --devices processes")
    hardware.add_argument("--precision", type=str | None,
                          help="32-true, 16-mixed, bf16-mixed, ... (default: the recipe's)")


def add_trainer_group(p, with_trainer: bool, summary: str = TRAINER_HELP) -> None:
    """`--trainer.NAME`: every `lightning.Trainer` argument, typed (imports Lightning), or without `with_trainer`
    only `summary` in the help, which must stay fast."""
    if with_trainer:
        from swinzoo.train.trainer_options import add_trainer_arguments

        add_trainer_arguments(p)
    else:
        group = p.add_argument_group("any lightning.Trainer argument", summary)
        group.add_argument("--trainer.NAME", dest="trainer_summary", metavar="VALUE", help="see above")


def parse_run_options(argv: list[str], make_parser, verb: str, options_class):
    """argv (after `verb`) -> `options_class` from the jsonargparse parser `make_parser(with_trainer)` builds, or an
    exit code when help or the config was printed (shared by `finetune` and `pretrain`)."""
    command = shlex.join(["swinzoo", verb, *argv])  # what run.json records: the words given, quoted for a shell
    argv = normalise_argv(argv)
    if not any(a in HELP_FLAGS for a in argv):
        check_config_files(argv, verb)
    parser = make_parser(with_trainer=not any(a in HELP_FLAGS for a in argv))
    argv, print_flags = print_request(argv, verb)
    try:
        cfg = parser.parse_args(argv)
        given = parser.parse_args(argv, defaults=False)  # what the command line and --config files set
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except argparse.ArgumentError as e:
        text = explain(e, parser).replace("--recipe_overrides.", "--recipe.")  # as the user spelt it
        raise SwinzooError(f"swinzoo {verb}: {text.replace('--recipe_overrides', '--recipe.KEY')}") from None
    if print_flags is not None:
        from swinzoo.train.recipes import split_recipe

        split_recipe(cfg.recipe, cfg.recipe_overrides)  # the keys a run would refuse: a printed config replays it
        sys.stdout.write(printed_config(parser, cfg, given, print_flags))
        return 0
    return options_from(cfg.as_dict(), given_trainer(given, parser), options_class, command)


CONFIG_FIX = "give a YAML mapping of keys (from --print-config, or a run's OUT/config.yaml)"


def check_config_files(argv: list[str], verb: str = "finetune") -> None:
    """Each `--config PATH` naming a file or folder read as jsonargparse will, with one line naming the file and
    what is wrong: jsonargparse reports a folder as `--config='?'` and an empty file, a YAML list or plain text as
    `Unexpected config: ...`, none of which names the file. A path that does not exist is left to jsonargparse,
    which also takes the config inline (`--config '{res: 96}'`) and names a missing file itself."""
    import yaml

    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    values += [a[len("--config="):] for a in argv if a.startswith("--config=")]
    for value in values:
        path = Path(value)
        if not path.exists():
            continue
        where = f"swinzoo {verb}: --config {value}"
        if path.is_dir():
            inside = path / CONFIG_FILE
            hint = f"did you mean --config {inside}?" if inside.is_file() else CONFIG_FIX
            raise SwinzooError(f"{where}: a folder, not a YAML file; {hint}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise SwinzooError(f"{where}: not a text file; {CONFIG_FIX}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise SwinzooError(f"{where}: not valid YAML{at} ({problem}); fix the file") from None
        if data is None:
            raise SwinzooError(f"{where}: the file is empty; {CONFIG_FIX}")
        if not isinstance(data, dict):
            kind = ("a list" if isinstance(data, list) else "plain text" if isinstance(data, str)
                    else f"a single value ({data!r})")
            raise SwinzooError(f"{where}: holds {kind}, not a mapping of keys; {CONFIG_FIX}")


def options_from(values: dict, trainer: dict, options_class=None, command: str = ""):
    """Parsed values -> `options_class` (default FinetuneOptions) recording `command`: `from` is `source`, and the
    Trainer arguments are `trainer`, the ones given (see `run_config.given_trainer`), not the parser's defaults."""
    if options_class is None:
        from swinzoo.train.options import FinetuneOptions as options_class

    values.pop("trainer", None)
    values["source"] = values.pop("from")
    for key in ("config", "__path__", "print_config"):
        values.pop(key, None)
    return options_class(**values, trainer=trainer, command=command)


