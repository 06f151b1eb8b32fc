"""What grows with the data: listing an image folder (reads, stats, objects held per image), checks repeated per
process. Counted, not timed; the folders are small and their files empty where only listing is involved."""

import gc
import os
from collections import Counter
from pathlib import Path

import pytest

from swinzoo.train import data, simmim_data
from swinzoo.train.data import ImageFolderSplit
from swinzoo.train.file_list import IMAGE_SUFFIXES


def empty_files(folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")


def awkward_tree(root: Path, per_class: int = 40) -> None:
    """Two classes of `per_class` flat files, plus what the order and the filter must get right: a sub-folder whose
    name sorts against a file's ("a" / "a-b.png" / "a.png"), upper-case and non-image suffixes, a hidden file, a
    name that is only a suffix, symlinks to a file, to a folder (followed, as torchvision's ImageFolder follows it)
    and to nothing (listed, as ImageFolder lists it)."""
    for label in ("cat", "dog"):
        empty_files(root / label, [f"{i:03d}.jpg" for i in range(per_class)])
    empty_files(root / "dog", ["a-b.png", "a.png", "a/z.png", "a/b/c.JPEG", "B.PNG", "notes.txt", ".hidden.png",
                               ".png", "x.png.", "sub.webp/inner.bmp"])
    (root / "dog" / "link.png").symlink_to(root / "cat" / "000.jpg")
    (root / "dog" / "linked_dir").symlink_to(root / "cat", target_is_directory=True)
    (root / "dog" / "broken.png").symlink_to(root / "nowhere.png")


def pathlib_listing(folder: Path) -> list[Path]:
    """The files a class folder holds: those torchvision's ImageFolder lists (os.walk following symlinks) that are
    files or symlinks (to nothing too), in the order of sorted pathlib Paths (the order swinzoo has always had). The
    reference order and filter."""
    walked = (Path(top, name) for top, _, names in os.walk(folder, followlinks=True) for name in names)
    return sorted(p for p in walked if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or p.is_symlink()))


def counting_os(monkeypatch, name: str) -> Counter:
    """Count calls of os.NAME by their first argument (a path)."""
    calls, real = Counter(), getattr(os, name)

    def wrapper(path, *args, **kwargs):
        calls[os.fspath(path)] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, name, wrapper)
    return calls


def test_a_split_lists_each_folder_once_without_a_stat_per_file(tmp_path, monkeypatch):
    """ImageNet's train split is 1.28M files in 1000 folders: a stat() per file (a round trip each on a network file
    system) or a second read of each folder is most of the listing's time. The order and the files kept are
    pathlib's (sorted paths), so a run's sample indices do not change."""
    awkward_tree(tmp_path / "train")
    expected = [(p, label) for label, c in enumerate(("cat", "dog")) for p in pathlib_listing(tmp_path / "train" / c)]
    stats, scans = counting_os(monkeypatch, "stat"), counting_os(monkeypatch, "scandir")
    split = ImageFolderSplit(tmp_path / "train", check=False)
    assert [(Path(p), label) for p, label in split.samples] == expected
    assert len(split) == len(expected) and split.classes == ["cat", "dog"]
    assert split.samples[len(expected) - 1] == expected[-1]
    assert sum(stats.values()) < 10, stats.most_common(3)  # the class folders and the symlinks, not each file
    assert max(scans.values()) == 1, scans.most_common(3)


def test_a_split_holds_no_python_objects_per_image(tmp_path):
    """A path object and a tuple per image is ~450 bytes (560 MB for ImageNet's train split, in every DDP rank),
    and a DataLoader worker reading the samples touches their reference counts, so each worker (fork) copies the
    pages they are on. The list is a few arrays whatever its length."""
    empty_files(tmp_path / "warm" / "a", ["0.png"])
    ImageFolderSplit(tmp_path / "warm", check=False)  # first-call imports and caches out of the count
    for label in range(4):
        empty_files(tmp_path / "train" / f"c{label}", [f"{i}.png" for i in range(100)])
    gc.collect()
    before = len(gc.get_objects())
    split = ImageFolderSplit(tmp_path / "train", check=False)
    gc.collect()
    assert len(gc.get_objects()) - before < 50
    assert len(split) == 400


def test_pretraining_data_lists_each_folder_once(tmp_path, monkeypatch):
    """`swinzoo pretrain --data DIR` with train/ and val/: val/ was listed twice (once to see that it holds
    images, once to read them)."""
    empty_files(tmp_path / "train" / "a", [f"{i}.png" for i in range(6)])
    empty_files(tmp_path / "val", ["x/0.png", "x/1.jpg", ".skip/2.png"])
    monkeypatch.setattr(simmim_data, "check_images", lambda *a, **k: None)  # empty files: listing only
    scans = counting_os(monkeypatch, "scandir")
    train, val = simmim_data.open_folder(tmp_path)
    assert [Path(p) for p in val.files] == [tmp_path / "val" / "x" / "0.png", tmp_path / "val" / "x" / "1.jpg"]
    assert len(train) == 6 and max(scans.values()) == 1, scans.most_common(3)


@pytest.mark.parametrize("skip_hidden", [False, True])
def test_listing_order_matches_pathlib_in_a_deep_tree(tmp_path, skip_hidden):
    """Folders and files interleaved at several depths, names that sort differently as whole paths than as parts
    ("a/..." against "a-b", "a.b"): the order of sorted pathlib paths, hidden parts skipped where asked."""
    names = ["a-b.png", "a.b.png", "a/0.png", "a/a/0.png", "a/a-b/0.png", "a0.png", "A.png", ".h/0.png", "a/.x.png",
             "z/y/x/w.png", "é.png"]
    empty_files(tmp_path / "d", names)
    got = [Path(p) for p in simmim_data.images_under(tmp_path / "d")] if skip_hidden else \
        [p for p, _ in ImageFolderSplit(tmp_path, check=False).samples]
    want = pathlib_listing(tmp_path / "d")
    if skip_hidden:
        want = [p for p in want if not any(part.startswith(".") for part in p.relative_to(tmp_path / "d").parts)]
    assert got == want


def test_split_labels_come_without_reading_the_samples(tmp_path):
    empty_files(tmp_path / "train" / "a", ["0.png", "1.png"])
    empty_files(tmp_path / "train" / "b", ["0.png"])
    split = ImageFolderSplit(tmp_path / "train", check=False)
    assert data.split_labels(split).tolist() == [0, 0, 1]


@pytest.fixture
def environ():
    """os.environ as it was, after the test (the code under test writes to it, as a launcher's parent does)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_ddp_processes_that_rank_zero_started_do_not_decode_the_images_again(tmp_path, monkeypatch, environ):
    """Lightning's DDP launcher runs the command again in each other process once rank zero has planned the run,
    every image decoded: on ImageNet that is about a minute of 16 cores, so 8 GPUs would spend 7 more minutes
    decoding what rank zero checked. Rank zero checks each time; a rank no rank zero started (torchrun) checks."""
    from lightning.pytorch.utilities import rank_zero_only
    from PIL import Image

    from swinzoo.train import image_check
    from swinzoo.train.data import SwinDataModule

    for split, n in (("train", 3), ("val", 1)):
        for colour in ("red", "blue"):
            (tmp_path / split / colour).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8 + i), colour).save(tmp_path / split / colour / f"{i}.png")
    decoded, real = [], image_check.image_problem
    monkeypatch.setattr(image_check, "image_problem", lambda p: (decoded.append(p), real(p))[1])
    # records of passed checks cannot be written there (not a folder): the launcher's channel alone
    monkeypatch.setenv("SWINZOO_CACHE", str(tmp_path / "train" / "red" / "0.png"))
    launcher_env = dict(os.environ)

    def check(rank: int) -> int:
        monkeypatch.setattr(rank_zero_only, "rank", rank)
        decoded.clear()
        assert SwinDataModule(str(tmp_path), 64, 2, num_workers=0).check() == ["blue", "red"]
        return len(decoded)

    assert check(0) == 8
    assert check(1) == 0  # started by rank zero: inherits its environment
    assert check(0) == 8  # rank zero (a library user's second run) checks again
    os.environ.clear()
    os.environ.update(launcher_env)
    assert check(1) == 8  # torchrun: every rank starts at once


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # torch counts this machine's CPUs, not 16
@pytest.mark.parametrize("module", ["finetune", "pretrain"])
def test_default_loader_workers_share_the_cpus_among_the_nodes_devices(tmp_path, monkeypatch, module):
    """--num-workers is per device (per DDP process): "half the CPUs" each, 8 GPUs on a 16-core node would run 64
    loader processes (and 64 more for validation). The default shares half the node's CPUs among its devices."""
    import lightning as L
    from PIL import Image

    from swinzoo.train.data import SwinDataModule
    from swinzoo.train.simmim_data import SimMIMDataModule

    for split in ("train", "val"):
        for colour in ("red", "blue"):
            (tmp_path / split / colour).mkdir(parents=True)
            Image.new("RGB", (8, 8), colour).save(tmp_path / split / colour / "0.png")
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    make = SwinDataModule if module == "finetune" else SimMIMDataModule
    workers = {}
    for devices in (1, 4):
        trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                            logger=False, enable_progress_bar=False, enable_checkpointing=False)
        dm = make(str(tmp_path), 64, 2, num_workers=None)
        dm.trainer = trainer
        dm.check()
        loaders = (dm.train_dataloader(), dm.val_dataloader())
        workers[devices] = [loader.num_workers for loader in loaders]
        dm = make(str(tmp_path), 64, 2, num_workers=3)
        dm.trainer = trainer
        dm.check()
        assert dm.train_dataloader().num_workers == dm.val_dataloader().num_workers == 3
    assert workers == {1: [8, 8], 4: [2, 2]}


def test_the_training_process_draws_no_seed_per_image(monkeypatch):
    """Each image's augmentation seed (`rng.stream_seed`, ~15 us) is drawn where the image is loaded, in a loader
    worker, not by the sampler in the training process, which feeds the device between steps: 1.28M per ImageNet
    epoch. The image is the one drawn from that seed."""
    import torch

    from swinzoo.train import rng, sampling

    class Noise(rng.SeededSamples):
        def __len__(self) -> int:
            return 10

        def sample(self, index: int):
            return index, torch.rand(2)

    drawn = []
    for owner in (rng, sampling):
        real = rng.stream_seed
        monkeypatch.setattr(owner, "stream_seed", lambda *e, real=real: (drawn.append(e), real(*e))[1], raising=False)
    order = sampling.EpochOrder(Noise(), 1, 0, seed=7)
    order.set_epoch(3)
    keys = list(order)
    assert len(keys) == 10 and not drawn
    for key in keys[:3]:
        index, noise = Noise()[key]
        with rng.seeded(rng.stream_seed(7, rng.AUGMENT_STREAM, 3, index)):
            assert torch.equal(noise, torch.rand(2))


def test_a_file_list_reads_back_what_it_holds(tmp_path):
    from swinzoo.train.file_list import FileList

    paths = [tmp_path / "a.png", Path("rel/é.jpg"), Path(os.fsdecode(b"/x/\xff.png")), tmp_path / "b c.png"]
    files = FileList(paths)
    assert list(files) == paths and files[-1] == paths[-1] and files[1:3] == paths[1:3]
    assert list(files.take([3, 0])) == [paths[3], paths[0]]
    assert list(files + files.take([2])) == [*paths, paths[2]] and list(FileList() + files) == paths
    with pytest.raises(IndexError):
        files[4]


def test_unchanged_images_that_passed_are_not_decoded_again(tmp_path, monkeypatch):
    """A resumed ImageNet run, or the next run of a sweep on the same folder, decoded all 1.28M images again (about
    a minute of 16 cores, ten of two) to learn what the last check learned. A passed check is recorded under every
    file's size, times and inode, so an unchanged set costs a stat() per file; any change, a bad image, or a cache
    that cannot be written, and every image is decoded."""
    from PIL import Image

    from swinzoo.errors import SwinzooError
    from swinzoo.train import image_check

    monkeypatch.setenv("SWINZOO_CACHE", str(tmp_path / "cache"))
    for colour in ("red", "blue"):
        (tmp_path / "train" / colour).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8 + i), colour).save(tmp_path / "train" / colour / f"{i}.png")
    decoded, real = [], image_check.image_problem
    monkeypatch.setattr(image_check, "image_problem", lambda p: (decoded.append(p), real(p))[1])

    def decodes() -> int:
        decoded.clear()
        ImageFolderSplit(tmp_path / "train")
        return len(decoded)

    assert decodes() == 4
    assert decodes() == 0
    Image.new("RGB", (9, 9), "red").save(tmp_path / "train" / "red" / "0.png")  # rewritten in place
    assert decodes() == 4
    assert decodes() == 0
    (tmp_path / "train" / "red" / "1.png").write_bytes(b"not a png")
    for _ in range(2):  # a failed check is not recorded
        with pytest.raises(SwinzooError, match="1.png is not a readable image"):
            decodes()
        assert len(decoded) == 4
    Image.new("RGB", (8, 8), "red").save(tmp_path / "train" / "red" / "1.png")
    assert decodes() == 4
    monkeypatch.setenv("SWINZOO_CACHE", str(tmp_path / "train" / "red" / "0.png"))  # not a folder: nothing recorded
    assert decodes() == 4
    assert decodes() == 4


def test_an_unreadable_image_check_cache_is_no_error(tmp_path, monkeypatch):
    """The record of a passed check only saves time: a cache folder this user cannot look into (a container run as
    another user, HOME=/root, /root 0700) made the run fail with a PermissionError (exit 1) from looking the record
    up; the images are checked instead. Path.exists is patched: as root, chmod would not stop the look-up."""
    import pathlib

    from PIL import Image

    from swinzoo.train import image_check

    cache = tmp_path / "cache"
    monkeypatch.setenv("SWINZOO_CACHE", str(cache))
    (tmp_path / "train" / "red").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(tmp_path / "train" / "red" / "0.png")
    real_exists = pathlib.Path.exists

    def exists(self, *args, **kwargs):
        if str(self).startswith(str(cache)):
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "exists", exists)
    decoded, real = [], image_check.image_problem
    monkeypatch.setattr(image_check, "image_problem", lambda p: (decoded.append(p), real(p))[1])
    assert len(ImageFolderSplit(tmp_path / "train")) == 1
    assert len(decoded) == 1


def test_a_loader_worker_does_not_save_and_restore_the_global_generators(monkeypatch):
    """Each training image is augmented under `seeded`, which put numpy's and Python's global generators back
    after it: ~100 us an image (numpy's 624-word state to a tuple and back), 5-7% of a loader worker's time for
    the official augmentation, to keep states that in a worker nothing else reads. The main process (0 workers,
    the training step) still gets its generators back (test_rand_augment)."""
    import random

    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from swinzoo.train import rng

    class Draws(rng.SeededSamples):
        def __len__(self) -> int:
            return 4

        def sample(self, index: int):
            return random.random(), float(np.random.rand()), float(torch.rand(()))

    saves = []
    for module, name in ((np.random, "get_state"), (random, "getstate")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, real=real, name=name: (saves.append(name), real(*a))[1])
    class CountingSaves(Draws):
        def __getitem__(self, key):
            saves.clear()  # this worker's copy of the list
            return super().__getitem__(key), len(saves)

    keys = [(i, 7, 0) for i in range(4)]
    in_workers = [(tuple(float(v) for v in row), n) for row, n in DataLoader(
        CountingSaves(), batch_size=None, sampler=keys, num_workers=2)]
    assert [n for _, n in in_workers] == [0, 0, 0, 0]
    assert [row for row, _ in in_workers] == [Draws()[k] for k in keys]  # the same draws as in this process
    assert saves  # here, the states were saved (and put back)


def test_records_of_passed_checks_not_used_for_months_are_removed(tmp_path, monkeypatch):
    """Each passed check leaves a record (one per state of a data folder): a sweep over many folders, or a folder
    that changes every day, added files to the cache for ever. A record read again is kept fresh; writing a new one
    removes those unused for RECORD_KEEP_DAYS."""
    import time

    from PIL import Image

    from swinzoo.train import image_check

    monkeypatch.setenv("SWINZOO_CACHE", str(tmp_path / "cache"))
    records = tmp_path / "cache" / "checked-images"
    (tmp_path / "train" / "red").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(tmp_path / "train" / "red" / "0.png")
    ImageFolderSplit(tmp_path / "train")
    (kept,) = records.iterdir()
    months_ago = time.time() - (image_check.RECORD_KEEP_DAYS + 1) * 86400
    stale = records / ("0" * 64)
    stale.write_text("1 images in elsewhere\n")
    os.utime(stale, (months_ago, months_ago))
    os.utime(kept, (months_ago, months_ago))
    ImageFolderSplit(tmp_path / "train")  # read again: fresh
    assert kept.stat().st_mtime > months_ago + 86400
    Image.new("RGB", (8, 8), "red").save(tmp_path / "train" / "red" / "1.png")
    ImageFolderSplit(tmp_path / "train")  # a new record: the stale one goes
    assert not stale.exists() and kept.exists() and len(list(records.iterdir())) == 2


def test_macos_metadata_files_are_named_as_such(tmp_path, monkeypatch):
    """A dataset copied from a Mac to a FAT/exFAT drive or over SMB holds a `._name.jpg` beside every image: resource
    forks, not images. The bad-image error named the first and said "remove or replace it", one at a time for
    thousands; it now says what they are and how to remove them all."""
    from PIL import Image

    from swinzoo.errors import SwinzooError

    monkeypatch.setenv("SWINZOO_CACHE", str(tmp_path / "cache"))
    (tmp_path / "train" / "red").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(tmp_path / "train" / "red" / "0.jpg")
    (tmp_path / "train" / "red" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    with pytest.raises(SwinzooError, match=r"macOS metadata.*find .*train -name '\._\*' -delete") as raised:
        ImageFolderSplit(tmp_path / "train")
    assert "\n" not in str(raised.value)
    (tmp_path / "train" / "red" / "._0.jpg").unlink()
    (tmp_path / "train" / "red" / "1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SwinzooError) as raised:
        ImageFolderSplit(tmp_path / "train")
    assert "macOS" not in str(raised.value)
