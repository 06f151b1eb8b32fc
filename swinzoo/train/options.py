"""What a fine-tuning run is given and records: `FinetuneOptions` (the arguments of `swinzoo.finetune`),
`Plan` (OUT/run.json, read back strictly by `read_plan`) and `FinetuneResult`."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path

from swinzoo.errors import SwinzooError, printable
from swinzoo.run_folder import CONFIG_FILE

OUT_ENV = "_SWINZOO_RUN_OUT"  # swinzoo's own (the leading _): rank zero passes the run folder to its DDP processes
SAVE_DTYPES = ("float32", "float16", "bfloat16")
KEEP_CHOICES = ("best", "last")  # which weights OUT/model.safetensors holds
LOGGER_CHOICES = ("csv", "tensorboard", "wandb")  # csv is always written; the others are added to it


@dataclass
class Plan:
    """Everything a run needs, JSON-serialisable (OUT/run.json)."""

    out: str
    source: str
    config: dict
    recipe: dict
    data: str
    devices: str | int = "auto"
    accelerator: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    lr: float | None = None
    num_workers: int | None = None
    ckpt_every: int | None = None
    trainer: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    command: str = ""
    save_dtype: str = "float32"
    keep: str = "best"
    logger: str = "csv"
    data_options: dict = field(default_factory=dict)


# FinetuneOptions fields that describe the data besides its name (`hf:` datasets only, but for train_fraction and
# split_seed, its seed)
DATA_OPTION_KEYS = ("train_split", "val_split", "val_fraction", "image_column", "label_column", "split_seed",
                    "train_fraction")


@dataclass
class RunOptions:
    """What `finetune` and `pretrain` are both given (see there); each adds its own in a subclass."""

    source: str | None = None
    scratch: bool = False
    res: int | None = None
    window: int | None = None
    data: str | None = None
    train_split: str | None = None
    val_split: str | None = None
    val_fraction: float | None = None
    image_column: str | None = None
    label_column: str | None = None
    split_seed: int | None = None
    recipe: str | dict | None = None
    recipe_overrides: dict | None = None
    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    devices: str | int = "auto"
    accelerator: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str | None = None
    out: str | None = None
    resume: str | None = None
    num_workers: int | None = None
    ckpt_every: int | None = None
    seed: int | None = None
    save_dtype: str = "float32"
    from_format: str = "auto"
    arch: str | None = None
    trust_checkpoint: bool = False
    ema: bool | None = None  # a training checkpoint's EMA weights, or its trained ones; None: the EMA if any
    trainer: dict = field(default_factory=dict)
    logger: str = "csv"
    command: str = ""


@dataclass
class FinetuneOptions(RunOptions):
    """The arguments of `finetune` (see there), one typed record; the CLI fills it from its flags."""

    train_fraction: float | None = None
    push_to: str | None = None
    keep: str = "best"


@dataclass
class FinetuneResult:
    """Where the run wrote its outputs and what it measured (on the global-zero process; None elsewhere)."""

    out: Path
    metrics: dict


def replay_header(plan: Plan, verb: str) -> str:
    """The comment atop a run's config.yaml: what it resolves, and the command that replays it from any folder
    (the config's absolute path, quoted for the shell)."""
    config = printable(shlex.quote(str(Path(plan.out).absolute() / CONFIG_FILE)))
    # printable: a line break in a path would end the comment, and YAML would read the rest
    return (f"# `{printable(plan.command)}`, resolved: the run in {printable(plan.out)}. Replay it with\n"
            f"#   swinzoo {verb} --config {config} --out NEW_FOLDER\n")


def print_plan(console, plan: Plan, module, total_batch: int, recipe, ckpt, step: int | None, *, config: dict,
               extra: tuple[str, ...] = (), recipe_tail: str = "") -> None:
    """The plan a run prints before its first step: resume point, `config`, the `extra` lines, the recipe as
    resolved (`recipe_tail` appended), the warmup note, the output folder."""
    from rich.markup import escape

    from swinzoo.train.recipes import warmup_note

    # paths, names and config strings are text, not markup (`images[v2]` is a folder); `extra` lines are markup
    if ckpt is not None:
        console.print(f"[bold]resuming[/bold] {escape(str(plan.out))} from {escape(ckpt.name)} at global step {step}",
                      highlight=False)
    console.print("[bold]config[/bold] " + escape(json.dumps(config)), soft_wrap=True)
    for line in extra:
        console.print(line, soft_wrap=True)
    console.print(f"[bold]recipe[/bold] {escape(f'{recipe.name}: data {plan.data}')}, "
                  + (f"{recipe.max_steps} steps" if recipe.max_steps else f"{recipe.epochs} epochs")
                  + f", total batch {total_batch}, peak lr {module.peak_lr:.3g} (warmup {module.warmup_lr:.3g}, "
                  f"min {module.min_lr:.3g}), wd {recipe.weight_decay:g}, drop path "
                  f"{plan.config['drop_path_rate']:g}{escape(recipe_tail)}", soft_wrap=True)
    if note := warmup_note(recipe):
        console.print(f"[bold yellow]note[/bold yellow] {note}", soft_wrap=True)
    console.print(f"[bold]out[/bold] {escape(str(plan.out))}", soft_wrap=True, highlight=False)  # a path: no numbers


def is_plain(value) -> bool:
    """Whether `value` is what YAML gives and JSON holds (so run.json and config.yaml can record it); callbacks
    or loggers built in Python are not."""
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


def as_plain(value):
    """jsonargparse values as plain data: it leaves a Namespace inside lists (`--trainer.callbacks+=...`)."""
    if hasattr(value, "as_dict"):
        return as_plain(value.as_dict())
    if isinstance(value, dict):
        return {k: as_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_plain(v) for v in value]
    return value


PATH_OPTIONS = ("data", "out", "resume", "recipe")  # options that may name a file or folder


def options_record(options_class, source: str | None, options: dict, verb: str):
    """`options_class(source=source, **options)` for the library calls `finetune()` / `pretrain()`, an unknown
    keyword named in one line with the valid ones."""
    valid = [f.name for f in fields(options_class) if f.name not in ("source", "command")]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise SwinzooError(f"{verb}(): unknown option {', '.join(unknown)}; valid: {', '.join(valid)}")
    if source is not None and not isinstance(source, (str, os.PathLike)):  # str() of a module: its repr as a path
        raise SwinzooError(f"{verb}(): the source is a {type(source).__name__} object; give one to read: a zoo name, "
                           "file, folder or hf-hub: reference (a model in memory: swinzoo.save_model(model, PATH), "
                           f"then {verb}(PATH, ...))")
    # run.json and config.yaml hold plain strings: YAML cannot represent a Path, and the command shows it as given
    source = os.fspath(source) if source is not None else None
    options = {k: os.fspath(v) if k in PATH_OPTIONS and isinstance(v, os.PathLike) else v for k, v in options.items()}
    # what run.json, config.yaml and a model card record as the command: this call, not the Python script's argv
    shown = [repr(source)] if source is not None else []
    shown += [f"{k}={v!r}" for k, v in options.items() if is_plain(v)]
    trainer = options.get("trainer") or {}
    trainer = dict(trainer) if isinstance(trainer, dict) else trainer  # not a mapping: validate_options says so
    return options_class(source=source, **{**options, "trainer": trainer},
                         command=f"swinzoo.{verb}({', '.join(shown)})")
