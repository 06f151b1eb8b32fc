"""Images for SimMIM pretraining: labels are never used, so more kinds of folder work than for fine-tuning.

`--data` forms:
- a folder with `train/` (and `val/`): every image under each, at any depth (class folders or none);
- a plain folder of images (at any depth) without `train/`: a fixed validation set is held out of it, drawn
  from CARVE_SEED alone, so every run, resume and DDP rank validates on the same images;
- `hf:NAME[:CONFIG]`, opened as for fine-tuning but for the labels: only the image column is needed;
- the built-in `shapes`.

Every image (of a folder or an `hf:` dataset) is decoded before anything is written (`image_check`). Training
uses the official `SimMIMTransform` (RandomResizedCrop with scale (0.67, 1) and ratio (3/4, 4/3), bilinear as
torchvision's default, flip, ImageNet normalisation); validation a deterministic resize of the short side and a
center crop.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from swinzoo.config import IMAGENET_MEAN, IMAGENET_STD
from swinzoo.errors import SwinzooError
from swinzoo.train.data import BUILTIN, as_recipe, check_images, check_no_hf_options, loader_workers
from swinzoo.train.file_list import IMAGE_SUFFIXES, FileList, files_under
from swinzoo.train.folder import is_rank_zero
from swinzoo.train.hf_data import DataOptions, carve, open_hf
from swinzoo.train.recipes import Recipe
from swinzoo.train.sampling import ResumableLoader
from swinzoo.train.shapes import ShapesDataset
from swinzoo.train.worker_data import ImageFiles, Transformed, Unlabelled

CARVE_FRACTION = 0.1  # of a plain folder held out for validation ...
CARVE_MAX = 1000  # ... but never more images than this: validation only needs a steady loss and a picture
CARVE_SEED = 0


def pretrain_transform(res: int, crop_scale=(0.67, 1.0), hflip: float = 0.5) -> v2.Compose:
    """The official `SimMIMTransform` (data/data_simmim_pt.py): the mask is drawn separately, per step."""
    return v2.Compose([v2.ToImage(), v2.RandomResizedCrop(res, scale=tuple(crop_scale), ratio=(3 / 4, 4 / 3),
                                                          antialias=True),
                       v2.RandomHorizontalFlip(hflip), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def view_transform(res: int) -> v2.Compose:
    """Validation: the whole image as the model sees it, without randomness (short side to res, center crop)."""
    return v2.Compose([v2.ToImage(), v2.Resize(res, antialias=True), v2.CenterCrop(res),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def images_under(folder: Path) -> FileList:
    """Every image file below `folder` at any depth, hidden files and folders skipped, in a fixed order."""
    return files_under(folder, IMAGE_SUFFIXES, skip_hidden=True)


def open_folder(root: Path) -> tuple[ImageFiles, ImageFiles]:
    """(train, val) of an image folder: train/ and val/ (any layout inside), or a plain folder with a carved val."""
    if not root.is_dir():
        what = "a file" if root.exists() else "no such folder"
        raise SwinzooError(f"--data {root}: {what}; give a folder of images (or with train/ and val/), hf:NAME, or "
                           f"the built-in {', '.join(BUILTIN)}")
    if (root / "train").is_dir():
        train = images_under(root / "train")
        if not train:
            raise SwinzooError(f"{root / 'train'} holds no images ({', '.join(IMAGE_SUFFIXES)}); add some")
        val = images_under(root / "val") if (root / "val").is_dir() else FileList()
        if val:
            split = (ImageFiles(train, f"train: {root / 'train'} ({len(train)} images)"),
                     ImageFiles(val, f"validation: {root / 'val'} ({len(val)} images)"))
        else:
            split = carved(train, root / "train")
    else:
        files = images_under(root)
        if not files:
            raise SwinzooError(f"--data {root} holds no images ({', '.join(IMAGE_SUFFIXES)}); give a folder of "
                               "images, or one with train/ and val/")
        split = carved(files, root)
    check_images(split[0].files + split[1].files, str(root))
    return split


def carved(files: FileList, where: Path) -> tuple[ImageFiles, ImageFiles]:
    if len(files) < 2:
        raise SwinzooError(f"{where} holds {len(files)} image; pretraining needs at least 2 (one is held out for "
                           "validation)")
    n_val = min(CARVE_MAX, max(1, round(CARVE_FRACTION * len(files))))
    kept, held = carve(np.zeros(len(files), dtype=np.int64), n_val / len(files), CARVE_SEED)
    return (ImageFiles(files.take(kept), f"train: {where} less the validation images ({len(kept)} images)"),
            ImageFiles(files.take(held), f"validation: {len(held)} images of {where} held out (seed "
                       f"{CARVE_SEED}, the same every run)"))


def open_pretrain_data(data: str, res: int, options: DataOptions | None = None) -> tuple[Dataset, Dataset]:
    """(train, val) image datasets (items: an image, no label) named by `--data`."""
    if data.startswith("hf:"):
        train, val = open_hf(data, options, labelled=False)
        return Unlabelled(train), Unlabelled(val)
    check_no_hf_options(data, options)
    if data == "shapes":
        return Unlabelled(ShapesDataset("train", res)), Unlabelled(ShapesDataset("val", res))
    return open_folder(Path(data))


class SimMIMDataModule(L.LightningDataModule):
    """Train and validation images at `res` for SimMIM, with the crop and flip of `recipe` (as `SwinDataModule`
    takes it); `check()` opens (and decodes) them before anything is written and prints which images the run reads
    (on global rank zero)."""

    def __init__(self, data: str, res: int, batch_size: int, recipe: Recipe | str | dict | None = None,
                 num_workers: int | None = None, data_options: DataOptions | None = None, console=None) -> None:
        super().__init__()
        self.data, self.res, self.batch_size = data, res, batch_size
        self.recipe = as_recipe(recipe)
        self.num_workers = num_workers  # None: `default_workers`, once the Trainer says how many devices
        self.data_options, self.console = data_options, console
        self.train_base = self.val_base = None

    def check(self) -> int:
        """Open both splits; returns the number of training images."""
        if self.train_base is None:
            self.train_base, self.val_base = open_pretrain_data(self.data, self.res, self.data_options)
            parts = [getattr(base, "description", None) or f"{role}: {len(base)} images"
                     for role, base in (("train", self.train_base), ("validation", self.val_base))]
            if self.console is not None and is_rank_zero():
                self.console.print(f"data {self.data}: {'; '.join(parts)}", soft_wrap=True, markup=False,
                                   highlight=False)
            if len(self.train_base) < self.batch_size:
                raise SwinzooError(f"{self.data} has {len(self.train_base)} training images, fewer than one batch "
                                   f"of {self.batch_size}; lower --batch-size")
        return len(self.train_base)

    def setup(self, stage: str | None = None) -> None:
        self.check()

    def train_dataloader(self) -> DataLoader:
        tf = pretrain_transform(self.res, self.recipe.crop_scale, self.recipe.hflip)
        return ResumableLoader(Transformed(self.train_base, tf), self.batch_size,
                               loader_workers(self.num_workers, self.trainer), self.recipe.seed, self.trainer,
                               pin_memory=torch.cuda.is_available())

    def val_dataloader(self) -> DataLoader:
        # in order: batch 0 is the same images every validation, for the reconstruction grid
        workers = loader_workers(self.num_workers, self.trainer)
        return DataLoader(Transformed(self.val_base, view_transform(self.res)), batch_size=self.batch_size,
                          shuffle=False, num_workers=workers, persistent_workers=workers > 0)
