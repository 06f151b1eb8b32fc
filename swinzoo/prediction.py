"""`swinzoo predict` / `swinzoo.predict`: the top-k classes of image files and folders, batch by batch, preprocessed
as the model's metadata says."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from rich.console import Console

from swinzoo.errors import SwinzooError, python_api
from swinzoo.eval_precision import runtime
from swinzoo.evaluation import check_counts, eval_mode, prepare_model, progress_display, run_model
from swinzoo.models import SwinTransformer
from swinzoo.preprocess import create_transform, to_rgb
from swinzoo.train.file_list import IMAGE_SUFFIXES, files_under
from swinzoo.train.image_check import NOT_REGULAR


@python_api()
def predict(model: str | SwinTransformer, images: str | Path | list[str | Path], *, topk: int = 5,
            batch_size: int = 64, device: str | None = None, precision: str = "fp32", from_format: str = "auto",
            arch: str | None = None, trust_checkpoint: bool = False, ema: bool | None = None,
            on_batch: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """[{"image", "predictions": [[class name, probability], ...]}] for image files (one path, or a list of them; a
    folder stands for the images below it, sorted), best first, in batches of `batch_size`; images are
    preprocessed as the model's metadata says (`swinzoo.data_config`). `on_batch` is given each batch's rows as
    they come (the CLI prints them: a late unreadable image does not cost the lines before it). `from_format`,
    `arch`, `trust_checkpoint` and `ema` read a source as `read_checkpoint` does."""
    # a path is iterable (a str by character): taken as a list it would be read one character at a time
    images = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    check_counts(topk=topk, batch_size=batch_size)
    listed = []
    for path in images:  # all of them before the model loads and the first batch runs
        check_image_path(path)
        listed += images_in(path) if is_folder(path) else [path]
    images = listed
    dev, dtype = runtime(device, precision)
    net = prepare_model(model, from_format=from_format, arch=arch, trust_checkpoint=trust_checkpoint, ema=ema).to(dev)
    cfg = net.config
    names = cfg.class_names or [str(i) for i in range(cfg.num_classes)]
    tf = create_transform(cfg)  # train.data.eval_transform(cfg), without importing the datasets
    k = min(topk, cfg.num_classes)
    rows: list[dict] = []
    batches = -(-len(images) // batch_size)
    # the bar takes over a terminal's stdout only when stdout is that terminal: rows piped to a file stay there
    display = (progress_display(Console(stderr=True), "predict", batches, redirect_stdout=sys.stdout.isatty())
               if batches > 1 else contextlib.nullcontext())
    with display as advance:
        for start in range(0, len(images), batch_size):
            paths = images[start : start + batch_size]
            with eval_mode(net), torch.inference_mode():
                probs = run_model(net, torch.stack([read_image(path, tf) for path in paths]), dev, dtype).softmax(-1)
            values, indices = probs.cpu().topk(k, dim=-1)
            batch = [{"image": str(path), "predictions": [[names[i], round(float(p), 6)] for p, i in zip(v, ix)]}
                     for path, v, ix in zip(paths, values.tolist(), indices.tolist())]
            rows += batch
            if on_batch is not None:
                on_batch(batch)
            if advance:
                advance()
    return rows


def is_folder(path) -> bool:
    return isinstance(path, (str, bytes, os.PathLike)) and os.path.isdir(path)


def images_in(folder) -> list[Path]:
    """The image files below `folder`, any depth, sorted; hidden files and folders skipped (macOS `._*` forks are
    not images). A one-line error when there are none."""
    found = files_under(Path(os.fsdecode(folder)), IMAGE_SUFFIXES, skip_hidden=True)
    if not found:
        raise SwinzooError(f"{os.fsdecode(folder)} holds no images ({', '.join(IMAGE_SUFFIXES)}); give image files "
                           "or a folder of them")
    return list(found)


def check_image_path(path) -> None:
    """A one-line error for what `predict` cannot read as images: not a path, no such file (a folder is listed by
    `images_in`)."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        if hasattr(path, "read"):  # a file object reads
            return
        what = f"{type(path).__module__.split('.')[0]}.{type(path).__name__}"  # PIL.Image, numpy.ndarray, ...
        raise SwinzooError(f"predict takes image file paths, not a {what}; for an image in memory, run "
                           "swinzoo.create_transform(model)(image)[None] through the model")
    if not os.path.lexists(path):
        raise SwinzooError(f"{os.fsdecode(path)}: no such file; check the path")


def read_image(path: str | Path, transform) -> torch.Tensor:
    """One image file through `transform`, or a one-line error naming it."""
    try:
        if isinstance(path, (str, bytes, os.PathLike)) and not stat.S_ISREG(os.stat(path).st_mode):
            raise SwinzooError(f"{os.fsdecode(path)} is {NOT_REGULAR}; remove it or leave it out")  # a pipe: a hang
        with Image.open(path) as im:
            return transform(to_rgb(im, str(path)))
    except Image.DecompressionBombError:
        raise SwinzooError(f"{path} has more pixels than PIL's limit ({2 * Image.MAX_IMAGE_PIXELS}; a guard "
                           "against decompression bombs): shrink the image, or raise PIL.Image.MAX_IMAGE_PIXELS "
                           "if you trust it") from None
    except (OSError, UnidentifiedImageError) as e:
        raise SwinzooError(f"{path} is not a readable image ({e}); replace it or leave it out") from None
