"""Anything a user may name as a checkpoint -> (canonical state dict, config, provenance).

This is the first arrow of the one path every weight takes: file -> converter -> canonical state dict.
Formats: `swinzoo` (.safetensors with a config), `official` (.pth), and through `swinzoo.formats` the foreign
ones (`timm`, `hf`, `torchvision`); `auto` tells them apart by content. `hf-hub:ORG/NAME[@REV]` and zoo names
whose weights are not local are fetched from the Hub first (`swinzoo.hub`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError
from swinzoo.formats import FOREIGN, FORMATS
from swinzoo.models import parameter_shapes


@dataclass
class Source:
    state_dict: dict[str, torch.Tensor]
    config: SwinConfig
    provenance: dict = field(default_factory=dict)


def detect_format(path: Path) -> str:
    """The format of a local file or folder (see `swinzoo.formats`)."""
    from swinzoo.formats import detect_format as detect

    return detect(path)[0]


def load_source(src: str, fmt: str = "auto", arch: str | None = None, trust_checkpoint: bool = False) -> Source:
    """Read `src` in format `fmt`; `arch` (a zoo name) gives the architecture where the file cannot."""
    from converters import official
    from swinzoo import formats, hub, io
    from swinzoo.zoo import get_entry, zoo_config

    if fmt not in FORMATS:
        raise SwinzooError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if hub.is_hub_ref(src):
        return hub.load_hub_source(src, fmt, arch, trust_checkpoint)
    path = packaged_file(src) or Path(src)
    if not path.exists():
        if looks_like_name(src):
            get_entry(src)  # an unknown name fails here, with the closest names
            return hub.load_zoo_weights(src, trust_checkpoint)
        raise SwinzooError(f"{src} does not exist; check the path")
    if arch is not None:
        get_entry(arch)  # unknown names fail here, with suggestions
    raw = None
    if fmt == "auto":
        fmt, raw = formats.detect_format(path, trust_checkpoint)
    if fmt in FOREIGN:
        arch_cfg = zoo_config(arch) if arch else None
        state_dict, config = formats.read_foreign(path, fmt, arch_cfg, arch or "", trust_checkpoint, raw)
        provenance = {"source": str(src), "format": fmt}
        block = swinzoo_block(path) if arch is None else None
        if block:  # a folder swinzoo pushed: its full config and history ride along in config.json
            config = SwinConfig.from_dict(block["config"])
            io.verify_state_dict(parameter_shapes(config), state_dict, str(src))
            provenance = {**block.get("provenance", {}), "loaded_from": str(src)}
        return Source(state_dict, config, provenance)
    if fmt == "swinzoo":
        state_dict, config, provenance = io.read_checkpoint(path)
        return Source(state_dict, config, provenance)
    sd = official.unwrap(raw, str(path)) if raw is not None else official.read_official(path, trust_checkpoint)
    arch_cfg = zoo_config(arch) if arch else None
    state_dict, config = official.from_official(sd, arch_cfg, arch or "", str(src))
    return Source(state_dict, config, {"source": str(src), "format": "official"})


def swinzoo_block(path: Path) -> dict | None:
    """The `swinzoo` block (config, provenance, metrics) of a pushed folder's config.json, if any."""
    import json

    config_json = path / "config.json" if path.is_dir() else None
    if config_json is None or not config_json.exists():
        return None
    block = json.loads(config_json.read_text()).get("swinzoo")
    return block if isinstance(block, dict) and isinstance(block.get("config"), dict) else None


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
