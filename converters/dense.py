"""Canonical weights -> a dense-prediction backbone's (`SwinConfig.out_indices`, `models.backbone.SwinBackbone`).

From a classifier this is what the official detection code's `mmcv_custom.load_checkpoint` does when a detector
starts from a classification release: `head.*` and the final `norm.*` are dropped, the output norms `norm{i}`
start fresh (ones, zeros), `absolute_pos_embed` goes from (1, L, C) to (1, C, H, W), and V1 bias tables of stages
whose window the classifier had clamped to its map are resized bicubically to the backbone's fixed window. From a
backbone it selects outputs: `norm{i}` of outputs not asked for are dropped, missing ones start fresh.
"""

from __future__ import annotations

import torch

from swinzoo.config import SwinConfig
from swinzoo.converters.common import Checkpoint
from swinzoo.errors import SwinzooError
from swinzoo.io import verify_state_dict
from swinzoo.models import parameter_shapes
from swinzoo.transfer import resize_bias_table, source_windows

ALL_STAGES = None  # out_indices default: every stage, as the official backbone


def backbone_config(cfg: SwinConfig, out_indices=ALL_STAGES) -> SwinConfig:
    """The backbone config of `cfg` (a classifier or a backbone) returning `out_indices` (None: every stage, or the
    backbone's own outputs)."""
    if out_indices is None:
        out_indices = cfg.out_indices if cfg.is_backbone else tuple(range(cfg.num_stages))
    changes: dict = {"out_indices": tuple(out_indices), "num_classes": 0, "class_names": None}
    if cfg.version == 2 and not cfg.is_backbone:
        # the CPB inputs stay normalised by the windows the classifier used (clamped ones included)
        changes["pretrained_window_sizes"] = tuple(0 if w == cfg.window_size else w for w in source_windows(cfg))
    return cfg.replace(**changes)


def to_backbone(checkpoint: Checkpoint, out_indices=ALL_STAGES) -> tuple[Checkpoint, list[str]]:
    """(backbone checkpoint, what was done, one line each)."""
    src = checkpoint.config
    dst = backbone_config(src, out_indices)
    notes: list[str] = []
    sd = dict(checkpoint.state_dict)
    if not src.is_backbone:
        dropped = [k for k in sd if k.startswith(("head.", "norm."))]
        for key in dropped:
            del sd[key]
        if dropped:
            notes.append(f"dropped the classifier's {', '.join(dropped)} (a backbone has no head or final norm)")
        if "absolute_pos_embed" in sd:
            pos = sd["absolute_pos_embed"]
            g = src.patch_grid
            sd["absolute_pos_embed"] = pos.reshape(1, g, g, -1).permute(0, 3, 1, 2).contiguous()
            notes.append("absolute_pos_embed (1, L, C) -> (1, C, H, W), resized to each input at every forward")
        for key, value in list(sd.items()):
            if key.endswith("relative_position_bias_table"):
                size = 2 * dst.stage_window(int(key.split(".")[1])) - 1
                if value.shape[0] != size * size:
                    sd[key] = resize_bias_table(value, size)
                    notes.append(f"resized {key} {tuple(value.shape)} -> {tuple(sd[key].shape)} bicubically "
                                 "(the backbone never clamps its window)")
    for i in range(src.num_stages):
        if i not in dst.out_indices and f"norm{i}.weight" in sd:
            del sd[f"norm{i}.weight"], sd[f"norm{i}.bias"]
            notes.append(f"dropped norm{i} (stage {i} is not an output)")
    fresh = [i for i in dst.out_indices if f"norm{i}.weight" not in sd]
    dtype = sd["patch_embed.proj.weight"].dtype
    for i in fresh:
        width = dst.embed_dim * 2**i
        sd[f"norm{i}.weight"], sd[f"norm{i}.bias"] = torch.ones(width, dtype=dtype), torch.zeros(width, dtype=dtype)
    if fresh:
        notes.append(f"initialised output norms {', '.join(f'norm{i}' for i in fresh)} (ones, zeros: the source "
                     "has none, as the official detector starts from a classifier)")
    verify_state_dict(parameter_shapes(dst), sd, "the backbone")
    provenance = dict(checkpoint.provenance)
    if notes:
        provenance["backbone"] = notes
    return Checkpoint(sd, dst, provenance), notes


def check_features_only(config: SwinConfig, features_only: bool | None, out_indices, source: str) -> bool:
    """Whether to build a backbone, or a one-line error when the request contradicts the checkpoint."""
    if features_only is None:
        features_only = config.is_backbone or out_indices is not None
    if not features_only and config.is_backbone:
        raise SwinzooError(f"{source} is a detection backbone (outputs {list(config.out_indices)}, no classifier "
                           "head): load it with features_only=True, or give a classification checkpoint")
    if not features_only and out_indices is not None:
        raise SwinzooError("out_indices applies to backbones only: pass features_only=True as well")
    return features_only
