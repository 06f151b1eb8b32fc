"""The official Swin training augmentation: what timm 0.4.12's `create_transform(img_size, is_training=True,
auto_augment='rand-m9-mstd0.5-inc1', re_prob=0.25, re_mode='pixel', interpolation='bicubic')` builds for the
official `data/build.py`, written from timm's semantics (timm is no dependency of swinzoo):

- `RandomResizedCrop`: area in `scale` of the image, log-uniform aspect in [3/4, 4/3], 10 tries then a centre
  crop, PIL bicubic resize;
- `HorizontalFlip` (torchvision's draw: flip when `torch.rand(1) < p`);
- `RandAugment` ('rand-mM-mstdS-inc1'): 2 layers, each a uniform choice among the 15 ops of `OPS`, applied with
  probability 0.5 at magnitude M of 10 plus N(0, S) noise clipped to [0, 10], on the PIL image, filling with the
  mean colour, bicubic resampling;
- `to_tensor` (ToTensor: / 255), then normalisation, then `RandomErasing` in 'pixel' mode: with probability p, one
  box of 2% to 1/3 of the image, log-uniform aspect in [0.3, 1/0.3], 10 tries, filled with N(0, 1) per pixel of
  the normalised tensor.

The draws are timm's, in timm's order, from timm's generators: Python's `random` (crop box, each op's probability,
magnitude noise and sign, the erasing box), numpy's global RandomState (the op choice: timm's `np.random.choice`)
and torch's CPU generator (flip, erasing noise). So with the three seeded alike the output is timm's, pixel for
pixel (tests/test_rand_augment.py), and `swinzoo.train.rng.seeded` seeding all three per image keeps runs
replayable. Float expressions keep timm's operation order, as a reordered product can round differently.

Where timm 1.0 differs from 0.4.12 (the official code's version) this follows 0.4.12:
- PosterizeIncreasing at magnitude 10 keeps 0 bits, a black image, as Pillow did then (`i & ~255`); current
  Pillow (13) refuses 0 bits, so timm 1.0 raises there;
- the Increasing enhance factors are 1 +- 0.9 * M / 10 unclamped (timm 1.0 clamps at 0.1; at M = 10, 1 - 0.9 is
  0.0999..., which Pillow's float32 blend weight rounds to 0.1 anyway).
The op set is 0.4.12's `_RAND_INCREASING_TRANSFORMS`, unchanged in 1.0. TranslateXRel/YRel move by a fraction
(0.45 M / 10) of the image: timm's `translate_const` hparam (0.45 * img_size) is for the absolute translates, which
this policy does not use.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

LEVELS = 10.0  # timm's _MAX_LEVEL: magnitude M is M / 10 of each op's full range
BICUBIC = Image.Resampling.BICUBIC


def mean_fill(mean) -> tuple[int, ...]:
    """The fill colour of rotate, shear and translate: the normalisation mean in 0..255 (timm's `img_mean`)."""
    return tuple(min(255, round(255 * m)) for m in mean)


def _flip_sign(v: float) -> float:
    """-v or v, one draw of `random` (timm's `_randomly_negate`)."""
    return -v if random.random() > 0.5 else v


def _lut(img: Image.Image, table: list[int]) -> Image.Image:
    """One 256-entry table on every band, as ImageOps applies a LUT to an L or RGB image."""
    return img.point(table * len(img.getbands()))


def _affine(img: Image.Image, data: tuple, fill) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, data, resample=BICUBIC, fillcolor=fill)


def _posterize(img, m, fill):
    bits = 4 - int((m / LEVELS) * 4)  # 4 bits kept at M 0 down to 0 at M 10
    return _lut(img, [i & ~(2 ** (8 - bits) - 1) for i in range(256)])


def _solarize_add(img, m, fill):
    add = int((m / LEVELS) * 110)
    return _lut(img, [min(255, i + add) if i < 128 else i for i in range(256)])


def _enhance(kind):
    def op(img, m, fill):
        return kind(img).enhance(1.0 + _flip_sign((m / LEVELS) * 0.9))
    return op


def _translate(axis: int):
    def op(img, m, fill):
        pixels = _flip_sign((m / LEVELS) * 0.45) * img.size[axis]
        return _affine(img, (1, 0, pixels, 0, 1, 0) if axis == 0 else (1, 0, 0, 0, 1, pixels), fill)
    return op


def _shear(axis: int):
    def op(img, m, fill):
        f = _flip_sign((m / LEVELS) * 0.3)
        return _affine(img, (1, f, 0, 0, 1, 0) if axis == 0 else (1, 0, 0, f, 1, 0), fill)
    return op


# timm's op order matters: the op choice is an index into it
OPS = {
    "AutoContrast": lambda img, m, fill: ImageOps.autocontrast(img),
    "Equalize": lambda img, m, fill: ImageOps.equalize(img),
    "Invert": lambda img, m, fill: ImageOps.invert(img),
    "Rotate": lambda img, m, fill: img.rotate(_flip_sign((m / LEVELS) * 30.0), resample=BICUBIC, fillcolor=fill),
    "PosterizeIncreasing": _posterize,
    "SolarizeIncreasing": lambda img, m, fill: ImageOps.solarize(img, 256 - int((m / LEVELS) * 256)),
    "SolarizeAdd": _solarize_add,
    "ColorIncreasing": _enhance(ImageEnhance.Color),
    "ContrastIncreasing": _enhance(ImageEnhance.Contrast),
    "BrightnessIncreasing": _enhance(ImageEnhance.Brightness),
    "SharpnessIncreasing": _enhance(ImageEnhance.Sharpness),
    "ShearX": _shear(0),
    "ShearY": _shear(1),
    "TranslateXRel": _translate(0),
    "TranslateYRel": _translate(1),
}


def apply_op(name: str, img: Image.Image, magnitude: float, fill=(128, 128, 128)) -> Image.Image:
    """Op `name` of `OPS` at `magnitude` (0..10, no noise), drawing only its sign from `random`."""
    return OPS[name](img, magnitude, fill)


class RandAugment:
    """timm's 'rand-mM-mstdS-inc1' on an RGB PIL image: `num_layers` ops drawn uniformly with replacement, each
    applied with probability `prob` at magnitude `magnitude` (of 10) + N(0, `magnitude_std`), clipped to [0, 10].
    `fill`: the colour uncovered by rotate, shear and translate (`mean_fill`)."""

    def __init__(self, magnitude: float = 9, magnitude_std: float = 0.5, num_layers: int = 2, prob: float = 0.5,
                 fill=(124, 116, 104)) -> None:
        self.magnitude, self.magnitude_std, self.num_layers = magnitude, magnitude_std, num_layers
        # by name: OPS holds lambdas and closures, which a loader worker started by spawn or forkserver (macOS,
        # Windows, Python 3.14's Linux default) cannot be sent pickled
        self.prob, self.fill, self.ops = prob, tuple(fill), list(OPS)

    def __call__(self, img: Image.Image) -> Image.Image:
        # np.random.choice(ops, n) with replacement draws exactly this
        for index in np.random.randint(0, len(self.ops), size=self.num_layers):
            if self.prob < 1.0 and random.random() > self.prob:
                continue
            m = random.gauss(self.magnitude, self.magnitude_std) if self.magnitude_std > 0 else self.magnitude
            img = apply_op(self.ops[index], img, min(LEVELS, max(0, m)), self.fill)
        return img

    def __repr__(self) -> str:
        return (f"RandAugment(rand-m{self.magnitude}-mstd{self.magnitude_std}-inc1, n={self.num_layers}, "
                f"p={self.prob}, fill={self.fill})")


class RandomResizedCrop:
    """timm's RandomResizedCropAndInterpolation on a PIL image: an area of `scale` x the image's and an aspect of
    `ratio` (log-uniform), 10 tries, else the centre crop of the nearest aspect; resized to `size` x `size`,
    bicubic (PIL)."""

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)) -> None:
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the crop."""
        area = width * height
        for _ in range(10):
            target = random.uniform(*self.scale) * area
            aspect = math.exp(random.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if w <= width and h <= height:
                return random.randint(0, height - h), random.randint(0, width - w), h, w
        if width / height < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif width / height > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: Image.Image) -> Image.Image:
        top, left, h, w = self.box(*img.size)
        return img.crop((left, top, left + w, top + h)).resize((self.size, self.size), BICUBIC)


class HorizontalFlip:
    """torchvision's RandomHorizontalFlip on a PIL image: one `torch.rand(1)` draw, flip when below `p`."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if torch.rand(1) < self.p else img


def to_tensor(img: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] of an RGB PIL image, as torchvision's ToTensor (a division by 255)."""
    return torch.from_numpy(np.array(img, np.uint8, copy=True)).permute(2, 0, 1).contiguous().float().div(255)


class RandomErasing:
    """timm's RandomErasing, 'pixel' mode, one box: with probability `probability`, a box of `min_area` to
    `max_area` of the image with a log-uniform aspect in [`min_aspect`, 1 / `min_aspect`] (10 tries to fit) is
    replaced by N(0, 1) noise per pixel and channel. Works in place on a normalised (C, H, W) float tensor."""

    def __init__(self, probability: float = 0.25, min_area: float = 0.02, max_area: float = 1 / 3,
                 min_aspect: float = 0.3) -> None:
        self.probability, self.min_area, self.max_area = probability, min_area, max_area
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if random.random() > self.probability:
            return x
        chan, height, width = x.shape
        for _ in range(10):
            target = random.uniform(self.min_area, self.max_area) * (height * width)
            aspect = math.exp(random.uniform(*self.log_aspect))
            h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if w < width and h < height:
                top, left = random.randint(0, height - h), random.randint(0, width - w)
                x[:, top:top + h, left:left + w] = torch.empty((chan, h, w), dtype=x.dtype).normal_()
                break
        return x

    def __repr__(self) -> str:
        return f"RandomErasing(p={self.probability}, mode=pixel, count=1)"
