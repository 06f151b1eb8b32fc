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

Everything outside the backbone is dropped and listed in the provenance (`dropped`). Read only: swinzoo
writes the backbone in its own format (`to_openmmlab` builds the 3.x layout, for tests and tools).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from swinzoo.config import SwinConfig
from swinzoo.converters.common import Checkpoint, Format, arch_from_keys, read_weights
from swinzoo.converters.official import _v2_pretrained_windows
from swinzoo.errors import SwinzooError
from swinzoo.io import verify_state_dict
from swinzoo.models import parameter_shapes
from swinzoo.transfer import drop_buffers

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
    return official and (sd is not raw or any(re.match(r"^norm\d+\.weight$", k) for k in sd))


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
def from_mmdet(raw: dict[str, torch.Tensor], arch: SwinConfig | None = None, arch_name: str = "",
               source: str = "checkpoint") -> Checkpoint:
    """(canonical backbone state dict, backbone config, provenance listing the dropped detector parts)."""
    sd, dropped = _backbone_part(raw)
    layout = "OpenMMLab 3.x" if is_openmmlab3(sd) else "mmdet 2.x (official detection backbone)"
    if is_openmmlab3(sd):
        sd = from_openmmlab(sd)
    if "norm.weight" in sd and not any(re.match(r"^norm\d+\.weight$", k) for k in sd):
        last = max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
        sd[f"norm{last}.weight"], sd[f"norm{last}.bias"] = sd.pop("norm.weight"), sd.pop("norm.bias")
    extra = [k for k in sd if k.startswith("head.")]  # an mmpretrain classifier's head lives outside the backbone
    dropped += extra
    sd = {k: v for k, v in sd.items() if k not in extra}
    outputs = sorted(int(k[4:-7]) for k in sd if re.match(r"^norm\d+\.weight$", k))
    try:
        info = arch_from_keys(sd, source)
    except KeyError as e:
        raise SwinzooError(f"{source}: incomplete Swin backbone (no {e.args[0]}); is it a Swin detector?") from None
    fields, windows = info["fields"], info["windows"]
    if arch is not None:
        window, img_size = arch.window_size, arch.img_size
    elif any(w is None for w in windows):
        raise SwinzooError(f"cannot tell the window of {source}; pass --arch NAME (e.g. swinv2_t_256_w8)")
    else:
        window = max(windows)
        img_size = window * fields["patch_size"] * 2 ** (len(windows) - 1)
    if "absolute_pos_embed" in sd:  # the pretraining grid the embedding is stored at
        img_size = sd["absolute_pos_embed"].shape[-1] * fields["patch_size"]
    if not outputs:
        outputs = list(range(len(windows)))  # no output norms in the file: every stage, with fresh norms
        width = fields["embed_dim"]
        for i in outputs:
            sd[f"norm{i}.weight"] = torch.ones(width * 2**i, dtype=sd["patch_embed.proj.weight"].dtype)
            sd[f"norm{i}.bias"] = torch.zeros(width * 2**i, dtype=sd["patch_embed.proj.weight"].dtype)
    cfg = SwinConfig(img_size=img_size, window_size=window, pretrained_window_sizes=(0,) * len(windows),
                     out_indices=tuple(outputs), **fields)
    if cfg.version == 2:
        cfg = cfg.replace(pretrained_window_sizes=_v2_pretrained_windows(sd, cfg))
    sd, _ = drop_buffers(sd)
    verify_state_dict(parameter_shapes(cfg), sd, source)
    provenance = {"layout": layout, "out_indices": list(outputs)}
    if dropped:
        provenance["dropped"] = dropped
    return Checkpoint(sd, cfg, provenance)


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
    return from_mmdet(sd, arch, arch_name, str(path))


FORMAT = Format("mmdet", "OpenMMLab detector / segmentor / mmpretrain checkpoint (backbone kept, the rest dropped)",
                read, claims_keys=claims_keys)
