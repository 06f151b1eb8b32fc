"""`--trainer` options checked against `lightning.Trainer`'s own signature: every key one it takes and swinzoo does
not set itself, every value of a type it takes (jsonargparse types it, as the CLI's parser does), and the objects
given as class_path/init_args built. Each problem is one `SwinzooError` line naming the key and the fix."""

from __future__ import annotations

import collections.abc
import copy
import difflib
import functools
import inspect
import operator
import re
import types
import typing

from swinzoo.errors import SwinzooError
from swinzoo.train.options import as_plain, is_plain

# Trainer options swinzoo sets itself (or through a named option): refused under `trainer`, with the reason.
# Callbacks and loggers are not here: the user's are added to swinzoo's own.
TRAINER_OWNED = {
    "enable_checkpointing": "swinzoo's LastCheckpoint writes the last.ckpt that --resume needs",
    "plugins": "swinzoo passes its own checkpoint plugin (atomic writes, safe loading of last.ckpt)",
    "devices": "use --devices",
    "accelerator": "use --accelerator",
    "strategy": "use --strategy",
    "num_nodes": "use --num-nodes",
    "precision": "use --precision",
    "max_steps": "use --max-steps",
    "max_epochs": "use --epochs",
    "default_root_dir": "use --out",
}


@functools.lru_cache(maxsize=1)
def trainer_hints() -> dict:
    """`lightning.Trainer.__init__` parameter -> type annotation ({} values when they cannot be resolved)."""
    import lightning as L  # Lightning is imported where a Trainer is looked at: `predict` imports this module

    names = [p for p in inspect.signature(L.Trainer.__init__).parameters if p != "self"]
    try:
        hints = typing.get_type_hints(L.Trainer.__init__)
    except Exception:  # an annotation this Python cannot resolve: check the names only
        hints = {}
    return {n: hints.get(n) for n in names}


@functools.lru_cache(maxsize=1)
def trainer_parser():
    """jsonargparse's view of the Trainer arguments swinzoo does not own (what the CLI parses under `trainer.`):
    it types each value and resolves objects given as class_path/init_args, or by a bare class name."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    add_trainer_arguments(parser)
    return parser


def add_trainer_arguments(parser) -> None:
    """`--trainer.NAME` for every lightning.Trainer argument swinzoo does not own, on a jsonargparse parser."""
    import lightning as L

    counts = counts_first()
    parser.add_class_arguments(L.Trainer, "trainer", instantiate=False, skip=set(TRAINER_OWNED) | set(counts),
                               fail_untyped=False)
    for name, (hint, default) in counts.items():
        parser.add_argument(f"--trainer.{name}", type=hint, default=default,
                            help=f"lightning.Trainer's {name}: a whole number counts batches, a fraction is a share")


def counts_first() -> dict[str, tuple]:
    """The Trainer arguments that take a whole number or a fraction (limit_val_batches: 1 is one batch, 1.0 all of
    them), typed int before float, with their defaults. typing caches `Optional[Union[...]]` by equality, which
    ignores the order, so Lightning's `Union[int, float]` can come back as a `Union[float, int]` made earlier (rich
    makes one), and jsonargparse, trying float first, turns 1 into 1.0. `int | float` is not cached."""
    import lightning as L

    counts = {}
    for name, param in inspect.signature(L.Trainer.__init__).parameters.items():
        members = flat_union(param.annotation)
        if name not in TRAINER_OWNED and int in members and float in members:
            rest = [m for m in members if m not in (int, float)]
            counts[name] = (functools.reduce(operator.or_, [int, float, *rest]), param.default)
    return counts


def flat_union(hint) -> list:
    if typing.get_origin(hint) is typing.Union or isinstance(hint, types.UnionType):
        return [m for arg in typing.get_args(hint) for m in flat_union(arg)]
    return [hint]


def describe_type(hint) -> str:
    """A type annotation in words: `int | float | None` -> "a whole number or a number or null"."""
    kinds, literals, objects, stack = set(), [], [], [hint]
    while stack:
        h = stack.pop()
        origin = typing.get_origin(h)
        if origin is typing.Union or isinstance(h, types.UnionType):
            stack += typing.get_args(h)
        elif origin is typing.Literal:
            literals += typing.get_args(h)
        elif origin in (list, collections.abc.Iterable) and typing.get_args(h) and not all(
                a in (bool, int, float, str) for a in typing.get_args(h)):  # list[Callback], Iterable[Logger]
            objects.append(f"list of {_name(typing.get_args(h)[0])}")
        elif origin in (list, dict, tuple):
            kinds.add(origin)
        elif h in (type(None), bool, int, float, str):
            kinds.add(h)
        else:  # a Logger, Callback, Profiler, timedelta
            objects.append(_name(h))
    words = {type(None): "null", bool: "true/false", int: "a whole number", float: "a number", str: "a string",
             list: "a list", dict: "a mapping", tuple: "a list"}
    parts = [words[k] for k in (bool, int, float, str, list, dict, tuple, type(None)) if k in kinds]
    if literals:
        parts.insert(0, "one of " + ", ".join(map(str, literals)))
    if objects:
        parts.insert(0, f"a {' or a '.join(dict.fromkeys(objects))} (a class name, or class_path/init_args)")
    return " or ".join(parts) or "a value"


def _name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def not_a_mapping(given: str) -> str:
    """The one line for a `trainer` value (YAML key, flag or keyword alike) that is not a mapping, showing it."""
    return (f"trainer: give a mapping of Trainer options (NAME: VALUE, or --trainer.NAME VALUE on the command line), "
            f"not {given}")


def check_trainer_options(options: dict | None, label: str = "--trainer") -> dict:
    """Trainer kwargs given besides the named options: every key a `lightning.Trainer` argument that swinzoo does
    not set itself, every value of a type it takes (jsonargparse checks, as the CLI's parser does). Plain values
    come back normalised (a callback named by its class becomes its full class_path/init_args); objects built in
    Python pass as they are."""
    if options is not None and not isinstance(options, dict):
        raise SwinzooError(not_a_mapping(repr(options)))
    options = dict(options or {})
    hints = trainer_hints()
    for key, value in options.items():
        if key not in hints:
            close = difflib.get_close_matches(key, list(hints), n=1)
            raise SwinzooError(f"{label}.{key}: not a Trainer option; "
                               + (f"did you mean {close[0]}?" if close else f"valid: {', '.join(hints)}"))
        if key in TRAINER_OWNED and not (key == "enable_checkpointing" and value is True):
            raise SwinzooError(f"{label}.{key}={value!r}: refused, {TRAINER_OWNED[key]}")
    options.pop("enable_checkpointing", None)
    plain = {k: v for k, v in options.items() if is_plain(v)}
    if not plain:
        return options
    from jsonargparse import ArgumentError

    parser = trainer_parser()
    for key, value in plain.items():  # one at a time, so the error names the key
        try:
            # a copy: jsonargparse turns the dicts inside a given list into Namespaces in place
            parsed = parser.parse_object({"trainer": {key: copy.deepcopy(value)}}, defaults=False)
        except (ArgumentError, ValueError, TypeError) as e:
            problem = re.search(r"Problem with given class_path '([^']+)':\s*(.+)", str(e))
            why = (f"{problem.group(1)}: {problem.group(2).strip()}" if problem
                   else f"Lightning wants {describe_type(hints[key])}")
            raise SwinzooError(f"{label}.{key}={value!r}: {why}") from None
        if isinstance(value, (dict, list)):  # a class named briefly comes back as its full class_path/init_args
            options[key] = as_plain(parsed.as_dict()["trainer"][key])
        if key in TRAINER_COUNTS and isinstance(value, int) and value < 1:
            raise SwinzooError(f"{label}.{key}={value!r}: must be a whole number >= 1 ({TRAINER_COUNTS[key]})")
        check_batch_share(key, options[key], label)
    return options


# Trainer counts Lightning takes as given and fails on later (a division by zero mid-run)
TRAINER_COUNTS = {"accumulate_grad_batches": "batches per optimizer step",
                  "check_val_every_n_epoch": "epochs between validations"}

# Trainer values that are a whole number of batches or a fraction of them: Lightning divides by 0 mid-run
# (val_check_interval) or trains 0 steps and reports success (limit_train_batches); a negative or a fraction above
# 1 it refuses in words that name neither flag nor fix
BATCH_SHARES = {"val_check_interval": "of an epoch", "limit_train_batches": "of the training batches"}


def check_batch_share(key: str, value, label: str) -> None:
    if key not in BATCH_SHARES or isinstance(value, bool) or not isinstance(value, (int, float)):
        return  # not a number: val_check_interval also takes a time ("00:01:00:00")
    if value > 0 and (isinstance(value, int) or value <= 1 or value % 1 == 0):  # 2.0 is 2 batches to Lightning
        return
    nothing = "it would train nothing; drop it, or " if key == "limit_train_batches" and value == 0 else ""
    raise SwinzooError(f"{label}.{key}={value!r}: {nothing}give a whole number of batches >= 1 or a fraction "
                       f"{BATCH_SHARES[key]} in (0, 1]")


def trainer_objects(options: dict) -> dict:
    """Trainer kwargs with every class_path/init_args value (callbacks, loggers, profilers) built."""
    specs = {k: v for k, v in options.items() if is_plain(v) and _has_class_path(v)}
    if not specs:
        return dict(options)
    parser = trainer_parser()
    built = parser.instantiate(parser.parse_object({"trainer": copy.deepcopy(specs)}, defaults=False))
    return {**options, **{k: built.trainer[k] for k in specs}}


def _has_class_path(value) -> bool:
    if isinstance(value, dict):
        return "class_path" in value
    return isinstance(value, list) and any(_has_class_path(v) for v in value)


def check_step_bound(options: dict, label: str = "--trainer") -> None:
    """A run bound by --max-steps has no max_epochs (Lightning's -1), and StochasticWeightAveraging given its start
    as a share of the epochs (its default, 0.8) fails when training starts, after the run folder is made."""
    from lightning.pytorch.callbacks import StochasticWeightAveraging

    callbacks = trainer_objects({"callbacks": options.get("callbacks")})["callbacks"]
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        start = getattr(callback, "_swa_epoch_start", None)
        if isinstance(callback, StochasticWeightAveraging) and isinstance(start, float):
            raise SwinzooError(f"{label}.callbacks StochasticWeightAveraging: swa_epoch_start={start} is a share of "
                               "the epochs, which a --max-steps run does not set; give the epoch it starts at "
                               "(--trainer.callbacks.swa_epoch_start=1), or --epochs")
