"""Every value a fine-tuning run is given, checked before anything is written: flags and `swinzoo.finetune`
arguments (`validate_options`), `--trainer` options (through `trainer_options`), and OUT/run.json (`read_plan`). Each
problem is one `SwinzooError` line naming the value and the fix."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import re
from dataclasses import MISSING, fields
from pathlib import Path

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError
from swinzoo.hardware import trains_on_cuda
from swinzoo.io import read_small_text
from swinzoo.train.folder import check_out, is_rank_zero
from swinzoo.train.options import KEEP_CHOICES, LOGGER_CHOICES, SAVE_DTYPES, FinetuneOptions, Plan
from swinzoo.train.recipes import MAX_SEED, PRECISIONS, check_precision_package
from swinzoo.train.trainer_options import check_step_bound, check_trainer_options


# ---------------------------------------------------------------------------------------------- value checks
def check_whole(value, minimum: int, label: str, meaning: str = "", maximum: int | None = None) -> None:
    """A one-line error naming `label` unless `value` is an int (not a bool) in [minimum, maximum]; what it counts
    (`meaning`) and, for a value of another type, that type in brackets."""
    wrong_type = isinstance(value, bool) or not isinstance(value, int)
    if wrong_type or value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        why = "; ".join(filter(None, (meaning, f"a {type(value).__name__} was given" if wrong_type else "")))
        raise SwinzooError(f"{label}: must be a whole number {bound}" + (f" ({why})" if why else ""))


DEVICE_LIST = re.compile(r"\s*\d+\s*(,\s*\d+\s*)*,?\s*")


def max_processes() -> int:
    """The most processes a run may start per device or per node (data loader workers, CPU devices): 4 per CPU, at
    least 32. More only slow each other down, and a slip such as --num-workers 10000 would start processes until
    the machine runs out of memory."""
    return max(32, 4 * (os.cpu_count() or 1))


def check_devices(devices, label: str) -> None:
    """Lightning's devices: "auto", N >= 1, -1 (all), or device indices ("0,1", "0," or a list)."""
    fix = ("give auto, a count >= 1, -1 for all, or device indices such as 0,1 (a trailing comma, 0, picks "
           "device 0 alone)")
    if isinstance(devices, str) and re.fullmatch(r"\s*-?\d+\s*", devices):
        devices = int(devices)
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > max_processes():
        # on the CPU Lightning starts one process per device, however many are asked for
        raise SwinzooError(f"{label}: more processes than this machine can run ({os.cpu_count()} CPUs, one process "
                           f"per device); give at most {max_processes()}")
    if isinstance(devices, (list, tuple)):
        if devices and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices):
            return
    elif isinstance(devices, int) and not isinstance(devices, bool):
        if devices >= 1 or devices == -1:
            return
    elif isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            return
        if "," in text and DEVICE_LIST.fullmatch(text):
            return
    raise SwinzooError(f"{label}: not a device count or list; {fix}")


def accelerator_available(name: str) -> bool:
    from lightning.pytorch.accelerators import AcceleratorRegistry, CUDAAccelerator, MPSAccelerator

    if name == "gpu":
        return CUDAAccelerator.is_available() or MPSAccelerator.is_available()
    return AcceleratorRegistry[name]["accelerator"].is_available()


def check_accelerator(accelerator, label: str) -> None:
    from lightning.pytorch.accelerators import AcceleratorRegistry

    if not isinstance(accelerator, str):
        return  # an Accelerator object, from Python
    names = ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]
    if accelerator not in names:
        raise SwinzooError(f"{label}: not an accelerator; valid: {', '.join(names)}")
    if accelerator != "auto" and not accelerator_available(accelerator):
        raise SwinzooError(f"{label}: no such device on this machine (torch sees none); use --accelerator cpu or "
                           "auto, or run where there is one")


# strategies that start their processes from the calling one (Lightning's multiprocessing launcher)
IN_PROCESS_LAUNCH = ("spawn", "fork", "notebook")


def check_strategy(strategy, label: str) -> None:
    from lightning.pytorch.strategies import StrategyRegistry

    if isinstance(strategy, str) and strategy != "auto" and strategy not in StrategyRegistry:
        raise SwinzooError(f"{label}: not a Lightning strategy; valid: auto, "
                           f"{', '.join(StrategyRegistry.available_strategies())}")
    if isinstance(strategy, str) and any(word in strategy for word in IN_PROCESS_LAUNCH):
        raise SwinzooError(f"{label}: refused, its processes are started from this one and the trained state (step, "
                           "metrics) stays in them, so the run could not write its outputs; use --strategy ddp "
                           "(or fsdp, deepspeed)")


def check_no_forked_devices(trainer, devices) -> None:
    """Several devices in an interactive session (a notebook, IPython): Lightning's strategy "auto" runs them by
    forking this process (ddp_fork, the ddp_notebook strategy refused above), and the fit's state stays in the forks:
    the run would write the untrained weights as its result. A strategy object given from Python may launch so too."""
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    if not isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        return
    raise SwinzooError(f"--devices {devices}: Lightning would run the {trainer.num_devices} devices in processes "
                       "forked or spawned from this one (in a notebook or IPython, strategy auto is ddp_notebook), "
                       "and the trained state would stay in them, so the run could not write its outputs; use "
                       "devices=1 here, or run the command from a shell (`!swinzoo finetune ...` in a notebook "
                       "cell, or `!swinzoo pretrain ...`) for several devices")


def check_launcher(num_nodes: int) -> None:
    """More than one node needs the command started on every node, by a launcher Lightning recognises (SLURM,
    torchrun, LSF, MPI) or by hand with MASTER_ADDR, MASTER_PORT and NODE_RANK set; without one, rank 0 would wait
    for the other nodes until the rendezvous times out (30 minutes)."""
    if num_nodes <= 1 or os.environ.get("MASTER_ADDR"):
        return
    from lightning.fabric.plugins.environments import (
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    if not any(env.detect() for env in (SLURMEnvironment, TorchElasticEnvironment, LSFEnvironment, MPIEnvironment)):
        raise SwinzooError(f"--num-nodes {num_nodes}: no multi-node launcher found (SLURM, torchrun, LSF, MPI); start "
                           "the command on every node with one, or by hand with MASTER_ADDR, MASTER_PORT and "
                           "NODE_RANK set on each")


def check_values(values: dict, label) -> None:
    """Range checks on the run settings in `values` (name -> value, None = not given); `label(name, value)` names
    a bad one in the error (a flag for options, a key of run.json on --resume)."""
    wholes = {"res": (1, "target resolution in pixels"), "window": (1, "target window size"),
              "epochs": (1, "training epochs"), "max_steps": (1, "optimizer steps"),
              "batch_size": (1, "images per device per step"), "num_nodes": (1, "machines"),
              "num_workers": (0, "data loader processes per device; 0 loads in the main process"),
              "ckpt_every": (1, "optimizer steps between checkpoints")}
    for name, (minimum, meaning) in wholes.items():
        if values.get(name) is not None:
            check_whole(values[name], minimum, label(name, values[name]), meaning,
                        max_processes() if name == "num_workers" else None)
    if values.get("seed") is not None:
        check_whole(values["seed"], 0, label("seed", values["seed"]), "random seed", MAX_SEED)
    lr = values.get("lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr)
                           or lr <= 0):
        raise SwinzooError(f"{label('lr', lr)}: must be a positive number (the peak learning rate, e.g. 1e-4)")
    precision = values.get("precision")
    if precision is not None and str(precision) not in PRECISIONS:
        # eval, predict and bench say fp32 / fp16 for their autocast; Lightning's names differ
        meant = {"fp32": "32-true", "fp16": "16-mixed"}.get(str(precision))
        hint = f" did you mean {meant}?" if meant else ""
        raise SwinzooError(f"{label('precision', precision)}: not a precision;{hint} valid: {', '.join(PRECISIONS)}")
    if precision is not None:
        check_precision_package(precision, label("precision", precision))
    for name, choices, what in (("save_dtype", SAVE_DTYPES, "not a dtype"), ("keep", KEEP_CHOICES, "not a choice"),
                                ("logger", LOGGER_CHOICES, "not a logger")):
        if values.get(name) is not None and values[name] not in choices:
            raise SwinzooError(f"{label(name, values[name])}: {what}; valid: {', '.join(choices)}")
    if "devices" in values:
        check_devices(values["devices"], label("devices", values["devices"]))
    if "accelerator" in values:
        check_accelerator(values["accelerator"], label("accelerator", values["accelerator"]))
    if "strategy" in values:
        check_strategy(values["strategy"], label("strategy", values["strategy"]))


def flag_name(field: str) -> str:
    """The command-line flag of an options field (`source` is `--from`)."""
    if field == "recipe_overrides":
        return "--recipe.KEY"
    return "--from" if field == "source" else f"--{field.replace('_', '-')}"


def flag_label(name: str, value) -> str:
    return f"{flag_name(name)} {value}"


def keyword_label(name: str, value) -> str:
    return f"{name}={value!r}"


def value_label(args):
    """How a bad value of `args` is named: as its flag on the command line, as keyword=repr from Python, where
    `--max-steps 3` for max_steps='3' would name a valid-looking value (`options_record` writes `swinzoo.VERB(`
    as the command)."""
    return keyword_label if args.command.startswith("swinzoo.") else flag_label


def check_logger(name: str) -> None:
    """--logger NAME needs its package (Lightning imports it only when the logger is made, after the checks)."""
    packages = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}.get(name, ())
    if packages and not any(importlib.util.find_spec(p) for p in packages):
        raise SwinzooError(f"--logger {name} needs the {packages[0]} package: pip install {packages[0]} (or use "
                           "--logger csv)")


def validate_options(args: FinetuneOptions) -> FinetuneOptions:
    """Every value of `args` checked before anything is read or written (what the CLI and `swinzoo.finetune` get
    alike): counts and sizes, lr, precision, devices/accelerator (present on this machine)/strategy/nodes, the
    Trainer options, and --out (not a file, empty, writable). Returns `args` with its Trainer options normalised
    (see `check_trainer_options`)."""
    names = ("res", "window", "epochs", "max_steps", "batch_size", "lr", "devices", "accelerator", "strategy",
             "num_nodes", "precision", "num_workers", "ckpt_every", "seed", "save_dtype", "keep", "logger")
    check_run_values(args, names)
    return with_checked_run_options(args)


def check_run_values(args, names: tuple[str, ...]) -> None:
    """The value checks `finetune` and `pretrain` share: the fields `names` by type and range, epochs or
    max_steps, and the recipe's kind."""
    check_values({n: getattr(args, n) for n in names}, value_label(args))
    for name in ("source", "data", "out", "resume"):
        if isinstance(getattr(args, name), str) and not getattr(args, name).strip():
            # a shell variable that was unset: else the run took a default (runs/..., the source's data) instead
            raise SwinzooError(f"{flag_name(name) if value_label(args) is flag_label else name + '='} is empty; give "
                               "a path (or leave it out)")
    if args.epochs is not None and args.max_steps is not None:
        raise SwinzooError("give --epochs or --max-steps (epochs= or max_steps=), not both")
    if args.recipe is not None and not isinstance(args.recipe, (str, dict)):
        raise SwinzooError(f"recipe={args.recipe!r}: give a packaged recipe name, a YAML path or a mapping of recipe "
                           "keys")
    if args.recipe_overrides is not None and not isinstance(args.recipe_overrides, dict):
        raise SwinzooError(f"recipe_overrides={args.recipe_overrides!r}: give a mapping of recipe keys")


def with_checked_run_options(args):
    """The checks `finetune` and `pretrain` share last: Trainer options (returned normalised), the logger's
    package, and --out (not a file, empty, writable; rank zero only)."""
    trainer = check_trainer_options(args.trainer)
    if args.max_steps is not None:
        check_step_bound(trainer)
    check_logger(args.logger)
    if not args.resume and args.out and is_rank_zero():
        check_out(Path(args.out))
    return dataclasses.replace(args, trainer=trainer)


# ------------------------------------------------------------------------------------------------- OUT/run.json

PLAN_TYPES = {"out": str, "source": (str, type(None)), "config": dict, "recipe": dict, "data": str,
              "devices": (str, int, list), "accelerator": str, "strategy": str, "num_nodes": int,
              "lr": (int, float, type(None)), "num_workers": (int, type(None)), "ckpt_every": (int, type(None)),
              "trainer": dict, "provenance": dict, "command": str, "save_dtype": str, "keep": str, "logger": str,
              "data_options": dict}


def read_plan(run_file: Path) -> Plan:
    """OUT/run.json -> Plan, every key known and of its type, the values in range; one-line errors."""
    try:
        data = json.loads(read_small_text(run_file))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise SwinzooError(f"{run_file} is not valid JSON ({str(e).splitlines()[0]}); restore it, or start a new "
                           "run with another --out") from None
    keys = [f.name for f in fields(Plan)]
    if not isinstance(data, dict):
        raise SwinzooError(f"{run_file} must hold a JSON object with the keys {', '.join(keys)}")
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise SwinzooError(f"{run_file}: unknown key {', '.join(map(repr, unknown))} (written by another version? "
                           f"remove it); valid keys: {', '.join(keys)}")
    missing = [f.name for f in fields(Plan)
               if f.default is MISSING and f.default_factory is MISSING and f.name not in data]
    if missing:
        raise SwinzooError(f"{run_file}: missing {', '.join(map(repr, missing))}; restore the file, or start a new "
                           "run with another --out")
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, PLAN_TYPES[key]):
            raise SwinzooError(f"{run_file}: {key}={value!r} has the wrong type; restore the file, or start a new "
                               "run with another --out")
    plan = Plan(**as_it_ran(data))
    check_values({k: getattr(plan, k) for k in ("devices", "accelerator", "strategy", "num_nodes", "lr",
                                                  "num_workers", "ckpt_every", "save_dtype", "keep", "logger")},
                 lambda name, value: f"{run_file}: {name}={value!r}")
    try:
        SwinConfig.from_dict(plan.config)
    except Exception as e:
        raise SwinzooError(f"{run_file}: config is not a valid model config ({str(e).strip().splitlines()[0]})"
                           ) from None
    return plan


def as_it_ran(data: dict) -> dict:
    """A run.json from before --keep (swinzoo of 2026-12-02 and earlier) with the settings that run trained under:
    its model.safetensors held the last weights, and its precision 'auto' was fp32 on every CPU (bf16 autocast on
    CPUs with native bf16 matmul came after). Today's defaults would resume it in bf16 keeping the best weights."""
    if "keep" in data:
        return data
    data = {**data, "keep": "last"}
    # on CUDA 'auto' was and is fp16 AMP
    if data["recipe"].get("precision", "auto") == "auto" and not trains_on_cuda(data.get("accelerator", "auto")):
        data["recipe"] = {**data["recipe"], "precision": "32-true"}
    return data


def check_finite(state_dict: dict, what: str, fix: str, problem: str = "are not finite") -> None:
    """A run whose weights hold NaN or inf (fp16 without loss scaling, too high an lr) ends in an error rather
    than in a model that predicts one class for everything."""
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise SwinzooError(f"{what} {problem} ({bad[0]}{more}); {fix}")


def weights_to_save(weights: dict, save_dtype: str, what: str) -> dict:
    """A model's state dict `weights` in `save_dtype` for the run's model.safetensors, or a one-line error: NaN or
    inf weights (`what` names them: "training diverged: the last weights (step 150)"), or weights that overflow the
    dtype."""
    import torch

    check_finite(weights, what, "nothing written; train again with --precision 32 or bf16-mixed, or a lower --lr")
    saved = {k: v.detach().to(getattr(torch, save_dtype)) for k, v in weights.items()}
    check_finite(saved, f"--save-dtype {save_dtype}: the weights", "nothing written; use --save-dtype float32",
                 "do not fit that dtype")
    return saved
