"""File primitives every format shares: atomic writes, safe torch.load, safetensors reading, strict state-dict checks.

Nothing here knows a key layout; `converters/` does. Writes go to a temporary name beside the target and are
renamed onto it only when complete, so a failed or interrupted write never leaves a half-written output.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from swinzoo.errors import SwinzooError


# ---------------------------------------------------------------------------------------------- atomic writes
@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should read like any other file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary folder beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise SwinzooError(f"{path} exists and is not a folder; choose another output")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old.{os.getpid()}"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def save_torch(obj: object, path: str | Path) -> Path:
    """torch.save, atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


# ---------------------------------------------------------------------------------------------- reading
def is_safetensors(path: str | Path) -> bool:
    """A safetensors file starts with an 8-byte header length, then the JSON header."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_safetensors(path: str | Path, hint: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file, behind a one-line error."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise SwinzooError(f"{path} is not a readable safetensors file ({e}){hint}") from None


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file, or {} when it is not one."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception:  # not safetensors at all: the reader of the detected format reports it properly
        return {}


def load_torch(path: str | Path, trust_checkpoint: bool = False) -> object:
    """torch.load with weights_only=True unless the user passed --trust-checkpoint; one-line errors."""
    path = Path(path)
    if not path.exists():
        raise SwinzooError(f"{path} does not exist; check the path")
    if path.is_dir():
        raise SwinzooError(f"{path} is a folder; give the .pth file inside it")
    with open(path, "rb") as f:
        magic = f.read(4)
    is_zip = magic == b"PK\x03\x04"  # torch.save's format since 1.6
    if not is_zip and not magic.startswith(b"\x80"):  # nor the legacy pickle format
        raise SwinzooError(f"{path} is not a PyTorch checkpoint (it is neither a zip archive nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower():
            raise SwinzooError(
                f"{path} holds Python objects besides tensors (a training checkpoint with a config object?); "
                "if you trust where it came from, pass --trust-checkpoint to load it fully"
            ) from None
        raise SwinzooError(f"{path} is not a PyTorch checkpoint ({_first_line(e)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        if is_zip:
            msg = f"{path} is truncated or corrupt (an incomplete zip archive); download it again"
            raise SwinzooError(msg) from None
        raise SwinzooError(f"{path} is not a PyTorch checkpoint ({_first_line(e)})") from None


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__


# ---------------------------------------------------------------------------------------------- state dicts
def verify_state_dict(expected: dict[str, tuple], state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Raise a one-line error naming the first unexpected, misshapen or missing key."""
    for key, tensor in state_dict.items():
        if key not in expected:
            raise SwinzooError(f"{source}: unexpected key {key!r} for this architecture")
        if tuple(tensor.shape) != tuple(expected[key]):
            raise SwinzooError(f"{source}: {key} has shape {tuple(tensor.shape)} but the model expects "
                               f"{tuple(expected[key])}")
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise SwinzooError(f"{source}: missing {len(missing)} keys, first {missing[0]!r}")


def load_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict=True) behind a one-line error."""
    verify_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()}, state_dict, source)
    model.load_state_dict(state_dict, strict=True)
