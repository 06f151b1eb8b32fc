"""What swinzoo's PNG plots share (`bench --plot`, `eval --plot`): the palette, a legend entry, an atomic save.
Pillow only (already a torchvision dependency)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from swinzoo.io import atomic_path

PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (140, 86, 75), (227, 119, 194)]


def legend_entry(pen: ImageDraw.ImageDraw, x: float, y: float, color, label: str, width: int = 3) -> None:
    """A short line in `color` at (x, y) and the label beside it."""
    pen.line([x, y + 6, x + 24, y + 6], fill=color, width=width)
    pen.text((x + 30, y), label, fill="black")


def save_png(img: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
