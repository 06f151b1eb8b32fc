"""What swinzoo's PNG plots share (`bench --plot`, `eval --plot`): the palette, a legend entry, an atomic save.
Pillow only (already a torchvision dependency)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageDraw

from swinzoo.errors import SwinzooError
from swinzoo.io import atomic_path, check_file_output

PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (140, 86, 75), (227, 119, 194)]


def legend_entry(pen: ImageDraw.ImageDraw, x: float, y: float, color, label: str, width: int = 3) -> None:
    """A short line in `color` at (x, y) and the label beside it."""
    pen.line([x, y + 6, x + 24, y + 6], fill=color, width=width)
    pen.text((x + 30, y), label, fill="black")


def check_png_output(path: str | Path, example: str = "plot.png") -> Path:
    """`--plot PATH` checked before the work it draws: a file name `atomic_path` can write, ending in .png (the image
    is PNG whatever the name says; a .jpg or .txt name would hold PNG bytes)."""
    path = check_file_output(path, example)
    if path.suffix.lower() != ".png":
        raise SwinzooError(f"--plot {path}: the plot is a PNG image; give a name ending in .png "
                           f"(e.g. {path.with_suffix('.png')})")
    return path


@contextmanager
def naming_the_plot(path: str | Path):
    """A plot that cannot be written, after the results are printed: the one error line names the --plot path (the
    writer's own names the folder it could not make)."""
    try:
        yield
    except SwinzooError as e:
        raise SwinzooError(f"--plot {path}: {e}") from None


def save_png(img: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
