"""The image files of a folder tree, listed in one read of each folder and held without a Python object per file.

ImageNet's train split is 1.28M files. Listed with pathlib (`rglob` then `is_file`) that is a stat() per file (a
round trip each on a network file system) and two reads of every folder; held as a list of paths it is ~450 bytes
of Python objects per file (~560 MB in every DDP rank), whose reference counts each DataLoader worker (fork)
touches as it reads the samples, copying the memory pages they are on. Here a folder is read once with
`os.scandir`, whose entries carry the file type (a stat only for symlinks, and on file systems that report no
type), and the paths are one bytes buffer with their end offsets: the length of the path and 8 bytes per file.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path

# the suffixes torchvision's ImageFolder reads (its IMG_EXTENSIONS)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def suffix(name: str) -> str:
    """`PurePath(name).suffix`: the last dot's extension, none for a name that is only one (".png") or ends in one."""
    i = name.rfind(".")
    return name[i:] if 0 < i < len(name) - 1 else ""


class FileList(Sequence):
    """Paths, as a Sequence of `Path`; `add_tree` appends the files of a folder tree. Slices are lists of Paths."""

    def __init__(self, paths: Iterable[str | os.PathLike] = ()) -> None:
        self._blob, self._ends = bytearray(), array("q")
        for path in paths:
            self._append(os.fspath(path))

    def _append(self, path: str) -> None:
        self._blob += os.fsencode(path)
        self._ends.append(len(self._blob))

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"file {index} of {len(self)}")
        start = self._ends[index - 1] if index else 0
        return Path(os.fsdecode(bytes(self._blob[start : self._ends[index]])))

    def __add__(self, other: FileList) -> FileList:
        joined = FileList()
        joined._blob, joined._ends = self._blob + other._blob, array("q", self._ends)
        joined._ends.extend(end + len(self._blob) for end in other._ends)
        return joined

    def take(self, indices: Iterable[int]) -> FileList:
        """The files at `indices`, in that order."""
        taken = FileList()
        for i in indices:
            i = int(i)
            taken._blob += self._blob[self._ends[i - 1] if i else 0 : self._ends[i]]
            taken._ends.append(len(taken._blob))
        return taken

    def add_tree(self, folder: Path, suffixes: Iterable[str], skip_hidden: bool = False) -> int:
        """Append every file below `folder` whose suffix (lower-cased) is one of `suffixes`, in the order of sorted
        Paths; symlinks to files and to folders are followed, as torchvision's ImageFolder follows them (os.walk with
        followlinks), except a linked folder holding a folder the walk is already in (a loop, which os.walk would
        walk until the OS refuses the path); names starting with "." (and what is below them) skipped when
        `skip_hidden`; a symlink to nothing kept (its reader fails on it). Folders below `folder` that cannot be read
        are skipped, as `rglob` skips them; `folder` itself unreadable raises its PermissionError (else it would read
        as a folder without images). Returns how many were added."""
        suffixes, count = {s.lower() for s in suffixes}, len(self)
        # depth first, each folder's entries by name: sorted Paths compare part by part, and a folder's files come
        # at its name's place among its siblings, so this is their order without holding every path to sort it.
        # Each level also holds its folder and the real paths of the folders its walk left by a symlink (`_loops`)
        root = os.fspath(folder)
        top = self._entries(root, skip_hidden, refused_raises=True)
        pending: list[tuple[list[os.DirEntry], str, tuple[str, ...]]] = [(top, root, ())]
        while pending:
            entries, parent, chain = pending[-1]
            if not entries:
                pending.pop()
                continue
            entry = entries.pop()
            if is_dir(entry):
                if not entry.is_symlink():
                    pending.append((self._entries(entry.path, skip_hidden), entry.path, chain))
                elif (inner := _loops(entry.path, parent, chain)) is not None:
                    pending.append((self._entries(entry.path, skip_hidden), entry.path, inner))
            elif suffix(entry.name).lower() in suffixes and (is_file(entry) or entry.is_symlink()):
                # a link to nothing is kept, as ImageFolder keeps it: the image check names it, where leaving it out
                # would shrink the data without a word
                self._append(entry.path)
        return len(self) - count

    @staticmethod
    def _entries(folder: str, skip_hidden: bool, refused_raises: bool = False) -> list[os.DirEntry]:
        """The entries of `folder`, last name first (taken from the end)."""
        try:
            with os.scandir(folder) as it:
                entries = [e for e in it if not (skip_hidden and e.name.startswith("."))]
        except PermissionError:
            if refused_raises:
                raise
            return []
        except OSError:  # gone since its parent was read
            return []
        return sorted(entries, key=lambda e: e.name, reverse=True)


def _loops(link: str, parent: str, chain: tuple[str, ...]) -> tuple[str, ...] | None:
    """The chain of a walk entering the symlinked folder `link` from `parent` (None when entering would loop): the
    real paths of the folders the walk has left by a symlink, `parent`'s added. Every folder of the walk lies below
    one of them, so a link whose target holds one of them (or is one) leads back into the walk. Only linked folders
    pay for the real paths (a few stats each)."""
    target, here = os.path.realpath(link), os.path.realpath(parent)
    inside = target.rstrip(os.sep) + os.sep
    if any(real == target or real.startswith(inside) for real in (*chain, here)):
        return None
    return (*chain, here)


def is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def files_under(folder: Path, suffixes: Iterable[str], skip_hidden: bool = False) -> FileList:
    """The files below `folder` with one of `suffixes` (`FileList.add_tree`)."""
    files = FileList()
    files.add_tree(folder, suffixes, skip_hidden)
    return files
