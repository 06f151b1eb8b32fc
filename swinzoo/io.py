"""File primitives every format shares: atomic writes, safe torch.load, safetensors and small JSON files reading.

Nothing here knows a key layout; `converters/` does. Writes go to a temporary name beside the target and are
renamed onto it only when complete, so a failed or interrupted write never leaves a half-written output.
"""

from __future__ import annotations

import errno
import glob
import os
import pickle
import re
import secrets
import shutil
import stat
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from swinzoo.errors import SwinzooError
from swinzoo.file_kinds import GENERIC_FIX, not_a_checkpoint, read_head
from swinzoo.hard_stop import on_hard_stop
from swinzoo.pickled_configs import objects_needing_trust, torch_load

# ---------------------------------------------------------------------------------------------- atomic writes
# Temporary outputs are named `.NAME.swinzoo-tmp-PID-XXXXXX` beside their target: recognisable, so that a later
# write to the same target removes those a killed process (SIGKILL, power loss) left behind.
TMP_TAG = "swinzoo-tmp"


def _temp_beside(path: Path) -> Path:
    return path.parent / f".{path.name}.{TMP_TAG}-{os.getpid()}-{secrets.token_hex(3)}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files and folders that dead swinzoo processes left beside `path`; return them."""
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.{TMP_TAG}-*"):
        try:
            pid = int(tmp.name.rsplit(f".{TMP_TAG}-", 1)[1].split("-")[0])
        except ValueError:
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p `folder`; the folders it created, deepest first (removed again when the write fails)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    if folder.is_file():
        raise SwinzooError(f"{folder} is a file, not a folder; choose another output path")
    for f in reversed(missing):
        f.mkdir()
    return missing


def _as_new_file(path: Path) -> None:
    """Permissions of a freshly created file under the umask: libraries that write through their own temporary
    files (safetensors) leave 0600, which other users and tools then cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one existing file or folder, however spelt (relative, absolute, through a link)."""
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def check_file_output(path: str | Path, example: str = "model.safetensors") -> Path:
    """`path` as a Path, if a rename can make it a regular file: not a folder, a link, a device or a FIFO. The
    checks `atomic_path` makes; a command with long work before its write makes them first."""
    if str(path).endswith(("/", os.sep)):
        raise SwinzooError(f"{path} names a folder; give a file name (e.g. {Path(path) / example})")
    path = Path(path)
    if path.is_dir():
        raise SwinzooError(f"{path} is a folder; give a file name (e.g. {path / example})")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        # the rename would replace the link or the device / FIFO itself (as root, /dev/null with a regular file)
        kind = "a link" if path.is_symlink() else "not a regular file"
        raise SwinzooError(f"{path} is {kind}; give the path of a regular file to write")
    check_writable_folder(path)
    return path


def check_writable_folder(path: Path) -> None:
    """The folder `path` would be written in (its nearest existing ancestor, when the rest is to be made) a folder
    this process can write: else one line now, not after the work whose result it would hold."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SwinzooError(f"{parent} is a file, not a folder; choose another output path")
    # a folder made and removed, as os.access is not enough (root, read-only mounts, ACLs); named as a temporary of
    # `path`, so that one a kill leaves is removed by the next write there
    probe = None
    try:
        probe = tempfile.mkdtemp(prefix=f".{path.name}.{TMP_TAG}-{os.getpid()}-", dir=parent)
    except OSError as e:
        raise SwinzooError(f"cannot write in {parent} ({e.strerror or e}); choose an output path in a folder you can "
                           "write") from None
    finally:
        if probe:
            os.rmdir(probe)


def check_new_file(path: str | Path, overwrite: bool = False, example: str = "model.safetensors") -> Path:
    """`check_file_output`, and an existing file refused unless `overwrite`: a command never changes a file it
    did not write unless told to."""
    path = check_file_output(path, example)
    if path.exists() and not overwrite:
        raise SwinzooError(f"{path} exists; pass --overwrite to replace it, or choose another output")
    return path


# a filesystem without hard links (FAT, exFAT, some network mounts) says so with one of these
NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EXDEV}


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """`tmp` as `path`. Not `overwrite`: a hard link, which unlike a rename fails when `path` exists, so that of
    writers racing on one new output (checked absent by each, `check_new_file`) one wins and the rest are refused,
    not silently replaced; `tmp` itself goes with its temporary folder."""
    if not overwrite:
        try:
            os.link(tmp, path)
            return
        except FileExistsError:
            raise SwinzooError(f"{path} exists; pass --overwrite to replace it, or choose another output") from None
        except OSError as e:
            if e.errno not in NO_HARD_LINKS:
                raise
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | Path, overwrite: bool = True):
    """Yield a temporary path for `path`; rename it onto `path` only if the block succeeds. Nothing is left
    behind when it fails or is interrupted (SIGTERM included, see `cli.main`); an existing file is replaced, unless
    not `overwrite`: then a file another process made meanwhile is kept, and this write refused (see `_publish`).

    The temporary file sits in a recognisable temporary folder beside `path`, so that the temporaries libraries make
    beside the file they are given (safetensors writes an anonymous `.tmpXXXXXX` and renames it) are inside it
    too, and go with it.
    """
    path = check_file_output(path)
    created = _make_parents(path.parent)
    remove_stale_temps(path)
    folder, ours = _temp_beside(path), True
    try:  # from the making of the folder on: a signal the moment it exists still removes it
        try:
            folder.mkdir()
        except OSError as e:  # name the user's path, not the temporary one
            ours = e.errno != errno.EEXIST
            raise type(e)(e.errno, e.strerror, str(path)) from None
        tmp = folder / path.name
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # umask applies, like any new file
        with on_hard_stop(lambda: shutil.rmtree(folder, ignore_errors=True)):  # a write the signal finds in C++
            yield tmp
        _as_new_file(tmp)
        _publish(tmp, path, overwrite)
        created = []
    finally:  # the temporary first: the folders made for it are empty only once it has gone
        if ours:
            shutil.rmtree(folder, ignore_errors=True)
        _remove_empty(created)


@contextmanager
def atomic_dir(path: str | Path, owned: set[str] | None = None, overwrite: bool = False):
    """Yield a temporary folder beside `path`, filled by the block, that becomes `path` only if the block succeeds.

    `owned` names the files this kind of output consists of. A `path` that holds only those (an earlier output of
    the same kind) has them replaced; one that holds anything else is refused unless `overwrite`, and even then
    only the owned files are replaced: nothing else in the folder is touched.
    """
    path = Path(path)
    owned = set(owned or ())
    if path.is_symlink() and not path.exists():
        raise SwinzooError(f"{path} is a link to {os.readlink(path)}, which does not exist; create that folder, or "
                           "choose another output")
    if path.exists() and not path.is_dir():
        raise SwinzooError(f"{path} exists and is not a folder; choose another output")
    existing = sorted(os.listdir(path)) if path.is_dir() else []
    foreign = [n for n in existing if n not in owned and f".{TMP_TAG}-" not in n]
    if foreign and not overwrite:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise SwinzooError(f"{path} holds files swinzoo did not write ({shown}); choose a new or empty folder, or "
                           f"pass --overwrite to replace only {', '.join(sorted(owned)) or 'its own files'}")
    created = _make_parents(path.parent)
    remove_stale_temps(path)
    tmp, ours = _temp_beside(path), True
    try:  # from the making of the folder on, as in atomic_path
        try:
            tmp.mkdir()
        except OSError as e:  # name the user's path, not the temporary one
            ours = e.errno != errno.EEXIST
            raise type(e)(e.errno, e.strerror, str(path)) from None
        yield tmp
        for child in tmp.iterdir():
            if child.is_file():
                _as_new_file(child)
        if not existing and not path.is_symlink():  # a link to a folder stays: its folder gets the files
            try:
                os.replace(tmp, path)  # a new (or empty) folder: one rename
                created = []
                return
            except OSError as e:  # a concurrent writer made it first: join it if it holds only our kind of files
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                existing = sorted(os.listdir(path))
                if not overwrite and any(n not in owned and f".{TMP_TAG}-" not in n for n in existing):
                    raise SwinzooError(f"{path} was filled by another process while swinzoo wrote it; choose "
                                       "another output") from None
        # an earlier output, or --overwrite: replace our files one by one, leave the rest alone
        written = {child.name for child in tmp.iterdir()}
        for name in sorted(written):
            os.replace(tmp / name, path / name)
        for name in sorted(owned & set(existing) - written):
            (path / name).unlink(missing_ok=True)
        created = []
    finally:  # the temporary first: the folders made for it are empty only once it has gone
        if ours and tmp.exists():
            shutil.rmtree(tmp)
        _remove_empty(created)


def save_torch(obj: object, path: str | Path, overwrite: bool = True) -> Path:
    """torch.save, atomically (`overwrite`: see `atomic_path`); a full disk is one line, not torch's "unexpected
    pos" zip-writer error."""
    with atomic_path(path, overwrite) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:
            if "unexpected pos" in str(e) or "write" in str(e).lower():
                raise OSError(errno.ENOSPC, "could not write the whole file (is the disk full?)", str(path)) from None
            raise
    return Path(path)


@contextmanager
def safetensors_write_errors(path: str | Path):
    """Around safetensors' `save_file`: a failed write (a full disk, an I/O error) comes from it as a
    `SafetensorError`, not an OSError; re-raised as the OSError it is, naming `path`, so that it is reported as the
    disk's problem (exit 1), not as an unexpected error of swinzoo's."""
    try:
        yield
    except SafetensorError as e:
        # "(os error 28)"; safetensors before 0.4.2 wrote Rust's debug form, "IoError(Os { code: 28, ... })"
        found = re.search(r"\(os error (\d+)\)|Os \{ code: (\d+)", str(e))
        if found is None and "I/O error" not in str(e):
            raise
        code = int(found.group(1) or found.group(2)) if found else errno.EIO
        raise OSError(code, os.strerror(code), str(path)) from None


# ---------------------------------------------------------------------------------------------- reading
@contextmanager
def native_path(path: str | Path):
    """`path` as the native readers (safetensors, torch's mmap) open it: they take UTF-8 only, so a path that is not
    (Linux's Latin-1 names, a surrogate in Python) is /dev/fd/N of the file opened here; their mappings outlive it."""
    try:
        str(path).encode("utf-8")
        fd = None
    except UnicodeEncodeError:
        fd = os.open(path, os.O_RDONLY) if os.path.isdir("/dev/fd") else None
    try:
        yield str(path) if fd is None else f"/dev/fd/{fd}"
    finally:
        if fd is not None:
            os.close(fd)


MAX_TEXT_BYTES = 64 * 2**20  # far above any config.json, run.json or metrics.json (21841 label names: ~1 MiB)


def read_small_text(path: str | Path) -> str:
    """The text of a JSON file of a model or run folder, maybe from someone else's archive: a link to /dev/zero or
    a pipe would be read forever, a sparse file of a terabyte whole."""
    st = (path := Path(path)).stat()  # before opening: opening a pipe waits for a writer
    if not stat.S_ISREG(st.st_mode):
        raise SwinzooError(f"{path} is not a regular file (a link to a device or a pipe?); replace it with the file")
    if st.st_size > MAX_TEXT_BYTES:
        raise SwinzooError(f"{path} is {st.st_size // 2**20} MiB, more than a config holds (at most "
                           f"{MAX_TEXT_BYTES // 2**20} MiB); it is corrupt or not a config: replace it")
    return path.read_bytes().decode("utf-8")


def is_safetensors(path: str | Path) -> bool:
    """A safetensors file starts with an 8-byte header length, then the JSON header."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_safetensors(path: str | Path, hint: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file, behind a one-line error: what the file is, where it is recognisably
    something else (a Git LFS pointer, a web page, an archive), else safetensors' own complaint."""
    try:
        with native_path(path) as name, safe_open(name, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        head = read_head(path) if Path(path).is_file() else b""
        other = not_a_checkpoint(path, head) if head else None
        if other is not None and other[1] is not None:  # recognisably something else, with a fix of its own
            raise SwinzooError(f"{path} is not a safetensors file ({other[0]}); {other[1]}") from None
        if other is None and head.startswith((b"PK\x03\x04", b"\x80")):  # what not_a_checkpoint leaves: torch's
            raise SwinzooError(f"{path} is not a safetensors file (it is a torch.save file); rename it to "
                               ".pth") from None
        raise SwinzooError(f"{path} is not a readable safetensors file ({e}){hint}") from None


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file, or {} when it is not one."""
    try:
        with native_path(path) as name, safe_open(name, framework="pt") as f:
            return f.metadata() or {}
    except Exception:  # not safetensors at all: the reader of the detected format reports it properly
        return {}


def load_torch(path: str | Path, trust_checkpoint: bool = False, *, fix: str | None = None,
               mmap: bool = False) -> object:
    """torch.load with weights_only=True unless the user passed --trust-checkpoint; one-line errors, ending in `fix`
    (what to do about a corrupt file) when given. `mmap`: map a zip-format file instead of reading it."""
    path = Path(path)
    if not path.exists():
        raise SwinzooError(f"{path} does not exist; check the path")
    if path.is_dir():
        raise SwinzooError(f"{path} is a folder; give the .pth file inside it")
    head = read_head(path)
    magic = head[:4]
    is_zip = magic == b"PK\x03\x04"  # torch.save's format since 1.6
    then = f"; {fix}" if fix else ""
    other = not_a_checkpoint(path, head)
    if other is not None:  # a zip too, when it is no torch.save archive (a TorchScript program, a plain .zip)
        raise SwinzooError(f"{path} is not a PyTorch checkpoint ({other[0]}); {other[1] or fix or GENERIC_FIX}")
    if not is_zip and not magic.startswith(b"\x80"):
        raise SwinzooError(f"{path} is not a PyTorch checkpoint (it is neither a zip archive nor a pickle); "
                           f"{fix or GENERIC_FIX}")
    try:
        with native_path(path) as name:
            return torch_load(name, trust_checkpoint, mmap=mmap and is_zip)
    except ModuleNotFoundError as e:  # trusted: its classes are imported, and one's package is not here
        raise SwinzooError(f"{path} holds objects of {e.name}, which is not installed: install it first") from None
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower():
            names = objects_needing_trust(path)
            if not names and "unsupported operand" in str(e).lower():  # opcodes of a protocol above 2
                raise SwinzooError(f"{path} was saved with a pickle protocol above 2, which torch's weights-only "
                                   "loader cannot read; if you trust where it came from, pass --trust-checkpoint, or "
                                   "save it again with torch.save's default protocol") from None
            what = f" ({', '.join(names[:3])})" if names else ""
            raise SwinzooError(f"{path} holds Python objects besides tensors and known training configs{what}, which "
                               "loading would run code of; if you trust where it came from, pass --trust-checkpoint "
                               "to load it fully") from None
        raise SwinzooError(f"{path} is not a PyTorch checkpoint ({_first_line(e)}){then}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError):
        # a torch.save file by its first bytes (the zip, or torch's magic number): a failure now is damage (a cut,
        # a storage longer than its bytes)
        what = "an incomplete zip archive" if is_zip else "a torch.save file of the format before torch 1.6"
        raise SwinzooError(f"{path} is truncated or corrupt ({what}); {fix or 'download it again'}") from None


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
