"""One typed config for Swin V1 and V2, with the geometry rules of the official code.

The official code fixes the input resolution at construction: masks, windows and shifts are derived from it.
`SwinConfig` carries that resolution and the helpers below derive, per stage, what the official `BasicLayer`
and `SwinTransformerBlock` derive (token grid, effective window, shift).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from swinzoo.errors import SwinzooError

# The ImageNet statistics every Swin release normalises inputs with (official data/build.py, timm, transformers)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# What `SwinConfig.preprocess` may override; `swinzoo.preprocess` owns the rule and the meaning of each
PREPROCESS_KEYS = ("mean", "std", "interpolation", "crop_pct", "crop_mode")
PREPROCESS_CROP_KEYS = ("crop_pct", "crop_mode")  # chosen per resolution, so stored (and dropped) together
# Ceilings far above every released Swin (at most 50 blocks, windows up to 48, 1536 px), so that a config read from
# someone else's file cannot make swinzoo build modules for minutes, position indices of window^4 entries per block
# or window plans of grid^2 entries per stage (gigabytes) before the weights are checked against it
MAX_BLOCKS = 256
MAX_GRID = 2048  # tokens per side: 8192 px at patch 4
MAX_INDEX_BYTES = 4 * 2**30


@dataclass
class SwinConfig:
    """Architecture and head of a Swin Transformer V1 or V2.

    `window_size` is the configured window; a stage whose token grid is no larger than it uses the grid size as
    its window and no shift (official rule). `pretrained_window_sizes` (V2 only) is the window each stage's
    continuous position bias was trained with; 0 means "this model's own effective window". `preprocess` holds
    only where this model's eval preprocessing differs from the official rule (None: it does not; see
    `swinzoo.preprocess.Preprocess.of`).

    `out_indices` (None for a classifier) makes this a dense-prediction backbone (`models.backbone.SwinBackbone`)
    returning those stages, with the official detection geometry: every stage keeps `window_size` and odd blocks
    always shift; `img_size` is then only the pretraining size its absolute position embedding is stored at.
    """

    version: int = 1
    img_size: int = 224
    patch_size: int = 4
    in_chans: int = 3
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    ape: bool = False
    patch_norm: bool = True
    drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    pretrained_window_sizes: tuple[int, ...] = (0, 0, 0, 0)
    num_classes: int = 1000
    class_names: list[str] | None = field(default=None)
    preprocess: dict | None = field(default=None)
    out_indices: tuple[int, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        self.depths = tuple(int(d) for d in self.depths)
        self.num_heads = tuple(int(h) for h in self.num_heads)
        self.pretrained_window_sizes = tuple(int(w) for w in self.pretrained_window_sizes)
        if self.version not in (1, 2):
            raise SwinzooError(f"version must be 1 or 2, got {self.version}")
        for name in ("img_size", "patch_size", "in_chans", "embed_dim", "window_size"):
            if int(getattr(self, name)) < 1:
                raise SwinzooError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.patch_grid > MAX_GRID:
            raise SwinzooError(f"resolution {self.img_size} px is a {self.patch_grid}x{self.patch_grid} token grid, "
                               f"larger than swinzoo builds (at most {MAX_GRID} tokens per side: "
                               f"{MAX_GRID * self.patch_size} px at patch {self.patch_size}); the config is corrupt, "
                               "or pick a smaller resolution")
        if self.num_classes < 0 or min(self.depths + self.num_heads, default=0) < 1:
            raise SwinzooError(f"num_classes must be >= 0 and every depth and head count >= 1 (got {self.num_classes}, "
                               f"{list(self.depths)}, {list(self.num_heads)})")
        if len(self.depths) != len(self.num_heads):
            raise SwinzooError(f"depths {self.depths} and num_heads {self.num_heads} must have one entry per stage")
        if len(self.pretrained_window_sizes) != len(self.depths):
            raise SwinzooError(
                f"pretrained_window_sizes {self.pretrained_window_sizes} needs one entry per stage ({len(self.depths)})"
            )
        if sum(self.depths) > MAX_BLOCKS:
            raise SwinzooError(f"{sum(self.depths)} blocks in all: more than swinzoo builds (at most {MAX_BLOCKS}; "
                               "Swins have up to 50); the config is corrupt or not a Swin's")
        for i, heads in enumerate(self.num_heads):
            if (self.embed_dim * 2**i) % heads:
                raise SwinzooError(f"stage {i} width {self.embed_dim * 2**i} is not divisible by its {heads} heads")
        if self.class_names is not None:
            self.class_names = [str(c) for c in self.class_names]
            if len(self.class_names) != self.num_classes:
                raise SwinzooError(f"{len(self.class_names)} class names given for {self.num_classes} classes")
        self.preprocess = _preprocess_overrides(self.preprocess)
        if self.out_indices is not None:
            self.out_indices = _out_indices(self.out_indices, len(self.depths))

    def check_buildable(self) -> None:
        """A one-line error, before a model of this config is built, for effective windows whose (N, N) position
        indices (N = window^2) would take gigabytes. Not in __post_init__: a config alone allocates nothing (the
        benchmark plot counts the MACs of global attention at large sizes)."""
        windows = [self.stage_window(i) for i in range(self.num_stages)]
        index_bytes = 8 * sum(d * w**4 for d, w in zip(self.depths, windows))
        if index_bytes > MAX_INDEX_BYTES:
            raise SwinzooError(f"the position indices of {sum(self.depths)} blocks at windows {windows} would take "
                               f"{index_bytes / 2**30:.1f} GiB (swinzoo builds at most {MAX_INDEX_BYTES // 2**30} "
                               "GiB); the config is corrupt, or pick smaller windows")

    # ---------------------------------------------------------------- geometry
    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (self.num_stages - 1)

    @property
    def patch_grid(self) -> int:
        return self.img_size // self.patch_size

    def stage_resolution(self, stage: int) -> int:
        """Side of the token grid stage `stage` works on (the official `input_resolution`)."""
        return self.patch_grid // 2**stage

    @property
    def is_backbone(self) -> bool:
        """A dense-prediction backbone (official detection numerics), not a classifier."""
        return self.out_indices is not None

    def stage_window(self, stage: int) -> int:
        """Effective window of a stage: the grid itself when it is no larger than the window (official
        classification rule); a backbone never shrinks it (official detection rule)."""
        if self.is_backbone:
            return self.window_size
        return min(self.window_size, self.stage_resolution(stage))

    def stage_shift(self, stage: int) -> int:
        """Shift of the odd blocks of a stage; 0 when a classifier's stage fits in one window."""
        if self.is_backbone:
            return self.window_size // 2
        return 0 if self.stage_resolution(stage) <= self.window_size else self.window_size // 2

    def validate_geometry(self) -> None:
        """Raise a one-line error when the patch size or the window cannot tile the resolution."""
        problem = geometry_problem(self.img_size, self.window_size, self.patch_size, self.num_stages)
        if problem:
            hint = suggest_geometry(self.img_size, self.window_size, self.patch_size, self.num_stages)
            raise SwinzooError(f"{problem}; {hint}")

    # ---------------------------------------------------------------- serialisation
    def to_dict(self) -> dict:
        d = asdict(self)
        d["depths"] = list(self.depths)
        d["num_heads"] = list(self.num_heads)
        d["pretrained_window_sizes"] = list(self.pretrained_window_sizes)
        if self.preprocess is None:  # files of models with the official preprocessing stay as they always were
            del d["preprocess"]
        if self.out_indices is None:  # classifiers' files stay as they always were
            del d["out_indices"]
        else:
            d["out_indices"] = list(self.out_indices)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> SwinConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SwinzooError(f"unknown config keys {unknown}; valid keys: {sorted(known)}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:  # a value of the wrong type: `depths: null`, `img_size: "x"`
            raise SwinzooError(f"invalid config values ({str(e).splitlines()[0][:160]}); the file is corrupt or was "
                               "edited by hand: re-create it with `swinzoo convert`") from None

    @classmethod
    def from_json(cls, text: str) -> SwinConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SwinzooError(f"the stored config is not valid JSON ({e.msg}); re-create the file with "
                               "`swinzoo convert`") from None
        if not isinstance(d, dict):
            raise SwinzooError("the stored config is not a JSON object; re-create the file with `swinzoo convert`")
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> SwinConfig:
        d = self.to_dict()
        if self.preprocess and changes.get("img_size", self.img_size) != self.img_size and "preprocess" not in changes:
            # the crop is chosen per resolution (official: 0.875 below 384 px, none from 384); mean, std and the
            # interpolation belong to the weights and stay
            kept = {k: v for k, v in self.preprocess.items() if k not in PREPROCESS_CROP_KEYS}
            d["preprocess"] = kept or None
        d.update(changes)
        return SwinConfig.from_dict(d)


def _preprocess_overrides(value) -> dict | None:
    """`preprocess` with known keys and JSON-stable types (lists come back from JSON as lists, so store lists)."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise SwinzooError(f"preprocess must be a dict of {', '.join(PREPROCESS_KEYS)}, got {value!r}")
    unknown = sorted(set(value) - set(PREPROCESS_KEYS))
    if unknown:
        raise SwinzooError(f"unknown preprocess keys {unknown}; valid keys: {', '.join(PREPROCESS_KEYS)}")
    try:
        out = {k: [float(x) for x in v] if k in ("mean", "std") else float(v) if k == "crop_pct" else str(v)
               for k, v in value.items()}
    except (TypeError, ValueError):
        raise SwinzooError(f"preprocess {value!r} holds a value of the wrong type (mean and std: lists of numbers, "
                           "crop_pct: a number); fix or remove it") from None
    return {k: out[k] for k in PREPROCESS_KEYS if k in out}


def _out_indices(value, stages: int) -> tuple[int, ...]:
    """`out_indices` as a sorted tuple of distinct stage numbers, or a one-line error."""
    try:
        out = tuple(sorted({int(i) for i in value}))
    except (TypeError, ValueError):
        raise SwinzooError(f"out_indices must be a list of stage numbers 0..{stages - 1}, got {value!r}") from None
    if not out or out[0] < 0 or out[-1] >= stages:
        raise SwinzooError(f"out_indices {list(value)} out of range: this model has {stages} stages, so pick from "
                           f"0..{stages - 1} (e.g. out_indices=({', '.join(map(str, range(stages)))}))")
    return out


def geometry_problem(img_size: int, window: int, patch_size: int = 4, num_stages: int = 4) -> str | None:
    """What stops (img_size, window) from tiling, or None. Mirrors the official asserts and views."""
    if window < 1:
        return f"window {window} must be positive"
    if img_size % patch_size:
        return f"resolution {img_size} is not a multiple of the patch size {patch_size}"
    grid = img_size // patch_size
    for stage in range(num_stages):
        res = grid // 2**stage
        if stage < num_stages - 1 and res % 2:
            return f"resolution {img_size}: stage {stage} is {res}x{res} tokens, which patch merging cannot halve"
        if res > window and res % window:
            return f"resolution {img_size}: stage {stage} is {res}x{res} tokens, not a multiple of window {window}"
        if res == 0:
            return f"resolution {img_size} is too small for {num_stages} stages"
    return None


def suggest_geometry(img_size: int, window: int, patch_size: int = 4, num_stages: int = 4) -> str:
    """A hint naming resolutions near `img_size` that tile with `window`, and windows that tile `img_size`."""
    step = patch_size * 2 ** (num_stages - 1)
    base = round(img_size / step) * step
    near = [r for r in range(max(step, base - 8 * step), base + 8 * step + 1, step)
            if not geometry_problem(r, window, patch_size, num_stages)]
    near = sorted(near, key=lambda r: abs(r - img_size))[:2]
    windows = []
    if not geometry_problem(img_size, 1, patch_size, num_stages) or img_size % step == 0:
        windows = [w for w in range(2, img_size // patch_size + 1)
                   if not geometry_problem(img_size, w, patch_size, num_stages)]
        windows = sorted(windows, key=lambda w: abs(w - window))[:3]
    parts = []
    if near:
        parts.append(f"--res {' or '.join(map(str, sorted(near)))} with window {window}")
    if windows:
        parts.append(f"--window {' or '.join(map(str, sorted(windows)))} at {img_size}")
    return "use " + ", or ".join(parts) if parts else f"use a resolution that is a multiple of {step}"


def scaled_window(src: SwinConfig, img_size: int) -> int:
    """The window for `img_size` that keeps the source's window-to-image ratio (the official 224/w7 -> 384/w12 and
    192/w12 -> 256/w16 -> 384/w24 choices), moved to the nearest window that tiles when it does not."""
    target = max(1, round(src.window_size * img_size / src.img_size))
    candidates = [w for w in range(1, img_size // src.patch_size + 1)
                  if not geometry_problem(img_size, w, src.patch_size, src.num_stages)]
    if not candidates:
        return target
    return min(candidates, key=lambda w: (abs(w - target), -w))
