"""The one preprocessing truth: how a model's eval images are resized, cropped and normalised.

The official rule (`data/build.py`, TEST.CROP): below 384 px, a bicubic resize of the shorter edge to
int((256 / 224) * res) = int(res / 0.875) then a center crop of res x res; from 384 px, a plain bicubic resize to
res x res. In timm's terms that is crop_pct 0.875 / crop_mode "center" below 384 and crop_pct 1.0 / crop_mode
"squash" from 384, which is what `data_config` reports, what the timm and Hugging Face exports write and what
`swinzoo eval` / `predict` run.

A model whose preprocessing differs (a timm or transformers folder that says so) carries the differences in
`SwinConfig.preprocess`; everything else derives from the resolution. `Preprocess.of(config)` is the only reader.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from swinzoo.config import IMAGENET_MEAN, IMAGENET_STD, PREPROCESS_KEYS, SwinConfig
from swinzoo.config import PREPROCESS_CROP_KEYS as CROP_KEYS
from swinzoo.errors import SwinzooError
from swinzoo.zoo import zoo_config

if TYPE_CHECKING:
    import torch

OFFICIAL_CROP_PCT = 0.875
NO_CROP_FROM = 384  # official TEST.CROP is False from this resolution: the whole image, squashed to a square
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")  # PIL's filters, as timm names them
CROP_MODES = ("center", "squash")  # timm's "border" (letterbox) is not something any Swin release uses


@dataclass(frozen=True)
class Preprocess:
    """Eval preprocessing of one model, in timm's vocabulary.

    `crop_mode` "center": resize the shorter edge to floor(res / crop_pct), center crop res x res.
    `crop_mode` "squash": resize both edges to floor(res / crop_pct), center crop res x res (none when crop_pct is 1).
    Then scale to [0, 1] and normalise with `mean` / `std` (one value per channel).
    """

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = OFFICIAL_CROP_PCT
    crop_mode: str = "center"

    def __post_init__(self) -> None:
        try:
            mean, std, crop_pct = tuple(map(float, self.mean)), tuple(map(float, self.std)), float(self.crop_pct)
        except (TypeError, ValueError):
            raise SwinzooError(f"preprocessing mean {self.mean!r}, std {self.std!r} and crop_pct {self.crop_pct!r} "
                               "must be numbers; give numbers (mean and std: one per channel)") from None
        if not mean or len(mean) != len(std) or min(std) <= 0:
            raise SwinzooError(f"preprocessing mean {list(mean)} and std {list(std)}: give one value per channel "
                               "for each, and a positive std")
        if not 0 < crop_pct <= 1:
            raise SwinzooError(f"crop_pct {crop_pct} is outside (0, 1]; give the fraction kept (1: no crop)")
        if self.interpolation not in INTERPOLATIONS:
            raise SwinzooError(f"interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
        if self.crop_mode not in CROP_MODES:
            raise SwinzooError(f"crop_mode {self.crop_mode!r} is not one of {', '.join(CROP_MODES)}")
        for name, value in (("mean", mean), ("std", std), ("crop_pct", crop_pct)):
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------------------------------ the rule
    @classmethod
    def official(cls, img_size: int) -> Preprocess:
        """The official test-time preprocessing at `img_size` px (crop below 384, squash from 384)."""
        if img_size < NO_CROP_FROM:
            return cls(crop_pct=OFFICIAL_CROP_PCT, crop_mode="center")
        return cls(crop_pct=1.0, crop_mode="squash")

    @classmethod
    def of(cls, config: SwinConfig) -> Preprocess:
        """A model's preprocessing: the official rule at its resolution with its config's `preprocess` on top."""
        official = asdict(cls.official(config.img_size))
        return cls(**{**official, **(config.preprocess or {})})

    def overrides(self, img_size: int) -> dict | None:
        """What `SwinConfig.preprocess` stores: the fields that differ from the official rule at `img_size`, the two
        crop fields together (a crop_pct means little without its mode); None when nothing differs."""
        official, mine = asdict(self.official(img_size)), asdict(self)
        out = {k: mine[k] for k in PREPROCESS_KEYS if k not in CROP_KEYS and mine[k] != official[k]}
        if any(mine[k] != official[k] for k in CROP_KEYS):
            out.update({k: mine[k] for k in CROP_KEYS})
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()} or None

    def with_test_crop(self, test_crop: bool | None) -> Preprocess:
        """`test_crop` (a recipe's or `eval --test-crop`'s TEST.CROP) forced on or off; None keeps this one.
        True keeps this model's center crop if it has one (else the official 0.875); False squashes the whole image."""
        if test_crop is None:
            return self
        if not test_crop:
            return Preprocess(self.mean, self.std, self.interpolation, 1.0, "squash")
        crop_pct = self.crop_pct if self.crop_mode == "center" and self.crop_pct < 1 else OFFICIAL_CROP_PCT
        return Preprocess(self.mean, self.std, self.interpolation, crop_pct, "center")

    def scale_size(self, img_size: int) -> int:
        """Side the image is resized to before the crop: timm's floor(res / crop_pct); at crop_pct 0.875 the official
        int((256 / 224) * res) (equal for every resolution below 384 px; the rule's test checks)."""
        return math.floor(img_size / self.crop_pct)

    # ------------------------------------------------------------------------------------------ outputs
    def data_config(self, img_size: int, in_chans: int = 3) -> dict:
        """timm's `resolve_data_config` dict: input_size (C, H, W), interpolation, mean, std, crop_pct, crop_mode."""
        return {"input_size": (in_chans, img_size, img_size), "interpolation": self.interpolation, "mean": self.mean,
                "std": self.std, "crop_pct": self.crop_pct, "crop_mode": self.crop_mode}

    def describe(self, img_size: int) -> str:
        """One line for model cards, e.g. `bicubic resize of the shorter edge to 256 px, center crop 224 px`."""
        scale = self.scale_size(img_size)
        if self.crop_mode == "center":
            text = f"{self.interpolation} resize of the shorter edge to {scale} px, center crop {img_size} px"
        else:
            text = f"{self.interpolation} resize to {scale}x{scale} px" + (
                f", center crop {img_size} px" if scale != img_size else " (no crop)")
        stats = "ImageNet mean and std" if (self.mean, self.std) == (IMAGENET_MEAN, IMAGENET_STD) else \
            f"mean {list(self.mean)}, std {list(self.std)}"
        return f"{text}, {stats}"

    def transform(self, img_size: int):
        """The eval transform: PIL image of any size and mode (read as RGB), uint8 numpy array (H, W, C) or uint8
        tensor (C, H, W) -> float32 tensor (C, res, res).

        Resizing happens before the tensor conversion, so a PIL image is resized by PIL exactly as the official code
        and timm do (a tensor's bicubic differs from PIL's by up to a few 1e-2)."""
        from torchvision.transforms import v2

        mode = v2.InterpolationMode(self.interpolation)
        scale = self.scale_size(img_size)
        size = scale if self.crop_mode == "center" else (scale, scale)
        ops = [v2.Resize(size, interpolation=mode, antialias=True)]
        if self.crop_mode == "center" or scale != img_size:
            ops.append(v2.CenterCrop(img_size))
        return eval_compose()([*ops, v2.ToImage(), v2.Lambda(unit_float),
                               v2.Normalize(list(self.mean), list(self.std))])

    @classmethod
    def from_data_config(cls, d: dict) -> tuple[Preprocess, int, int]:
        """(preprocessing, resolution, channels) of a timm-style data config; absent keys are timm's defaults."""
        unknown = sorted(set(d) - {"input_size", *PREPROCESS_KEYS})
        if unknown:
            raise SwinzooError(f"unknown data config keys {unknown}; valid keys: input_size, "
                               f"{', '.join(PREPROCESS_KEYS)}")
        if "input_size" not in d:
            raise SwinzooError("a data config needs input_size (C, H, W); get one with swinzoo.data_config(model)")
        chans, height, width = (int(v) for v in d["input_size"])
        if height != width:
            raise SwinzooError(f"input_size {list(d['input_size'])} is not square; Swin models take square inputs")
        fields = {k: d[k] for k in PREPROCESS_KEYS if d.get(k) is not None}
        return cls(**fields), height, chans


def unit_float(image):
    """A (C, H, W) image as float32 in [0, 1]: uint8 divided by 255, as the official code's (and timm's) ToTensor
    divides, so eval tensors are theirs bit for bit; torchvision v2's ToDtype multiplies by 1 / 255 instead, one ulp
    off for about 40% of the values (up to 7e-7 after normalising). Other dtypes as ToDtype scales them."""
    import torch
    from torchvision.transforms.v2.functional import to_dtype

    if image.dtype == torch.uint8:
        return image.to(torch.float32).div_(255)
    return to_dtype(image, torch.float32, scale=True)


def rgb_image(image):
    """A PIL image of any mode as RGB (`to_rgb`, as `predict` reads files), a uint8 numpy array (H, W[, C]) as the
    PIL image it holds, in RGB; anything else (a tensor) unchanged. torchvision v2 would pass an array through its
    resize and crop untouched, and normalise RGBA's four channels against three means."""
    import numpy as np
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise SwinzooError(f"a numpy image of shape {image.shape} and dtype {image.dtype}: give uint8 (H, W, C) "
                               "with C 1, 3 or 4 (from floats in [0, 1]: (array * 255).round().astype(np.uint8)), "
                               "or a PIL image")
        image = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    if isinstance(image, Image.Image) and image.mode != "RGB":
        image = to_rgb(image)
    return image


def pixel_problem(image) -> str | None:
    """Why the pixels of a PIL image have no 8-bit meaning (None when they have): float pixels (mode F) with no
    recorded range, integers (mode I) beyond 16 bits. `image_check` refuses such files before training starts."""
    if image.mode == "F":
        return ("float pixels (PIL mode F), whose range (0-1 or 0-255?) is not recorded; save it as an 8- or 16-bit "
                "image")
    if image.mode == "I":  # the I;16 modes hold 16 bits by definition
        low, high = image.getextrema()
        if low < 0 or high > 65535:
            bound = f"down to {low}" if low < 0 else f"up to {high}"
            return f"pixels {bound} (PIL mode {image.mode}), beyond 16 bits; save it as an 8- or 16-bit image"
    return None


def to_rgb(image, name: str = "the image"):
    """A PIL image as a loaded RGB image, for every reader of images (training, eval, predict, create_transform).
    16-bit pixels (modes I;16*, and I, which Pillow gives 16-bit PGM / PPM) are scaled to 8 bits first (value / 257,
    rounded): PIL's convert, and so torchvision's ImageFolder, clips them at 255, nearly all white. Other modes
    convert as PIL converts them, byte for byte. `name` (a path) names the image in the error for float pixels or
    integers beyond 16 bits."""
    problem = pixel_problem(image)
    if problem:
        raise SwinzooError(f"{name} has {problem}")
    if image.mode == "I" or image.mode.startswith("I;16"):
        import numpy as np
        from PIL import Image

        deep = np.asarray(image).astype(np.uint32)
        image = Image.fromarray(((deep * 255 + 32767) // 65535).astype(np.uint8))  # round(value / 257)
    return image.convert("RGB")


@functools.cache
def eval_compose() -> type:
    """`EvalCompose`, a torchvision v2 Compose that reads its input with `rgb_image` first; made on first use, as
    torchvision is imported only when a transform is."""
    from torchvision.transforms import v2

    class EvalCompose(v2.Compose):
        def forward(self, *inputs):
            return super().forward(*map(rgb_image, inputs))

    EvalCompose.__qualname__ = EvalCompose.__name__  # pickled by name (DataLoader workers): module __getattr__
    return EvalCompose


def __getattr__(name: str):
    if name == "EvalCompose":
        return eval_compose()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------- timm-style API
class Configured(Protocol):
    """Anything carrying a `SwinConfig` (SwinTransformer, SwinBackbone, SimMIM), named so without importing models."""

    @property
    def config(self) -> SwinConfig: ...


ModelLike = Configured | SwinConfig | int | str | dict


def _resolve(source) -> tuple[Preprocess, int, int]:
    """(preprocessing, resolution, channels) of a model, config, resolution, zoo name or data config."""
    if isinstance(getattr(source, "config", None), SwinConfig):  # a SwinTransformer, without importing models
        source = source.config
    if isinstance(source, str):
        if "/" in source or "\\" in source or Path(source).exists():
            raise SwinzooError(f"{source!r} is not a zoo name; load the file first: swinzoo.data_config("
                               "swinzoo.load_model(path))")
        source = zoo_config(source)
    if isinstance(source, SwinConfig):
        return Preprocess.of(source), source.img_size, source.in_chans
    if isinstance(source, dict):
        return Preprocess.from_data_config(source)
    if isinstance(source, int) and not isinstance(source, bool) and source > 0:
        return Preprocess.official(source), source, 3
    raise SwinzooError(f"cannot tell the preprocessing of a {type(source).__name__}; give a model, a SwinConfig, a "
                       "resolution, a zoo name or a data config")


def data_config(model: ModelLike, *, test_crop: bool | None = None) -> dict[str, Any]:
    """timm-style data config of `model` (a SwinTransformer, a SwinConfig, a resolution in px, a zoo name or a
    data config): {"input_size": (C, H, W), "interpolation", "mean": (C,), "std": (C,), "crop_pct", "crop_mode"},
    what `timm.data.resolve_data_config` gives for the model's timm export. `test_crop` forces the crop on or off."""
    preprocess, img_size, in_chans = _resolve(model)
    return preprocess.with_test_crop(test_crop).data_config(img_size, in_chans)


def create_transform(model: ModelLike | None = None, *, test_crop: bool | None = None,
                     **data_config_keys: Any) -> Callable[[Any], torch.Tensor]:
    """The eval transform (torchvision v2) a model's metadata implies: PIL image of any mode (read as RGB), uint8
    numpy array (H, W, C) or uint8 (C, H, W) tensor -> normalised float32 (C, res, res). Call it as
    `create_transform(model)` or, like timm, `create_transform(**data_config(model))`; data config keys given as
    keywords override the model's."""
    if model is None and not data_config_keys:
        raise SwinzooError("create_transform needs a model, a SwinConfig, a resolution or data config keywords")
    base = data_config(model) if model is not None else {}
    preprocess, img_size, _ = Preprocess.from_data_config({**base, **data_config_keys})
    return preprocess.with_test_crop(test_crop).transform(img_size)
