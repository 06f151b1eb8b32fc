"""Fine-tuning and SimMIM pretraining recipes: typed hyper-parameters, read from the commented YAML files in
`recipes/`.

A recipe file sets any subset of the `Recipe` fields; the rest keep the defaults below, which are the official
fine-tuning defaults (`config.py` of the official code plus the 224->384 fine-tune). Learning rates are per 512
images, as in the official configs: the run scales them by its total batch (batch x devices x nodes x accumulation).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import typing
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path

import yaml

from swinzoo.errors import SwinzooError

RECIPES_PACKAGE = "swinzoo.recipes"  # the top-level `recipes/` folder, installed under the package


@dataclass
class Recipe:
    """Every knob of a fine-tuning run. Field comments say what the official code does."""

    name: str = "custom"
    description: str = ""
    # --- schedule (official: 30 epochs, 5 of linear warmup, cosine per optimizer step)
    epochs: int = 30
    max_steps: int | None = None  # when set, the run stops after this many optimizer steps instead
    warmup_epochs: float = 5.0  # warmup is this fraction (warmup_epochs / epochs) of all optimizer steps
    batch_size: int = 64  # per device
    accumulate_grad_batches: int = 1
    official_total_batch: int | None = None  # what the official run used (informative; the lr follows yours)
    base_lr: float = 2e-5  # per 512 images
    warmup_lr: float = 2e-8  # per 512 images
    min_lr: float = 2e-7  # per 512 images
    weight_decay: float = 1e-8
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    layer_decay: float = 1.0  # < 1: SimMIM layer-wise lr decay
    clip_grad: float | None = 5.0
    # --- regularisation and augmentation (official defaults)
    drop_path_rate: float = 0.2
    label_smoothing: float = 0.1
    mixup: float = 0.8  # Beta(alpha) for MixUp; 0 disables
    cutmix: float = 1.0  # Beta(alpha) for CutMix; 0 disables (with both on, each batch picks one)
    rand_augment: int | None = 9  # RandAugment magnitude of 10, timm's rand-m9-mstd0.5-inc1 (`augment`); null: off
    random_erasing: float = 0.25
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range
    hflip: float = 0.5  # horizontal flip probability (0 when a flip changes the class, as in `shapes`)
    test_crop: bool | None = None  # eval: resize to res/0.875 + center crop; None = crop below 384 px (official)
    ema_decay: float | None = None  # the official code has no EMA; set e.g. 0.9998 to average weights
    grad_checkpointing: bool = False
    # --- SimMIM pretraining (`swinzoo pretrain`; fine-tunes ignore these)
    mask_patch_size: int = 32  # official DATA.MASK_PATCH_SIZE: side of one mask unit in pixels
    mask_ratio: float = 0.6  # official DATA.MASK_RATIO: ceil(ratio x mask units) of each image are masked
    norm_targets: bool = False  # official MODEL.SIMMIM.NORM_TARGET (on for SwinV2-B): L1 on locally normalised pixels
    # --- target and run
    res: int | None = None
    window: int | None = None
    data: str | None = None
    precision: str = "auto"  # auto: 16-mixed on CUDA (official AMP); CPU: bf16-mixed with bf16 matmul, else 32-true
    seed: int = 0
    finetune_recipe: str | None = None  # the recipe later fine-tunes of a model trained with this one default to
    task: str | None = None  # "finetune" or "pretrain": the command the recipe is for (None: either)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"], d["crop_scale"] = list(self.betas), list(self.crop_scale)
        return d

    def replace(self, **changes) -> Recipe:
        return recipe_from_dict({**self.to_dict(), **changes}, self.name)

    @property
    def warmup_fraction(self) -> float:
        return min(1.0, self.warmup_epochs / self.epochs) if self.epochs > 0 else 0.0


def warmup_note(recipe: Recipe) -> str | None:
    """A warning for a run of epochs that is warmup from start to end (the lr only rises), else None. The official
    schedule counts warmup in epochs too, so fewer epochs than warmup_epochs is no decay at all."""
    if recipe.max_steps is not None or not 0 < recipe.epochs <= recipe.warmup_epochs:
        return None
    return (f"warmup covers all {recipe.epochs} epochs (the recipe warms up for {recipe.warmup_epochs:g}): the lr "
            f"only rises; give --epochs above {recipe.warmup_epochs:g}, or --max-steps in place of --epochs")


def valid_keys() -> list[str]:
    return [f.name for f in fields(Recipe)]


def _coerce(name: str, kind, value, source: str):
    """Cast a YAML value to the field type (YAML reads `2e-5` as a string); one-line error otherwise."""
    if value is None:
        if type(None) in typing.get_args(kind):
            return None
        raise SwinzooError(f"{source}: {name} cannot be null")
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    origin = typing.get_origin(kind)
    try:
        if origin is tuple:
            items = list(value)
            if len(items) != len(typing.get_args(kind)):
                raise ValueError(f"needs {len(typing.get_args(kind))} values")
            return tuple(float(v) for v in items)
        target = args[0] if args else kind
        if target is bool:
            if not isinstance(value, bool):
                raise ValueError("needs true or false")
            return value
        if target is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError("needs an integer")
            return int(float(value))
        return target(value)
    except (TypeError, ValueError) as e:
        raise SwinzooError(f"{source}: {name}={value!r} is invalid ({e})") from None


def recipe_from_dict(d: dict, source: str = "recipe") -> Recipe:
    if not isinstance(d, dict):
        raise SwinzooError(f"{source} must be a YAML mapping of recipe keys; valid keys: {', '.join(valid_keys())}")
    unknown = sorted(set(d) - set(valid_keys()))
    if unknown:
        raise SwinzooError(f"{source}: unknown recipe key {', '.join(map(repr, unknown))}; valid keys: "
                           f"{', '.join(valid_keys())}")
    hints = typing.get_type_hints(Recipe)
    recipe = Recipe(**{k: _coerce(k, hints[k], v, source) for k, v in d.items()})
    if recipe.epochs < 1 and recipe.max_steps is None:
        raise SwinzooError(f"{source}: epochs must be >= 1 (or give max_steps)")
    check_recipe(recipe, source)
    return recipe


def split_recipe(recipe: str | dict | None, overrides: dict | None) -> tuple[str | dict | None, dict]:
    """What a run's `recipe` and `recipe_overrides` (`--recipe.KEY VALUE`) ask for: the recipe named (a packaged
    name, a YAML path, or a mapping of every key: what a run's config.yaml holds), None when the run chooses it, and
    the keys to set over it, checked and typed. A mapping of some keys changes the recipe the run would use without
    it: filling the rest from Recipe's defaults would swap a nano recipe for a 30-epoch ImageNet schedule."""
    if isinstance(recipe, dict) and not set(valid_keys()) <= set(recipe):
        recipe, overrides = None, {**recipe, **(overrides or {})}
    changes = dict(overrides or {})
    unknown = sorted(set(changes) - set(valid_keys()))
    if unknown:
        raise SwinzooError(f"--recipe.{unknown[0]}: unknown recipe key {unknown[0]!r}; valid keys: "
                           f"{', '.join(valid_keys())}")
    hints = typing.get_type_hints(Recipe)
    typed = {k: _coerce(k, hints[k], v, f"--recipe.{k}") for k, v in changes.items()}
    # as to_dict writes them: run.json and config.yaml record the changes
    return recipe, {k: list(v) if isinstance(v, tuple) else v for k, v in typed.items()}


def changes_text(changes: dict) -> str:
    """How the run log shows the keys set over a recipe ("" without any)."""
    shown = ", ".join(f"{k} {v}" for k, v in changes.items())
    return f" (with {shown} set over it)" if shown else ""


# Lightning's precision names (Trainer(precision=...)) plus swinzoo's "auto"
PRECISIONS = ("auto", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", "64", "32", "16", "bf16")
MAX_SEED = 2**32 - 1  # numpy's seed range, which Lightning's seed_everything enforces

TASKS = (None, "finetune", "pretrain")
COMMANDS = {"finetune": ("fine-tuning", "swinzoo finetune"), "pretrain": ("pretraining", "swinzoo pretrain")}


def check_task(recipe: Recipe, command: str, default: str) -> None:
    """A recipe written for the other command is refused (`default`: the recipe this command uses unnamed)."""
    if recipe.task not in (None, command):
        kind, user = COMMANDS[recipe.task]
        raise SwinzooError(f"--recipe {recipe.name} is a {kind} recipe (for `{user}`); give a {COMMANDS[command][0]} "
                           f"recipe such as {default}, or leave --recipe out (`swinzoo recipes` lists them)")


# field -> (lowest, highest, lowest included, highest included, what the value means); None = no bound
RANGES = {
    "epochs": (0, None, True, True, "training epochs"),
    "max_steps": (1, None, True, True, "optimizer steps; null to train for `epochs`"),
    "warmup_epochs": (0, None, True, True, "epochs of linear warmup"),
    "batch_size": (1, None, True, True, "images per device per step"),
    "accumulate_grad_batches": (1, None, True, True, "batches per optimizer step"),
    "official_total_batch": (1, None, True, True, "images per update in the official run"),
    "base_lr": (0, None, False, True, "peak lr per 512 images"),
    "warmup_lr": (0, None, True, True, "warmup start lr per 512 images"),
    "min_lr": (0, None, True, True, "final lr per 512 images"),
    "weight_decay": (0, None, True, True, "AdamW weight decay"),
    "eps": (0, None, False, True, "AdamW eps"),
    "layer_decay": (0, 1, False, True, "layer-wise lr decay; 1 disables"),
    "clip_grad": (0, None, True, True, "gradient norm clip; null or 0 disables"),
    "drop_path_rate": (0, 1, True, False, "stochastic depth rate"),
    "label_smoothing": (0, 1, True, False, "label smoothing; 0 disables"),
    "mixup": (0, None, True, True, "MixUp Beta alpha; 0 disables"),
    "cutmix": (0, None, True, True, "CutMix Beta alpha; 0 disables"),
    "rand_augment": (0, 10, True, True, "RandAugment magnitude of 10 (timm's rand-mM-mstd0.5-inc1); null disables"),
    "random_erasing": (0, 1, True, True, "RandomErasing probability (timm's 'pixel' mode)"),
    "hflip": (0, 1, True, True, "horizontal flip probability"),
    "ema_decay": (0, 1, True, False, "EMA decay; null or 0 disables"),
    "mask_patch_size": (1, None, True, True, "SimMIM mask unit side in pixels"),
    "mask_ratio": (0, 1, False, True, "share of SimMIM mask units masked"),
    "res": (1, None, True, True, "target resolution in pixels"),
    "window": (1, None, True, True, "target window size"),
    "seed": (0, MAX_SEED, True, True, "random seed"),
}


def _in_range(value: float, low, high, low_in: bool, high_in: bool) -> bool:
    if isinstance(value, float) and not math.isfinite(value):  # NaN, and inf, which no field means (null does)
        return False
    if low is not None and (value < low or (value == low and not low_in)):
        return False
    return not (high is not None and (value > high or (value == high and not high_in)))


def _range_text(low, high, low_in: bool, high_in: bool) -> str:
    if high is None:
        return f"{'>=' if low_in else '>'} {low}"
    return f"in {'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"


def check_recipe(recipe: Recipe, source: str = "recipe") -> None:
    """Range checks on every numeric field (and the precision name): one-line error naming the key and its range."""
    for name, (low, high, low_in, high_in, meaning) in RANGES.items():
        value = getattr(recipe, name)
        if value is not None and not _in_range(value, low, high, low_in, high_in):
            finite = "a finite number " if value in (math.inf, -math.inf) else ""
            raise SwinzooError(f"{source}: {name}={value!r} is out of range; it must be "
                               f"{finite}{_range_text(low, high, low_in, high_in)} ({meaning})")
    for name, pair in (("betas", recipe.betas), ("crop_scale", recipe.crop_scale)):
        low_in, high_in = (True, False) if name == "betas" else (False, True)
        if not all(_in_range(v, 0, 1, low_in, high_in) for v in pair):
            raise SwinzooError(f"{source}: {name}={list(pair)} is out of range; both values must be "
                               f"{_range_text(0, 1, low_in, high_in)}")
    if recipe.crop_scale[0] > recipe.crop_scale[1]:
        raise SwinzooError(f"{source}: crop_scale={list(recipe.crop_scale)} must be [low, high] with low <= high")
    if recipe.task not in TASKS:
        raise SwinzooError(f"{source}: task={recipe.task!r} is not one of {', '.join(map(str, TASKS))}")
    if recipe.precision not in PRECISIONS:
        raise SwinzooError(f"{source}: precision={recipe.precision!r} is not a precision; valid: "
                           f"{', '.join(PRECISIONS)}")
    check_precision_package(recipe.precision, f"{source}: precision={recipe.precision!r}")


def check_precision_package(precision, label: str) -> None:
    """Lightning's transformer-engine precisions import their package only when the Trainer is made, after the run
    has started: a ModuleNotFoundError there."""
    if str(precision).startswith("transformer-engine") and importlib.util.find_spec("transformer_engine") is None:
        raise SwinzooError(f"{label} needs the transformer_engine package (pip install transformer-engine) and a GPU; "
                           "use bf16-mixed, 16-mixed or 32")


def packaged_recipes() -> dict[str, str]:
    """Recipe name -> YAML text of every recipe shipped with swinzoo."""
    root = resources.files(RECIPES_PACKAGE)
    return {p.name[:-5]: p.read_text() for p in root.iterdir() if p.name.endswith(".yaml")}


def load_recipe(name_or_path: str | dict | Recipe) -> Recipe:
    """A packaged recipe by name (`swin_224to384`), a YAML file path, or a mapping of recipe keys (what a run's
    config.yaml holds: the recipe it used, in full); a `Recipe` as it is."""
    if isinstance(name_or_path, Recipe):
        return name_or_path
    if isinstance(name_or_path, dict):
        return recipe_from_dict(dict(name_or_path), "recipe")
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            what = "is a folder, not a YAML file" if path.is_dir() else "does not exist"
            raise SwinzooError(f"recipe file {path} {what}; packaged recipes: "
                               f"{', '.join(sorted(packaged_recipes()))}")
        text, default_name = read_recipe_text(path), path.stem
    else:
        shipped = packaged_recipes()
        if name_or_path not in shipped:
            raise SwinzooError(f"unknown recipe {name_or_path!r}; packaged recipes: {', '.join(sorted(shipped))} "
                               "(or give a .yaml path)")
        text, default_name = shipped[name_or_path], name_or_path
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SwinzooError(f"{name_or_path} is not valid YAML{at} ({problem}); fix the file (`swinzoo recipes NAME` "
                           "prints a packaged recipe to start from)") from None
    if isinstance(data, dict):
        check_not_a_run_file(data, str(name_or_path))
        data.setdefault("name", default_name)
    return recipe_from_dict(data, str(name_or_path))


def read_recipe_text(path: Path) -> str:
    """The text of a recipe file; one line for a file that cannot be one (empty, binary: a model given as --recipe)."""
    fix = "give a YAML file of recipe keys (`swinzoo recipes NAME` prints one) or a packaged recipe name"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SwinzooError(f"recipe file {path} is not a text file (a model or an image?); {fix}") from None
    if not text.strip():
        raise SwinzooError(f"recipe file {path} is empty; {fix}")
    return text


# keys of a run's config.yaml (`--print-config`) or run.json that no recipe has: a file holding them was meant for
# --config, and listing every key it has as unknown would hide that
RUN_FILE_KEYS = ("from", "source", "trainer", "recipe", "out", "resume", "devices", "accelerator", "strategy",
                 "num_nodes", "push_to", "scratch", "arch", "from_format", "provenance")


def check_not_a_run_file(data: dict, source: str) -> None:
    found = [k for k in RUN_FILE_KEYS if k in data]
    if not found:
        return
    keys = ", ".join(found[:3])
    if "provenance" in data:  # run.json: the plan a run wrote, which --config does not read
        folder = Path(source).parent
        raise SwinzooError(f"--recipe {source} is a run's run.json (it has {keys}), not a recipe: replay the run "
                           f"with --config {folder / 'config.yaml'}, or continue it with --resume {folder}")
    raise SwinzooError(f"--recipe {source} is a run config (it has {keys}), not a recipe: give it as --config "
                       f"{source} (its recipe: key is the recipe it runs)")


# (version, source resolution, target resolution) -> the official recipe for that move
OFFICIAL_MOVES = {(1, 224, 384): "swin_224to384", (2, 192, 256): "swinv2_192to256", (2, 192, 384): "swinv2_192to384"}
PLAIN_RECIPE = "finetune"
IMAGENET_22K_CLASSES = 21841


def choose_recipe(version: int, source_res: int, res: int, num_classes: int,
                  source_recipe: str | None = None) -> tuple[str, str]:
    """The recipe a fine-tune uses when none is given, and why: the one the source's own training names, else the
    official recipe of this move (224 -> 384, V2 192 -> 256/384, 22k -> 1k), else a plain fine-tune."""
    if source_recipe:
        return source_recipe, "the fine-tune recipe the source was trained to use"
    official = OFFICIAL_MOVES.get((version, source_res, res))
    if official:
        return official, f"the official V{version} {source_res} -> {res} px fine-tune"
    if version == 1 and num_classes == IMAGENET_22K_CLASSES and source_res == res == 224:
        return "swin_22kto1k", "the official ImageNet-22k -> 1k fine-tune"
    if source_res == res:
        return PLAIN_RECIPE, f"a plain fine-tune at the source's {res} px"
    return PLAIN_RECIPE, f"a plain fine-tune ({source_res} -> {res} px has no official recipe)"


def finetune_recipe(given: str | dict | Recipe | None, changes: dict, version: int, source_res: int,
                    num_classes: int, res: int | None, source_recipe: str | None = None) -> tuple[Recipe, int, str]:
    """(recipe with `changes`, resolution, why) of a fine-tune from a `source_res` px source: a `given` recipe's
    resolution applies unless `res` says otherwise; chosen (`choose_recipe`, the source's class count), the run
    keeps the source's resolution unless `res` or `changes` move it."""
    if given is not None:
        recipe = load_recipe(given).replace(**changes)
        return recipe, res or recipe.res or source_res, "given"
    res = res or changes.get("res") or source_res
    # the source's recipe comes from its file: a packaged name, never a path to read here nor a recipe of its own
    named = source_recipe if isinstance(source_recipe, str) and source_recipe in packaged_recipes() else None
    name, why = choose_recipe(version, source_res, res, num_classes, named)
    if source_recipe and named is None:
        why += (f" (the source names the recipe {str(source_recipe)[:60]!r}, not a packaged one: give it with "
                "--recipe to use it)")
    return load_recipe(name).replace(**changes), res, why


def describe_recipes() -> list[tuple[str, str]]:
    """(name, one-line description) of every packaged recipe, sorted by name."""
    return [(name, load_recipe(name).description) for name in sorted(packaged_recipes())]


__all__ = ["IMAGENET_22K_CLASSES", "OFFICIAL_MOVES", "PLAIN_RECIPE", "PRECISIONS", "Recipe", "check_recipe",
           "changes_text", "choose_recipe", "describe_recipes", "finetune_recipe", "load_recipe", "packaged_recipes",
           "recipe_from_dict", "split_recipe", "valid_keys"]
