"""Data for fine-tuning and evaluation: image folders, Hugging Face datasets (`hf:NAME`) and the built-in `shapes`.

`--data` forms:
- a folder with `train/` and `val/`, each holding one sub-folder of images per class (torchvision ImageFolder
  layout). Every file is decoded when the data is set up, before anything is written (in parallel threads, with a
  progress bar on big folders; see `check_images`): a file that is not a readable image (unknown format,
  truncated, corrupt) stops the run with its name (nothing is skipped silently), as does an empty class folder.
- `hf:NAME[:CONFIG]` (optional extra `pip install swinzoo[hf]`): a Hugging Face dataset with an image and a label
  column; `DataOptions` (`swinzoo.train.hf_data`) pick its splits and columns, or carve validation from train.
  Every row's image is decoded when the data is set up, as a folder's files are.
- `shapes`: the built-in procedural dataset (`swinzoo.train.shapes`), drawn at the run's resolution.

Transforms are the official ones (`data/build.py`): the train transform is timm 0.4.12's as the official code
builds it (`swinzoo.train.augment`); the eval transform is the model's preprocessing from `swinzoo.preprocess`, the
one every export writes.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from swinzoo.config import IMAGENET_MEAN, IMAGENET_STD, SwinConfig
from swinzoo.errors import SwinzooError, for_caller
from swinzoo.preprocess import Preprocess, create_transform
from swinzoo.train.augment import HorizontalFlip, RandAugment, RandomErasing, RandomResizedCrop, mean_fill, to_tensor
from swinzoo.train.folder import is_rank_zero
from swinzoo.train.hf_data import ANY_DATA, FLAGS, DataOptions, HFSplit, open_hf, parse_hf
from swinzoo.train.image_check import check_images
from swinzoo.train.recipes import Recipe, load_recipe
from swinzoo.train.sampling import ResumableLoader
from swinzoo.train.shapes import ShapesDataset
from swinzoo.train.worker_data import ImageFolderSplit, LabelBudget, TransformedDataset, split_labels

BUILTIN = ("shapes",)
BICUBIC = v2.InterpolationMode.BICUBIC


def eval_transform(res: int | SwinConfig, test_crop: bool | None = None) -> v2.Compose:
    """Eval transform of a model's config (its preprocessing) or of a resolution (the official rule: bicubic resize
    to int(res/0.875) + center crop below 384 px, a plain resize from 384); `test_crop` forces the crop on or off."""
    return create_transform(res, test_crop=test_crop)


def train_transform(res: int, crop_scale=(0.08, 1.0), rand_augment: int | None = 9,
                    random_erasing: float = 0.25, hflip: float = 0.5, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """The official train augmentation (timm 0.4.12's, `swinzoo.train.augment`), normalised with the model's mean
    and std. With `rand_augment` (a magnitude of 10, timm's 'rand-m{M}-mstd0.5-inc1') the crop (bicubic), flip and
    RandAugment run on the PIL image as timm runs them, then ToTensor, Normalize and `random_erasing` ('pixel'
    mode). Without it (the nano recipes) the crop and flip run on the uint8 tensor with torchvision (bicubic,
    antialiased), as they always have, then the same normalisation and erasing."""
    erase = [RandomErasing(random_erasing)] if random_erasing > 0 else []
    normalize = v2.Normalize(list(mean), list(std))
    if rand_augment is None:
        return v2.Compose([v2.ToImage(), v2.RandomResizedCrop(res, scale=tuple(crop_scale), interpolation=BICUBIC,
                                                              antialias=True),
                           v2.RandomHorizontalFlip(hflip), v2.ToDtype(torch.float32, scale=True), normalize, *erase])
    flip = [HorizontalFlip(hflip)] if hflip > 0 else []  # timm leaves a flip of probability 0 out: no draw
    return v2.Compose([v2.ToPILImage(), RandomResizedCrop(res, crop_scale), *flip,
                       RandAugment(rand_augment, 0.5, fill=mean_fill(mean)), to_tensor, normalize, *erase])


def open_split(data: str, split: str, res: int, classes: list[str] | None = None, size: int | None = None,
               options: DataOptions | None = None, check: bool = True, bare: bool = False):
    """The untransformed dataset `split` ("train" or "val") named by `--data`; it has `.classes`. `options`: the
    splits and columns of `hf:` data (eval's `--val-split` picks the split it reads); other data takes none.
    `bare`: a folder with neither train/ nor val/ is the split itself (eval's test set of class folders, as
    timm's validate.py reads a root without its split folder)."""
    if data.startswith("hf:"):
        return HFSplit(data[3:], split, options, classes)
    check_no_hf_options(data, options)
    if data == "shapes":
        return ShapesDataset(split, res, size)
    root = Path(data)
    if not root.exists():
        raise SwinzooError(f"--data {data}: no such folder (built-in datasets: {', '.join(BUILTIN)}; "
                           "Hugging Face: hf:NAME)")
    if root.is_file():  # a model or an image given as --data
        raise SwinzooError(f"--data {data} is a file; give a folder with train/<class>/ and val/<class>/ image "
                           f"folders, hf:NAME or one of the built-in datasets ({', '.join(BUILTIN)})")
    if not (root / "train").is_dir() and not (root / "val").is_dir():
        if bare:
            return ImageFolderSplit(root, classes, check)
        raise SwinzooError(f"data folder {root} has no train/ or val/ folder; --data needs {root}/train/<class>/ "
                           f"and {root}/val/<class>/ image folders")
    return ImageFolderSplit(root / split, classes, check)


def run_data(data: str) -> str:
    """`--data` as a run's run.json records it, for its resumes and `swinzoo eval RUN`: a local folder (also as
    `hf:FOLDER`) by its absolute path, so that it is found from any working folder and after the run folder moved;
    built-in and Hub names as given."""
    if data in BUILTIN:
        return data
    name, config = parse_hf(data) if data.startswith("hf:") else (data, None)
    if not Path(name).exists():
        return data
    where = str(Path(name).absolute())
    return f"hf:{where}" + (f":{config}" if config is not None else "") if data.startswith("hf:") else where


def run_source(source: str | None) -> str | None:
    """--from as a run's config.yaml replays it from any folder: a local file or folder by its absolute path (it
    wins over a zoo name, as when read), zoo names and `hf-hub:` references as given."""
    if source is None or source.startswith(("hf-hub:", "hf_hub:")) or not Path(source).exists():
        return source
    return str(Path(source).absolute())


def check_no_hf_options(data: str, options: DataOptions | None) -> None:
    changed = [f for f in options.changed() if f not in {FLAGS[k] for k in ANY_DATA}] if options is not None else []
    if changed:
        raise SwinzooError(f"{', '.join(changed)} only appl{'y' if len(changed) > 1 else 'ies'} to hf:NAME data; drop "
                           f"{'them' if len(changed) > 1 else 'it'} for --data {data}")


def check_classes(data: str, train) -> None:
    """A classifier of one class learns nothing (its loss is always zero), and the accuracy metrics refuse to be
    built for it once the run has begun: refuse it while nothing is written. Evaluating one class folder is fine:
    `evaluate` matches it to the model's classes."""
    classes = list(train.classes)
    if len(classes) >= 2:
        return
    found = f"found {len(classes)}" + (f" ({', '.join(classes)})" if classes else "")
    if isinstance(train, HFSplit):
        raise SwinzooError(f"--data {data}: split {train.split_name!r} needs at least 2 classes to train a "
                           f"classifier, {found} in label column {train.label_key!r}; pick another --label-column "
                           "or a dataset with more classes")
    raise SwinzooError(f"--data {data}: needs at least 2 class folders in train/, {found}; add a folder of images "
                       "for each other class")


def describe(data: str, train, val) -> str:
    """One line for the console: which splits (or carve) the run reads."""
    parts = [getattr(base, "description", None) or f"{role}: {len(base)} images"
             for role, base in (("train", train), ("validation", val))]
    return f"data {data}: {'; '.join(parts)}"


# training classes whose image counts differ by this factor or more get a note: top-1 then mostly measures the big ones
IMBALANCE = 10


def imbalance_note(train) -> str | None:
    """A note when the training classes' image counts differ by IMBALANCE times or more, or a class has none."""
    counts = np.bincount(split_labels(train), minlength=len(train.classes))
    fewest, most = int(counts.min()), int(counts.max())
    if most < IMBALANCE * max(fewest, 1) and fewest > 0:
        return None
    name = train.classes[int(counts.argmin())]
    what = (f"class {name!r} has no training images" if fewest == 0 else
            f"the training classes hold {fewest} ({name!r}) to {most} images each")
    return f"{what}; top-1 mostly measures the large classes: `swinzoo eval RUN --per-class` gives each its own"


def as_recipe(recipe: Recipe | str | dict | None) -> Recipe:
    """A data module's recipe as given: a `Recipe`, or what `load_recipe` reads (name, YAML path, mapping)."""
    return Recipe() if recipe is None else load_recipe(recipe)


def default_workers(processes: int = 1) -> int:
    """Loader workers of each of `processes` training processes on this node (one per device): half the CPUs,
    shared among them, at most 8 each; at least 1 where there are 2 CPUs."""
    half = (os.cpu_count() or 1) // 2
    return min(8, max(1, half // max(1, processes))) if half else 0


def loader_workers(num_workers: int | None, trainer) -> int:
    """A data module's --num-workers, or (None) the default for the processes its Trainer runs on each node."""
    if num_workers is not None:
        return num_workers
    return default_workers(trainer.num_devices if trainer is not None else 1)


class SwinDataModule(L.LightningDataModule):
    """Train/val loaders for `data` at resolution `res` with the augmentation of `recipe` (a `Recipe`, a packaged
    recipe's name, a YAML path or a mapping of recipe keys; None: the official defaults). `data_options`: the splits
    and columns of `hf:` data (None: the defaults); `console`: where `check` prints which splits it read (on global
    rank zero), also kept in `description`. Once the model is known, `config` (its SwinConfig) gives the
    preprocessing: validation as `swinzoo eval` of the weights will do it, training normalised alike; without it,
    the official rule at `res` with the recipe's test_crop and the ImageNet mean and std."""

    def __init__(self, data: str, res: int, batch_size: int, recipe: Recipe | str | dict | None = None,
                 num_workers: int | None = None, train_size: int | None = None, val_size: int | None = None,
                 data_options: DataOptions | None = None, console=None) -> None:
        super().__init__()
        self.data, self.res, self.batch_size = data, res, batch_size
        self.recipe = as_recipe(recipe)
        self.num_workers = num_workers  # None: `default_workers`, once the Trainer says how many devices
        self.train_size, self.val_size = train_size, val_size
        self.data_options, self.console = data_options or DataOptions(), console
        self.train_base = self.val_base = self.description = None
        self.config: SwinConfig | None = None

    def check(self) -> list[str]:
        """Open both splits (every image checked), before anything is written; returns the class names."""
        if self.train_base is None:
            opts = self.data_options
            if self.data.startswith("hf:"):
                if opts.val_split is not None and opts.val_split == opts.train_split:
                    raise SwinzooError(f"--val-split {opts.val_split} is also the train split, so validation would "
                                       "measure the training images; name another split, or drop --val-split")
                self.train_base, self.val_base = open_hf(self.data, opts)  # one load of the dataset for both
            else:
                check_no_hf_options(self.data, opts)
                self.train_base = open_split(self.data, "train", self.res, size=self.train_size, check=False)
                self.val_base = open_split(self.data, "val", self.res, self.train_base.classes, size=self.val_size,
                                           check=False)
                if isinstance(self.train_base, ImageFolderSplit):  # both splits' images in one pass, one error
                    check_images(self.train_base.files + self.val_base.files, self.data)
            check_classes(self.data, self.train_base)
            fraction = opts.train_fraction
            if fraction is not None and fraction < 1:
                self.train_base = LabelBudget(self.train_base, fraction, opts.split_seed)
            self.description = describe(self.data, self.train_base, self.val_base)
            if self.console is not None and is_rank_zero():
                self.console.print(self.description, soft_wrap=True, markup=False, highlight=False)
                if note := imbalance_note(self.train_base):
                    self.console.print(f"note: {for_caller(note)}", soft_wrap=True, markup=False, highlight=False)
            if len(self.train_base) < self.batch_size:
                raise SwinzooError(f"{self.data} has {len(self.train_base)} training images, fewer than one batch "
                                   f"of {self.batch_size}; lower --batch-size")
        return list(self.train_base.classes)

    @property
    def classes(self) -> list[str]:
        return self.check()

    def setup(self, stage: str | None = None) -> None:
        self.check()

    def train_dataloader(self) -> DataLoader:
        r = self.recipe
        stats = Preprocess.of(self.config) if self.config is not None else Preprocess()
        tf = train_transform(self.res, r.crop_scale, r.rand_augment, r.random_erasing, r.hflip, stats.mean, stats.std)
        return ResumableLoader(TransformedDataset(self.train_base, tf), self.batch_size,
                               loader_workers(self.num_workers, self.trainer), r.seed, self.trainer,
                               pin_memory=torch.cuda.is_available())

    def val_dataloader(self) -> DataLoader:
        workers = loader_workers(self.num_workers, self.trainer)
        if self.config is not None:  # its preprocessing has the recipe's test_crop already
            return eval_loader(self.val_base, self.config, self.batch_size, workers, None)
        return eval_loader(self.val_base, self.res, self.batch_size, workers, self.recipe.test_crop)


def eval_loader(base: Dataset, res: int | SwinConfig, batch_size: int, num_workers: int,
                test_crop: bool | None) -> DataLoader:
    return DataLoader(TransformedDataset(base, eval_transform(res, test_crop)), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers, persistent_workers=num_workers > 0)
