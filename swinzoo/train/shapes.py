"""`shapes`: a built-in, procedurally drawn, deterministic 10-class image dataset at any resolution.

Every image is drawn in continuous coordinates (the unit square) and rasterised at the requested resolution with
2x2 supersampling, so one sample is the same scene at 64 px and at 128 px, only sharper. The classes differ in
the orientation and kind of fine periodic textures and thin outlines, whose details are 1-3 pixels at 64 px: a
higher resolution really shows more of what separates them. Sample `i` of a split is drawn from its own seeded
generator, so the data needs no download and no disk and is identical on every machine.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from swinzoo.zoo import SHAPE_CLASSES

SPLIT_SEEDS = {"train": 0, "val": 1_000_003}
DEFAULT_SIZES = {"train": 20_000, "val": 1_000}
LINE = 0.02  # half-width of the thin outlines, in image units (1.3 px at 64 px)
PERIOD = 0.085  # period of the textures (5.4 px at 64 px, where the stripe edges are already blurred)


def _rotate(x: torch.Tensor, y: torch.Tensor, angle: float) -> tuple[torch.Tensor, torch.Tensor]:
    c, s = math.cos(angle), math.sin(angle)
    return c * x + s * y, -s * x + c * y


def shape_mask(label: int, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Boolean (H, W) coverage of class `label` on the coordinate grids `x`, `y` (centred on the object).

    Every class is a disc-shaped patch (or its outline) whose texture names the class: stripes at four
    orientations (+-15 degrees), a checkerboard, a dot lattice, concentric rings, or a thin circle / square frame.
    Random size, phase and rotation come from `g`, in a fixed order, so a sample is reproducible.
    """
    u = torch.rand(4, generator=g).tolist()
    size = 0.26 + 0.1 * u[0]  # patch radius
    period = PERIOD * (0.9 + 0.2 * u[1])
    jitter = math.radians(30) * (u[2] - 0.5)
    r = torch.sqrt(x * x + y * y)
    inside = r <= size
    name = SHAPE_CLASSES[label]
    if name == "solid":
        return inside
    if name.startswith("stripes_"):
        xr, _ = _rotate(x, y, math.radians(int(name.split("_")[1])) + jitter)
        return inside & (torch.remainder(xr / period + u[3], 1.0) < 0.5)
    xr, yr = _rotate(x, y, 2 * math.pi * u[2])
    if name == "checker":
        return inside & ((torch.remainder(xr / period, 1.0) < 0.5) ^ (torch.remainder(yr / period, 1.0) < 0.5))
    if name == "dots":
        dx = torch.remainder(xr / period, 1.0) - 0.5
        dy = torch.remainder(yr / period, 1.0) - 0.5
        return inside & (dx * dx + dy * dy <= 0.3**2)
    if name == "rings":
        return inside & (torch.remainder(r / period + u[3], 1.0) < 0.5)
    if name == "circle":
        return (r - size).abs() <= LINE
    box = torch.maximum(xr.abs(), yr.abs())  # frame
    return (box - size * 0.85).abs() <= LINE


def render(label: int, res: int, seed: int, supersample: int = 2) -> torch.Tensor:
    """(3, res, res) uint8 image of class `label` drawn from `seed`."""
    g = torch.Generator().manual_seed(seed)
    n = res * supersample
    coords = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    cx, cy = (0.42 + 0.16 * torch.rand(2, generator=g)).tolist()
    y, x = torch.meshgrid(coords - cy, coords - cx, indexing="ij")
    bg = 0.15 + 0.7 * torch.rand(3, generator=g)
    # the object colour is the background's complement pushed away from it: contrast is never too low
    darker = bg - 0.45 - 0.1 * torch.rand(3, generator=g)
    lighter = bg + 0.45 + 0.1 * torch.rand(3, generator=g)
    fg = torch.where(bg > 0.5, darker, lighter)
    mask = shape_mask(label, x, y, g).to(torch.float32)
    img = bg.view(3, 1, 1) + (fg - bg).view(3, 1, 1) * mask
    img = torch.nn.functional.avg_pool2d(img.unsqueeze(0), supersample).squeeze(0)
    noise = torch.randn(img.shape, generator=g) * 0.04  # sensor-like noise at the output resolution
    return ((img + noise).clamp(0, 1) * 255).round().to(torch.uint8)


class ShapesDataset(Dataset):
    """`size` deterministic samples of split `split` ("train" or "val") at resolution `res`; item = (image, label).

    Labels cycle through the classes (balanced); images are (3, res, res) uint8 tensors.
    """

    classes = list(SHAPE_CLASSES)

    def __init__(self, split: str, res: int, size: int | None = None) -> None:
        self.split, self.res = split, res
        self.size = size if size is not None else DEFAULT_SIZES[split]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = index % len(SHAPE_CLASSES)
        return render(label, self.res, SPLIT_SEEDS[self.split] + index), label
