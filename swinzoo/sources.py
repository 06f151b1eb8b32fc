"""Anything a user may name as a checkpoint -> (canonical state dict, config, provenance).

This is the first arrow of the one path every weight takes: file -> converter -> canonical state dict.
Formats: `swinzoo` (.safetensors with a config) and `official` (.pth). `auto` tells them apart by content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError

FORMATS = ("auto", "official", "swinzoo")


@dataclass
class Source:
    state_dict: dict[str, torch.Tensor]
    config: SwinConfig
    provenance: dict = field(default_factory=dict)


def detect_format(path: Path) -> str:
    """`swinzoo` for a safetensors file (or a folder holding model.safetensors), else `official`."""
    if path.is_dir():
        return "swinzoo" if (path / "model.safetensors").exists() else "official"
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors starts with an 8-byte little-endian header length, then the JSON header '{'
    if len(head) == 9 and head[8:9] == b"{":
        return "swinzoo"
    return "official"


def load_source(src: str, fmt: str = "auto", arch: str | None = None, trust_checkpoint: bool = False) -> Source:
    """Read `src` in format `fmt`; `arch` (a zoo name) gives the architecture where the file cannot."""
    from converters import official
    from swinzoo import io
    from swinzoo.zoo import get_entry, zoo_config

    if fmt not in FORMATS:
        raise SwinzooError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = packaged_file(src) or Path(src)
    if not path.exists():
        if looks_like_name(src):
            get_entry(src)  # an unknown name fails here, with the closest names
            raise SwinzooError(f"{src} is a zoo name but its weights are not on this machine; give a checkpoint path")
        raise SwinzooError(f"{src} does not exist; check the path")
    if arch is not None:
        get_entry(arch)  # unknown names fail here, with suggestions
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "swinzoo":
        state_dict, config, provenance = io.read_checkpoint(path)
        return Source(state_dict, config, provenance)
    sd = official.read_official(path, trust_checkpoint)
    arch_cfg = zoo_config(arch) if arch else None
    state_dict, config = official.from_official(sd, arch_cfg, arch or "", str(src))
    return Source(state_dict, config, {"source": str(src), "format": "official"})


def packaged_file(src: str) -> Path | None:
    """The file shipped inside swinzoo for a zoo name whose weights are package data (the nano models), or None."""
    from importlib import resources

    from swinzoo.zoo import ZOO, split_name

    if not looks_like_name(src) or Path(src).exists() or split_name(src)[0] not in ZOO:
        return None
    entry, tag = ZOO[split_name(src)[0]], split_name(src)[1]
    weights = next((w for w in entry.weights if w.tag == (tag or entry.default_tag)), None)
    if weights is None or weights.package_file is None:
        return None
    path = Path(str(resources.files("swinzoo.data").joinpath(weights.package_file)))
    return path if path.exists() else None


def looks_like_name(src: str) -> bool:
    """A bare word such as `swin_b_224.in22k`, not a path: no folder separator and no checkpoint suffix."""
    suffixes = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
    return "/" not in src and "\\" not in src and Path(src).suffix not in suffixes
