"""Real-world image files read as the official pipeline reads them: torchvision's ImageFolder (its listing and its
loader, PIL's `Image.open(f).convert("RGB")`, no EXIF rotation) and the official test transform (data/build.py, v1
on PIL), compared bit for bit with what `swinzoo eval` / `finetune` (a data folder) and `predict` read."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets
from torchvision import transforms as v1

from swinzoo.config import IMAGENET_MEAN, IMAGENET_STD
from swinzoo.errors import SwinzooError
from swinzoo.prediction import read_image
from swinzoo.train.data import ImageFolderSplit, eval_transform

RES = 64


def official_transform(res: int = RES) -> v1.Compose:
    """The official test transform below 384 px (data/build.py, TEST.CROP)."""
    return v1.Compose([v1.Resize(int((256 / 224) * res), interpolation=v1.InterpolationMode.BICUBIC),
                       v1.CenterCrop(res), v1.ToTensor(), v1.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def noise(w: int = 40, h: int = 30, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def every_kind(folder: Path) -> None:
    """One file of each kind a real folder holds: every PIL mode an 8-bit file opens as, EXIF-rotated, tiny and
    very wide images, upper-case suffixes, each format torchvision lists, an awkward name."""
    folder.mkdir(parents=True, exist_ok=True)
    rgba = np.asarray(noise(seed=1).convert("RGBA")).copy()
    rgba[..., 3] = np.random.default_rng(2).integers(0, 256, rgba.shape[:2])
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90": ImageFolder does not apply it, nor does swinzoo
    files = {"l.png": noise(seed=3).convert("L"), "la.png": noise(seed=4).convert("LA"),
             "p.png": noise(seed=5).convert("P"), "rgba.png": Image.fromarray(rgba),
             "1.png": noise(seed=6).convert("1"),
             "tiny.png": noise(10, 7, seed=7), "wide.png": noise(4000, 20, seed=8), "x.webp": noise(seed=9),
             "x.bmp": noise(seed=10), "x.tif": noise(seed=11), "with space ünï 日本.png": noise(seed=12)}
    for name, image in files.items():
        image.save(folder / name, **({"lossless": True} if name.endswith(".webp") else {}))
    noise(seed=13).convert("P").save(folder / "p_index_transparent.png", transparency=3)
    noise(seed=14).convert("P").save(folder / "p_bytes_transparent.png", transparency=bytes(range(256)))
    noise(seed=15).convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    noise(seed=16).save(folder / "rotated.jpg", exif=exif, quality=90)
    noise(seed=17).save(folder / "UPPER.JPG", format="JPEG")
    noise(seed=18).save(folder / "UPPER.JPEG", format="JPEG")
    noise(seed=19).save(folder / "UPPER.PNG", format="PNG")


def same_as_image_folder(root: Path) -> None:
    """The split at `root` holds ImageFolder's images, labels and classes, and reads each as ImageFolder + the
    official transform does, bit for bit (the order is swinzoo's own, kept for runs' sample indices)."""
    theirs = datasets.ImageFolder(str(root), transform=official_transform())
    ours = ImageFolderSplit(root)
    assert ours.classes == theirs.classes
    assert sorted((str(p), label) for p, label in ours.samples) == sorted(theirs.samples)
    index = {str(p): i for i, (p, _) in enumerate(ours.samples)}
    transform = eval_transform(RES)
    for i, (path, label) in enumerate(theirs.samples):
        want, _ = theirs[i]
        image, got_label = ours[index[path]]
        assert got_label == label
        torch.testing.assert_close(transform(image), want, rtol=0, atol=0, msg=path)
        torch.testing.assert_close(read_image(path, transform), want, rtol=0, atol=0, msg=path)  # predict's read


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")  # PIL's advice, given to ImageFolder too
def test_every_kind_of_file_reads_as_image_folder_reads_it(tmp_path):
    every_kind(tmp_path / "val" / "a")
    nested = tmp_path / "val" / "b" / "nested"  # a class folder's sub-folders are read too
    nested.mkdir(parents=True)
    noise(seed=20).save(nested / "x.png")
    same_as_image_folder(tmp_path / "val")


def test_symlinked_files_class_folders_and_sub_folders_are_read_as_image_folder_reads_them(tmp_path):
    """ImageFolder follows every symlink (os.walk(followlinks=True)): a linked file, a linked class folder and a
    linked folder inside a class folder are all read."""
    store = tmp_path / "store"
    for name in ("file", "class", "sub"):
        (store / name).mkdir(parents=True)
        noise(seed=len(name)).save(store / name / f"{name}.png")
    (tmp_path / "val" / "a").mkdir(parents=True)
    noise(seed=30).save(tmp_path / "val" / "a" / "own.png")
    (tmp_path / "val" / "a" / "linked.png").symlink_to(store / "file" / "file.png")
    (tmp_path / "val" / "a" / "linked_sub").symlink_to(store / "sub", target_is_directory=True)
    (tmp_path / "val" / "b").symlink_to(store / "class", target_is_directory=True)
    same_as_image_folder(tmp_path / "val")
    assert len(ImageFolderSplit(tmp_path / "val")) == 4


def test_a_symlink_loop_is_entered_once(tmp_path):
    """A folder linked into itself, or two folders linked into each other: ImageFolder walks them until the OS
    refuses the path (dozens of copies of each image); swinzoo reads each image once by each path that does not
    lead back into a folder it is already in."""
    a, b = tmp_path / "val" / "a", tmp_path / "val" / "b"
    for folder in (a, b):
        folder.mkdir(parents=True)
        noise(seed=len(folder.name)).save(folder / "0.png")
    (a / "self").symlink_to(a, target_is_directory=True)
    (a / "to_b").symlink_to(b, target_is_directory=True)
    (b / "to_a").symlink_to(a, target_is_directory=True)
    split = ImageFolderSplit(tmp_path / "val")
    assert sorted(os.path.relpath(p, tmp_path / "val") for p in split.files) == [
        "a/0.png", "a/to_b/0.png", "b/0.png", "b/to_a/0.png"]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_a_file_with_the_wrong_suffix_reads_by_its_content(tmp_path, mode):
    """PIL reads the format from the bytes, as ImageFolder does: a PNG named .jpg is the same image."""
    (tmp_path / "val" / "a").mkdir(parents=True)
    noise(seed=40).convert(mode).save(tmp_path / "val" / "a" / "png_inside.jpg", format="PNG")
    same_as_image_folder(tmp_path / "val")


def test_a_broken_symlink_stops_the_run_with_its_name(tmp_path):
    """ImageFolder lists a symlink whose target is gone (and fails when it reads it, mid-run); swinzoo left it out
    without a word, a smaller dataset than the folder shows. It is named up front, as any unreadable file is."""
    (tmp_path / "val" / "a").mkdir(parents=True)
    noise().save(tmp_path / "val" / "a" / "0.png")
    (tmp_path / "val" / "a" / "gone.png").symlink_to(tmp_path / "moved" / "gone.png")
    assert sorted(p for p, _ in datasets.ImageFolder(str(tmp_path / "val")).samples)[-1].endswith("gone.png")
    with pytest.raises(SwinzooError) as e:
        ImageFolderSplit(tmp_path / "val")
    message = str(e.value)
    assert "val/a/gone.png is not a readable image" in message and "remove or replace it" in message, message


def test_what_macos_and_notebooks_leave_behind(tmp_path):
    """A `.ipynb_checkpoints` folder is not a class (ImageFolder would make it one; docs/finetune.md says it is
    skipped); `.DS_Store` has no image suffix and is not listed; an AppleDouble `._x.jpg` has one and is not an
    image: it stops the run, named as what it is, with the command removing them all (ImageFolder fails on it
    mid-run)."""
    for name in ("a", "b", ".ipynb_checkpoints"):
        (tmp_path / "val" / name).mkdir(parents=True)
        noise().save(tmp_path / "val" / name / "x.jpg")
    (tmp_path / "val" / "a" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + bytes(64))
    split = ImageFolderSplit(tmp_path / "val")
    assert split.classes == ["a", "b"] and len(split) == 2
    (tmp_path / "val" / "b" / "._x.jpg").write_bytes(b"\0\5\26\7\0\2\0\0Mac OS X        " + bytes(64))
    with pytest.raises(SwinzooError, match=r"val/b/\._x\.jpg is macOS metadata .*-name '\._\*' -delete"):
        ImageFolderSplit(tmp_path / "val")
