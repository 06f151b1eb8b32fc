"""Official Microsoft Swin checkpoints (.pth) <-> canonical state dict (a classifier, or a detection backbone in
the classification layout the official detection code takes as `pretrained`).

Canonical keys are the official ones, so the map is the identity on parameters. What this module does:
read the file safely, unwrap it, drop the persistent buffers after reading what they reveal (resolution, window,
V2 pretrained window), and, for export, put the buffers back in the official key order.

Script: `python -m swinzoo.converters official SRC.pth OUT.safetensors` (or `--export SRC.safetensors OUT.pth`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from swinzoo.config import SwinConfig
from swinzoo.converters.common import (
    BLOCK_KEY,
    Checkpoint,
    Format,
    arch_from_keys,
    clamped_resolution,
    config_for_arch,
    read_weights,
    v2_pretrained_windows,
)
from swinzoo.converters.dense import from_backbone_keys, has_output_norms
from swinzoo.errors import SwinzooError
from swinzoo.io import save_torch
from swinzoo.models import parameter_shapes
from swinzoo.weight_transfer import canonical_buffers, drop_buffers


# ---------------------------------------------------------------------------------------------- detection
def looks_official(sd: dict[str, torch.Tensor]) -> bool:
    return "patch_embed.proj.weight" in sd and any(k.startswith("layers.0.blocks.0.") for k in sd)


def detect_config(sd: dict[str, torch.Tensor], source: str = "checkpoint") -> SwinConfig:
    """The architecture of an official state dict: keys, plus what its buffers reveal when it kept them."""
    info = arch_from_keys(sd, source)
    fields, windows = info["fields"], info["windows"]
    if any(w is None for w in windows):
        raise SwinzooError(f"cannot tell the window of {source}: it has no buffers; pass --arch NAME (e.g. "
                           "swinv2_t_256_w8) to say which architecture it is")
    img_size = _detect_resolution(sd, fields["depths"], windows, fields["patch_size"])
    if img_size is None:
        raise SwinzooError(f"cannot tell the resolution of {source}: it has no attn_mask buffers; pass --arch NAME "
                           "(e.g. swin_b_224) to say which architecture it is")
    cfg = SwinConfig(img_size=img_size, window_size=max(windows), pretrained_window_sizes=(0,) * len(windows),
                     **fields)
    if cfg.version == 2:
        cfg = cfg.replace(pretrained_window_sizes=v2_pretrained_windows(sd, cfg))
    return cfg


def _detect_resolution(sd, depths, windows, patch) -> int | None:
    for i, depth in enumerate(depths):
        for j in range(depth):
            mask = sd.get(f"layers.{i}.blocks.{j}.attn_mask")
            if mask is not None:  # nW windows of side w: the stage grid is sqrt(nW) * w
                return int(round(math.sqrt(mask.shape[0]))) * windows[i] * 2**i * patch
    if "absolute_pos_embed" in sd:
        return int(round(math.sqrt(sd["absolute_pos_embed"].shape[1]))) * patch
    has_buffers = any(k.endswith("relative_position_index") for k in sd)
    if has_buffers and depths[0] >= 2:  # stage 0 unshifted: its grid fits in one (clamped) window
        return windows[0] * patch
    return clamped_resolution(windows, patch)


def from_official(sd: dict[str, torch.Tensor], arch: SwinConfig | None = None, arch_name: str = "",
                  source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], SwinConfig]:
    """(canonical state dict, source config). `arch` (from --arch) replaces detection; the head still sets the
    class count, and the file is checked against it."""
    if not looks_official(sd):
        raise SwinzooError(f"{source} is not an official Swin state dict (expected patch_embed.proj.weight and "
                           f"layers.0.blocks.0.*; first keys seen: {', '.join(list(sd)[:4])})")
    if "head.fc.weight" in sd or ("layers.1.downsample.reduction.weight" in sd
                                  and "layers.0.downsample.reduction.weight" not in sd):
        raise SwinzooError(f"{source} is a timm Swin state dict (head.fc.* / the downsample at the start of each "
                           "stage), not an official one; read it with --from-format timm (or auto)")
    cfg = config_for_arch(sd, arch, arch_name) if arch is not None else detect_config(sd, source)
    canonical, _ = drop_buffers(sd)
    return canonical, cfg


def read_official(path: str | Path, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """The raw state dict of an official file, buffers included."""
    return read_weights(path, trust_checkpoint)


def read(path: Path, arch: SwinConfig | None = None, arch_name: str = "", trust_checkpoint: bool = False,
         raw: dict | None = None) -> Checkpoint:
    sd = raw if raw is not None else read_official(path, trust_checkpoint)
    if looks_official(sd) and has_output_norms(sd) and "head.weight" not in sd:  # what a backbone exports
        checkpoint = from_backbone_keys(sd, arch, str(path))
        checkpoint.provenance = {"layout": "official classification layout (detection backbone)",
                                 **checkpoint.provenance}
        return checkpoint
    state_dict, cfg = from_official(sd, arch, arch_name, str(path))
    return Checkpoint(state_dict, cfg)


# ---------------------------------------------------------------------------------------------- export
def to_official(state_dict: dict[str, torch.Tensor], cfg: SwinConfig) -> dict[str, dict[str, torch.Tensor]]:
    """`{'model': sd}` with the buffers, in the official key order, so the official model loads it strictly. A
    backbone is written as the official detection code takes a classification checkpoint for `pretrained`:
    `absolute_pos_embed` as (1, L, C), `norm{i}` kept, no `attn_mask` (the detection backbone has none)."""
    sd = with_buffers(state_dict, cfg)
    if cfg.is_backbone and "absolute_pos_embed" in sd:
        sd["absolute_pos_embed"] = sd["absolute_pos_embed"].flatten(2).transpose(1, 2).contiguous()
    return {"model": sd}


def with_buffers(state_dict: dict[str, torch.Tensor], cfg: SwinConfig) -> dict[str, torch.Tensor]:
    """`state_dict` in the official key order with the buffers an official model of `cfg` keeps."""
    buffers = canonical_buffers(cfg)
    # the official key order (a safetensors source comes back sorted by name)
    ordered = {k: state_dict[k] for k in parameter_shapes(cfg) if k in state_dict}
    out: dict[str, torch.Tensor] = {}
    for key, value in {**ordered, **state_dict}.items():
        m = BLOCK_KEY.match(key)
        if m and key.endswith(".norm1.weight"):
            out.update({k: v for k, v in buffers.items() if k == m.group(0) + "attn_mask"})
        if m and (key.endswith(".attn.qkv.weight") and cfg.version == 1 or key.endswith(".attn.cpb_mlp.0.weight")):
            out.update({k: v for k, v in buffers.items() if k.startswith(m.group(0) + "attn.")})
        out[key] = value
    return out


def write(checkpoint: Checkpoint, out: str | Path, *, allow_numeric_change: bool = False,
          overwrite: bool = False) -> str:
    save_torch(to_official(checkpoint.state_dict, checkpoint.config), out, overwrite)
    if checkpoint.config.is_backbone:
        return "pretrained='OUT' in an official Swin detection / segmentation config (its mmcv_custom load_checkpoint)"
    return "the official SwinTransformer(...).load_state_dict(torch.load(OUT)['model'])"


FORMAT = Format("official", "official Microsoft .pth (`{'model': state_dict}` with buffers)", read, write,
                claims_keys=looks_official)
