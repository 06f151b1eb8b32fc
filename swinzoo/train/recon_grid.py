"""The picture of a SimMIM validation: a grid of images, their masked versions and the reconstructions (Pillow).

Rows: the original (de-normalised), the input with its masked patches grey, and the reconstruction pasted into
the masked patches over the visible ones (the loss only judges the masked pixels, so only they are the model's
work). Small images are enlarged by a whole factor (nearest) so that a 64 px grid is still readable.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from swinzoo.config import IMAGENET_MEAN, IMAGENET_STD
from swinzoo.io import atomic_path
from swinzoo.plot import save_png

ROWS = (("original", ""), ("masked", "(grey patches)"), ("reconstruction", "(predicted in mask)"))
LABEL_W, TITLE_H, GAP, MIN_CELL = 130, 24, 4, 128
GREY = 0.5


def cell_scale(h: int, w: int) -> int:
    """Whole enlargement factor of each image: at least MIN_CELL px on its longer side."""
    return max(1, -(-MIN_CELL // max(h, w)))


def grid_size(n: int, h: int, w: int) -> tuple[int, int]:
    """(width, height) in pixels of the grid of `n` images of h x w."""
    k = cell_scale(h, w)
    return LABEL_W + n * w * k + (n + 1) * GAP, TITLE_H + len(ROWS) * h * k + (len(ROWS) + 1) * GAP


def denormalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, -1, 1, 1)
    return (x * std + mean).clamp(0, 1)


def from_local_norm(prediction: torch.Tensor, images: torch.Tensor, kernel: int,
                    visible: torch.Tensor) -> torch.Tensor:
    """A prediction of locally normalised targets (`norm_targets`) back in image units, with the local mean and
    standard deviation (`models.simmim.local_stats`' rule) of the pixels the model saw, `visible` (n, 1, H, W): the
    masked ones' statistics would paint what lies under the mask into the picture. A neighbourhood with fewer than
    two visible pixels takes the image's visible mean and spread."""
    pad = kernel // 2

    def total(t: torch.Tensor) -> torch.Tensor:  # the sum over each pixel's kernel x kernel neighbourhood
        return F.avg_pool2d(t, kernel, stride=1, padding=pad, count_include_pad=True) * kernel**2

    seen = visible.expand_as(images)
    count, s1, s2 = total(seen), total(images * seen), total(images**2 * seen)
    mean = s1 / count.clamp(min=1)
    var = ((s2 - count * mean**2) / (count - 1).clamp(min=1)).clamp(min=0)
    n = seen.sum((2, 3), keepdim=True).clamp(min=1)
    whole_mean = (images * seen).sum((2, 3), keepdim=True) / n
    whole_var = (((images - whole_mean) ** 2 * seen).sum((2, 3), keepdim=True) / (n - 1).clamp(min=1))
    few = count < 2
    mean, var = torch.where(few, whole_mean.expand_as(mean), mean), torch.where(few, whole_var.expand_as(var), var)
    return prediction * (var + 1e-6).sqrt() + mean


def draw_reconstructions(images: torch.Tensor, mask: torch.Tensor, reconstruction: torch.Tensor, patch_size: int,
                         title: str, norm_kernel: int | None = None) -> Image.Image:
    """(n, 3, H, W) normalised images, (n, H/p, W/p) mask (1 = masked), (n, 3, H, W) prediction -> the grid.
    `norm_kernel`: the prediction is of locally normalised targets with this kernel (None: of the images)."""
    images, reconstruction = images.float(), reconstruction.float()
    n, _, h, w = images.shape
    pixels = mask.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2).unsqueeze(1).float()
    prediction = (reconstruction if norm_kernel is None
                  else from_local_norm(reconstruction, images, norm_kernel, 1 - pixels))
    original, predicted = denormalise(images), denormalise(prediction)
    rows = [original, original * (1 - pixels) + GREY * pixels, original * (1 - pixels) + predicted * pixels]
    k = cell_scale(h, w)
    canvas = Image.new("RGB", grid_size(n, h, w), "white")
    pen = ImageDraw.Draw(canvas)
    pen.text((GAP, 6), title, fill="black")
    for r, (row, (label, note)) in enumerate(zip(rows, ROWS)):
        y = TITLE_H + GAP + r * (h * k + GAP)
        pen.text((GAP, y + h * k // 2 - 12), label, fill="black")
        pen.text((GAP, y + h * k // 2 + 2), note, fill="dimgray")
        for i in range(n):
            pixels_u8 = (row[i].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            tile = Image.fromarray(pixels_u8).resize((w * k, h * k), Image.NEAREST)
            canvas.paste(tile, (LABEL_W + GAP + i * (w * k + GAP), y))
    return canvas


def write_reconstructions(folder: Path, step: int, images, mask, reconstruction, patch_size: int, title: str,
                          norm_kernel: int | None = None) -> Path:
    """folder/step_{step:06d}.png and folder/latest.png (each written atomically); returns the first."""
    img = draw_reconstructions(images, mask, reconstruction, patch_size, title, norm_kernel)
    folder.mkdir(parents=True, exist_ok=True)
    path = save_png(img, folder / f"step_{step:06d}.png")
    with atomic_path(folder / "latest.png") as tmp:  # the same bytes: copied, not encoded a second time
        shutil.copyfile(path, tmp)
    return path
