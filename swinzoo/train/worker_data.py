"""The datasets a DataLoader worker reads: image folders, a labelled subset, the seeded transforms, SimMIM's image
lists. Under the start methods other than fork (spawn on macOS and Windows, forkserver on Linux from Python 3.14)
each worker is a fresh interpreter that imports what unpickling its dataset takes; this module and those it imports
stay clear of Lightning (the data modules' `data`, `simmim_data`), which would add about as much start-up again
to every worker of every loader."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from swinzoo.errors import SwinzooError
from swinzoo.preprocess import to_rgb
from swinzoo.train.file_list import IMAGE_SUFFIXES, FileList
from swinzoo.train.hf_data import FLAGS, carve
from swinzoo.train.image_check import check_images
from swinzoo.train.rng import SeededSamples
from swinzoo.train.shapes import ShapesDataset


class TransformedDataset(SeededSamples):
    """(sample, label) pairs of `base` with `transform` applied to the sample; a key (index, seed, epoch) seeds the
    transform's random draws (`rng.SeededSamples`)."""

    def __init__(self, base: Dataset, transform) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def sample(self, index: int):
        image, label = self.base[index]
        return self.transform(image), label


class ImageFolderSplit(Dataset):
    """One split (`root/train` or `root/val`) of a class-per-folder image tree, checked up front. `files` and
    `labels` (an int64 array) hold the images (no Python object per image: `file_list`); `samples` reads them
    as torchvision's ImageFolder has them, (path, label) pairs."""

    def __init__(self, root: Path, classes: list[str] | None = None, check: bool = True) -> None:
        if not root.is_dir():
            raise SwinzooError(f"data folder {root} does not exist; --data needs train/ and val/ folders with one "
                               "sub-folder of images per class")
        found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not found:
            raise SwinzooError(f"data folder {root} has no class folders; put each class's images in {root}/<class>/")
        if classes is not None and found != classes:
            raise SwinzooError(f"{root} has classes {found} but the train split has {classes}; use the same folders")
        self.root, self.classes = root, found
        self.files, counts = FileList(), []
        for name in found:
            # sub-folders too, as torchvision's ImageFolder reads them
            counts.append(self.files.add_tree(root / name, IMAGE_SUFFIXES))
            if not counts[-1]:
                raise SwinzooError(f"class folder {root / name} has no images ({', '.join(IMAGE_SUFFIXES)}); "
                                   "add images or remove the folder")
        self.labels = np.repeat(np.arange(len(found), dtype=np.int64), counts)
        if check:  # else the caller checks them, e.g. with the other split's, to count every bad image at once
            check_images(self.files, str(root))

    @property
    def samples(self) -> Sequence[tuple[Path, int]]:
        return Pairs(self.files, self.labels)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path, label = self.files[index], int(self.labels[index])
        try:
            with Image.open(path) as im:
                return to_rgb(im, str(path)), label
        except (OSError, UnidentifiedImageError) as e:
            raise SwinzooError(f"{path} is not a readable image ({e}); remove or replace it") from None


class Pairs(Sequence):
    """(file, label) of each image of a split, made as they are read."""

    def __init__(self, files: FileList, labels: np.ndarray) -> None:
        self.files, self.labels = files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.files[index], int(self.labels[index])


class LabelBudget(Dataset):
    """`fraction` of a training split, stratified by class and drawn from `seed` only (`hf_data.carve`): the same
    images on every run, resume and rank, every class in proportion. Has the split's `.classes`."""

    def __init__(self, base: Dataset, fraction: float, seed: int) -> None:
        labels = split_labels(base)
        _, self.rows = carve(labels, fraction, seed)
        self.base, self.classes = base, base.classes
        self.description = (f"{FLAGS['train_fraction']} {fraction:g}: {len(self.rows)} of {len(labels)} training "
                            f"images, stratified by class, split seed {seed}")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        return self.base[int(self.rows[index])]


def split_labels(base: Dataset) -> np.ndarray:
    """The class of every item of a split, without decoding its images."""
    if isinstance(base, ShapesDataset):
        return np.arange(len(base)) % len(base.classes)
    if isinstance(base, LabelBudget):
        return split_labels(base.base)[base.rows]
    return base.labels.copy()  # an image folder's, or an hf: split's (read when it opened)


class ImageFiles(Dataset):
    """A list of image files; item = the RGB image (no label)."""

    def __init__(self, files: FileList, description: str) -> None:
        self.files, self.description = files, description

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path = self.files[index]
        try:
            with Image.open(path) as im:
                return to_rgb(im, str(path))
        except (OSError, UnidentifiedImageError) as e:
            raise SwinzooError(f"{path} is not a readable image ({e}); remove or replace it") from None


class Unlabelled(Dataset):
    """The images of a labelled dataset ((image, label) items), labels dropped."""

    def __init__(self, base: Dataset) -> None:
        self.base = base
        self.description = getattr(base, "description", None)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        return self.base[index][0]


class Transformed(SeededSamples):
    """`base`'s images with `transform` applied; a key (index, seed, epoch) seeds its random draws."""

    def __init__(self, base: Dataset, transform) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def sample(self, index: int):
        return self.transform(self.base[index])
