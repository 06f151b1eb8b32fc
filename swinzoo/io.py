"""swinzoo checkpoints: one safetensors file whose metadata holds the config, written atomically.

Metadata keys: `format` ("pt", so other safetensors tools read it as PyTorch), `swinzoo_config` (the `SwinConfig`
as JSON) and `swinzoo_provenance` (JSON: where the weights came from and the surgery done to them). A directory
with `model.safetensors` (and optionally `config.json` holding a `swinzoo` block) loads the same way.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError

CONFIG_KEY = "swinzoo_config"
PROVENANCE_KEY = "swinzoo_provenance"


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


def save_state_dict(state_dict: dict[str, torch.Tensor], config: SwinConfig, path: str | Path,
                    provenance: dict | None = None) -> Path:
    """Write a swinzoo safetensors checkpoint atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    metadata = {"format": "pt", CONFIG_KEY: config.to_json(), PROVENANCE_KEY: json.dumps(provenance or {})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def save_model(model: torch.nn.Module, path: str | Path, provenance: dict | None = None) -> Path:
    """Save a swinzoo model (its parameters and its `config`) to a safetensors file."""
    provenance = provenance if provenance is not None else getattr(model, "provenance", None)
    return save_state_dict(model.state_dict(), model.config, path, provenance)


def model_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.exists():
        raise SwinzooError(f"{path} does not exist; give a swinzoo .safetensors file or a folder holding one")
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], SwinConfig, dict]:
    """(state dict, config, provenance) of a swinzoo checkpoint file or folder."""
    path = model_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        msg = f"{path} is not a readable safetensors file ({e}); re-create it with `swinzoo convert`"
        raise SwinzooError(msg) from None
    if CONFIG_KEY not in meta:
        raise SwinzooError(f"{path} has no swinzoo config in its metadata; convert it with `swinzoo convert`")
    return tensors, SwinConfig.from_json(meta[CONFIG_KEY]), json.loads(meta.get(PROVENANCE_KEY, "{}") or "{}")


def load_model(path: str | Path, **config_overrides):
    """Load a model from anything `swinzoo.sources.load_source` reads: a swinzoo .safetensors file, an official
    .pth, a timm / transformers / torchvision checkpoint or folder, `hf-hub:ORG/NAME`, or a zoo name. The model
    carries `.config` and `.provenance`."""
    from swinzoo.models import SwinTransformer
    from swinzoo.sources import load_source

    source = load_source(str(path))
    config = source.config.replace(**config_overrides) if config_overrides else source.config
    model = SwinTransformer(config)
    load_strict(model, source.state_dict, str(path))
    model.provenance = source.provenance
    return model


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
