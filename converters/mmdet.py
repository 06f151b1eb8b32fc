"""OpenMMLab checkpoints of a Swin backbone (detector, segmentor or mmpretrain classifier) <-> canonical backbone.

Two key layouts, told apart by their keys, with or without the detector's `backbone.` prefix:
- mmdet 2.x / mmseg 0.x, the official Swin-Transformer-Object-Detection (and -Semantic-Segmentation) backbone:
  the official classification names plus `norm{i}` per output, `relative_position_index` persisted,
  `absolute_pos_embed` as (1, C, H, W). A detector file is `{"meta", "state_dict", "optimizer"}` with
  `backbone.*`, `neck.*`, `rpn_head.*`, `roi_head.*` (a segmentor: `decode_head.*`, `auxiliary_head.*`).
- OpenMMLab 3.x (mmdet 3, mmseg 1, mmpretrain): `patch_embed.projection`, `stages.{s}.blocks.{b}.attn.w_msa.*`,
  `ffn.layers.0.0` (fc1) / `ffn.layers.1` (fc2), `absolute_pos_embed` (1, L, C), and patch merging through
  `nn.Unfold`, whose 4C order is channel-major: the reduction columns (and the V1 merge norm) are permuted
  back to the official block-major order (kernel positions [0, 2, 1, 3]). V2 (mmpretrain) merges at the start of
  stages 1-3 (`stages.{s+1}.downsample` = official `layers.{s}.downsample`) and normalises after the reduction.

Everything outside the backbone is dropped and listed in the provenance (`dropped`). `write` makes the mmdet 2.x
layout, `{"meta": {"swinzoo": ...}, "state_dict": {"backbone.*"}}`, for the official Swin detection code's
`load_from` (a classifier is made a backbone first, as `load_model(features_only=True)` does); `to_openmmlab`
builds the 3.x layout, for tests and tools.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch

from swinzoo.config import SwinConfig
from swinzoo.converters.common import Checkpoint, Format, read_weights
from swinzoo.converters.dense import from_backbone_keys, has_output_norms, to_backbone
from swinzoo.converters.official import with_buffers
from swinzoo.errors import SwinzooError
from swinzoo.io import save_torch

PREFIX = "backbone."
UNFOLD_ORDER = [0, 2, 1, 3]  # nn.Unfold kernel position k <-> official block g; its own inverse
# OpenMMLab 3.x -> official, applied in order (after the stage renumbering)
RENAMES = (("patch_embed.projection.", "patch_embed.proj."), (".attn.w_msa.", ".attn."),
           (".ffn.layers.0.0.", ".mlp.fc1."), (".ffn.layers.1.", ".mlp.fc2."))
STAGE_KEY = re.compile(r"^stages\.(\d+)\.(.*)$")


def _backbone_part(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(backbone keys without the prefix, every other key), or the whole dict when nothing is prefixed."""
    if not any(k.startswith(PREFIX) for k in sd):
        return sd, []
    return {k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX)}, [k for k in sd if
                                                                                 not k.startswith(PREFIX)]


def is_openmmlab3(sd: dict) -> bool:
    return "patch_embed.projection.weight" in sd and any(k.startswith("stages.0.blocks.0.") for k in sd)


def claims_keys(raw: dict) -> bool:
    sd, _ = _backbone_part(raw)
    if is_openmmlab3(sd):
        return True
    # the official detection layout: prefixed, or bare with output norms (a classifier has `norm.`, not `norm0.`)
    official = "patch_embed.proj.weight" in sd and any(k.startswith("layers.0.blocks.0.") for k in sd)
    return official and (sd is not raw or has_output_norms(sd))


# ---------------------------------------------------------------------------------------------- unfold order
def _merge_from_unfold(key: str, value: torch.Tensor, version: int) -> torch.Tensor:
    if key.endswith("reduction.weight"):
        out, c4 = value.shape
        return value.reshape(out, c4 // 4, 4).transpose(1, 2)[:, UNFOLD_ORDER].reshape(out, c4).contiguous()
    if version == 1:  # the V1 norm acts on the 4C vector; V2's on the 2C output, which is not reordered
        return value.reshape(-1, 4).t()[UNFOLD_ORDER].reshape(-1).contiguous()
    return value


def _merge_to_unfold(key: str, value: torch.Tensor, version: int) -> torch.Tensor:
    if key.endswith("reduction.weight"):
        out, c4 = value.shape
        return value.reshape(out, 4, c4 // 4)[:, UNFOLD_ORDER].transpose(1, 2).reshape(out, c4).contiguous()
    if version == 1:
        return value.reshape(4, -1)[UNFOLD_ORDER].t().reshape(-1).contiguous()
    return value


def from_openmmlab(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenMMLab 3.x backbone keys -> official detection keys (buffers pass through, to be dropped later)."""
    version = 2 if any(k.endswith("attn.w_msa.logit_scale") for k in sd) else 1
    out = {}
    for key, value in sd.items():
        m = STAGE_KEY.match(key)
        if m:
            stage, rest = int(m.group(1)), m.group(2)
            if rest.startswith("downsample."):
                value = _merge_from_unfold(key, value, version)
                stage -= version == 2  # V2 merges at the start of the next stage
            key = f"layers.{stage}.{rest}"
        for old, new in RENAMES:
            key = key.replace(old, new)
        if key == "absolute_pos_embed" and value.ndim == 3:  # (1, L, C) at the pretraining grid
            g = math.isqrt(value.shape[1])
            value = value.reshape(1, g, g, -1).permute(0, 3, 1, 2).contiguous()
        out[key] = value
    return out


def to_openmmlab(sd: dict[str, torch.Tensor], version: int = 1) -> dict[str, torch.Tensor]:
    """Canonical backbone keys -> the OpenMMLab 3.x layout (the inverse of `from_openmmlab`)."""
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] == "layers":
            stage = int(parts[1])
            if parts[2] == "downsample":
                value = _merge_to_unfold(key, value, version)
                stage += version == 2
            key = ".".join(["stages", str(stage), *parts[2:]])
        for new, old in RENAMES:
            key = key.replace(old, new)
        if key == "absolute_pos_embed":
            value = value.flatten(2).transpose(1, 2).contiguous()
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------- reading
def from_mmdet(raw: dict[str, torch.Tensor], arch: SwinConfig | None = None, source: str = "checkpoint"
               ) -> Checkpoint:
    """(canonical backbone state dict, backbone config, provenance listing the dropped detector parts)."""
    sd, dropped = _backbone_part(raw)
    layout = "OpenMMLab 3.x" if is_openmmlab3(sd) else "mmdet 2.x (official detection backbone)"
    if is_openmmlab3(sd):
        sd = from_openmmlab(sd)
    if "norm.weight" in sd and not has_output_norms(sd):
        last = max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
        sd[f"norm{last}.weight"], sd[f"norm{last}.bias"] = sd.pop("norm.weight"), sd.pop("norm.bias")
    extra = [k for k in sd if k.startswith("head.")]  # an mmpretrain classifier's head lives outside the backbone
    dropped += extra
    sd = {k: v for k, v in sd.items() if k not in extra}
    checkpoint = from_backbone_keys(sd, arch, source)
    provenance = {"layout": layout, **checkpoint.provenance}
    if dropped:
        provenance["dropped"] = dropped
    return Checkpoint(checkpoint.state_dict, checkpoint.config, provenance)


def dropped_summary(dropped: list[str]) -> str:
    """'neck (8), rpn_head (1)': the dropped keys counted by top-level module."""
    counts: dict[str, int] = {}
    for key in dropped:
        counts[key.split(".")[0]] = counts.get(key.split(".")[0], 0) + 1
    return ", ".join(f"{name} ({n})" for name, n in counts.items())


def read(path: Path, arch: SwinConfig | None = None, arch_name: str = "", trust_checkpoint: bool = False,
         raw: dict | None = None) -> Checkpoint:
    sd = raw if raw is not None else read_weights(path, trust_checkpoint)
    if not claims_keys(sd):
        raise SwinzooError(f"{path} is not an OpenMMLab Swin checkpoint (expected backbone.patch_embed.* and "
                           f"backbone.layers.* or backbone.stages.*; first keys seen: {', '.join(list(sd)[:4])})")
    return from_mmdet(sd, arch, str(path))


# ---------------------------------------------------------------------------------------------- writing
def to_mmdet(checkpoint: Checkpoint) -> tuple[dict, list[str]]:
    """(the mmdet 2.x file of a backbone, or of a classifier made a backbone; what that took, one line each)."""
    notes: list[str] = []
    if not checkpoint.config.is_backbone:
        checkpoint, notes = to_backbone(checkpoint)
    sd = with_buffers(checkpoint.state_dict, checkpoint.config)
    summary = {"config": checkpoint.config.to_dict(), "provenance": checkpoint.provenance}
    # JSON types only, so the file loads with torch.load(weights_only=True)
    meta = {"swinzoo": json.loads(json.dumps(summary, default=str))}
    return {"meta": meta, "state_dict": {PREFIX + k: v for k, v in sd.items()}}, notes


def write(checkpoint: Checkpoint, out: str | Path, *, allow_numeric_change: bool = False,
          overwrite: bool = False) -> str:
    obj, notes = to_mmdet(checkpoint)
    save_torch(obj, out, overwrite)
    # not an init_cfg for mmdet's own SwinTransformer: it expects the OpenMMLab layout (stages.*, attn.w_msa.*) and,
    # loading non-strictly, would keep its random init without a word
    how = ("load_from = 'OUT' in a config of the official Swin-Transformer-Object-Detection code (mmdet 2.x with "
           "its Swin backbone)")
    return how + (" (written as a backbone: the classifier's head and final norm dropped, fresh output norms)"
                  if notes else "")


FORMAT = Format("mmdet", "OpenMMLab detector / segmentor / mmpretrain checkpoint (backbone kept, the rest dropped)",
                read, write, claims_keys=claims_keys)
