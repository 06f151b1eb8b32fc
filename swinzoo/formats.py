"""Which format a checkpoint is in, and reading a foreign one (timm, transformers, torchvision) to canonical keys.

Detection looks at what the file says about itself, in this order: a folder's config.json (`architecture` ->
timm, `model_type` -> transformers), swinzoo metadata in a safetensors file, then the keys:
`features.0.0.weight` -> torchvision, `swin.embeddings.*` / `swinv2.embeddings.*` -> transformers, the
downsample at the start of stage 1 (or `head.fc`) -> timm, `layers.0.blocks.0.*` with the downsample at the end
of stage 0 -> official.
"""

from __future__ import annotations

from pathlib import Path

import torch

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError

FOREIGN = ("timm", "hf", "torchvision")
FORMATS = ("auto", "official", "swinzoo", *FOREIGN)


def has_swinzoo_metadata(path: Path) -> bool:
    from safetensors import safe_open

    from swinzoo.io import CONFIG_KEY

    try:
        with safe_open(str(path), framework="pt") as f:
            return CONFIG_KEY in (f.metadata() or {})
    except Exception:  # not safetensors at all: the reader of the detected format reports it properly
        return False


def is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def detect_folder(path: Path) -> str:
    from converters.common import read_config_json

    if (path / "config.json").exists():
        cfg = read_config_json(path)
        if "architecture" in cfg:
            return "timm"
        if "model_type" in cfg:
            return "hf"  # a non-Swin model_type is reported by the transformers reader
        if "swinzoo" in cfg:
            return "swinzoo"
        if not (path / "model.safetensors").exists() or not has_swinzoo_metadata(path / "model.safetensors"):
            raise SwinzooError(f"{path / 'config.json'} is neither a timm config (no 'architecture') nor a "
                               "transformers config (no 'model_type'); pass --from-format")
    if (path / "model.safetensors").exists() and has_swinzoo_metadata(path / "model.safetensors"):
        return "swinzoo"
    raise SwinzooError(f"{path} has no config.json, so its format and geometry are unknown; give a timm or "
                       "transformers model folder, or the weight file inside with --from-format and --arch")


def detect_keys(sd: dict, source: str) -> str:
    from converters import hf, timm, torchvision
    from converters.official import looks_official

    if torchvision.looks_torchvision(sd):
        return "torchvision"
    if hf.looks_hf(sd):
        return "hf"
    if timm.looks_timm(sd):
        return "timm"
    if looks_official(sd):
        return "official"
    raise SwinzooError(f"{source} is not a Swin checkpoint swinzoo recognises (official, timm, transformers or "
                       f"torchvision keys); first keys seen: {', '.join(list(sd)[:4]) or 'none'}")


def detect_format(path: Path, trust_checkpoint: bool = False) -> tuple[str, dict | None]:
    """(format, the raw state dict when reading the file was needed to tell)."""
    from converters.common import read_weights

    if path.is_dir():
        return detect_folder(path), None
    if is_safetensors(path) and has_swinzoo_metadata(path):
        return "swinzoo", None
    raw = read_weights(path, trust_checkpoint)
    return detect_keys(raw, str(path)), raw


def read_foreign(path: Path, fmt: str, arch: SwinConfig | None, arch_name: str, trust_checkpoint: bool,
                 raw: dict | None = None) -> tuple[dict[str, torch.Tensor], SwinConfig]:
    """(canonical state dict, config) of a timm / transformers / torchvision folder or file."""
    from converters import hf, timm, torchvision

    readers = {"timm": timm.read_timm, "hf": hf.read_hf, "torchvision": torchvision.read_torchvision}
    return readers[fmt](path, arch, arch_name, trust_checkpoint, raw=raw)
