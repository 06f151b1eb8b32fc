"""Canonical weights -> a dense-prediction backbone's (`SwinConfig.out_indices`, `models.backbone.SwinBackbone`).

From a classifier this is what the official detection code's `mmcv_custom.load_checkpoint` does when a detector
starts from a classification release: `head.*` and the final `norm.*` are dropped, the output norms `norm{i}`
start fresh (ones, zeros), `absolute_pos_embed` goes from (1, L, C) to (1, C, H, W), and V1 bias tables of stages
whose window the classifier had clamped to its map are resized bicubically to the backbone's fixed window. From a
backbone it selects outputs: `norm{i}` of outputs not asked for are dropped, missing ones start fresh. An explicit
`window` moves either to a new fixed window as that loader does: V1 bias tables resized bicubically, V2 CPB MLPs
kept with the source's normalisation (`pretrained_window_sizes`).

`from_backbone_keys` reads a state dict in the official detection layout (mmdet 2.x, or the official
classification layout with output norms that `swinzoo export --to official` writes for a backbone).
"""

from __future__ import annotations

import math
import re

import torch

from swinzoo.config import SwinConfig
from swinzoo.converters.common import Checkpoint, arch_from_keys, v2_pretrained_windows
from swinzoo.errors import SwinzooError
from swinzoo.models import parameter_shapes
from swinzoo.state_dicts import verify_state_dict
from swinzoo.weight_transfer import drop_buffers, resize_bias_table, source_windows

ALL_STAGES = None  # out_indices default: every stage, as the official backbone
OUTPUT_NORM = re.compile(r"^norm\d+\.weight$")


def has_output_norms(sd: dict) -> bool:
    """A backbone's keys: `norm{i}` per output (a classifier has one final `norm.`)."""
    return any(OUTPUT_NORM.match(k) for k in sd)


WINDOW_FOR_CLASSIFIER = ("window= applies with features_only=True; move a classifier to a new window with "
                         "swinzoo.convert(src, out, window=W) or create_model(name, pretrained=True, window_size=W)")


def check_window(window, features_only: bool | None = None) -> None:
    """A one-line error for a backbone window that is not a positive integer, or one asked of a classifier."""
    if window is None:
        return
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise SwinzooError(f"window must be a positive integer, got {window!r}")
    if features_only is False:
        raise SwinzooError(WINDOW_FOR_CLASSIFIER)


def backbone_config(cfg: SwinConfig, out_indices=ALL_STAGES, window: int | None = None) -> SwinConfig:
    """The backbone config of `cfg` (a classifier or a backbone) returning `out_indices` (None: every stage, or the
    backbone's own outputs), with `window` (None: the source's)."""
    check_window(window)
    if out_indices is None:
        out_indices = cfg.out_indices if cfg.is_backbone else tuple(range(cfg.num_stages))
    window = window or cfg.window_size
    changes: dict = {"out_indices": tuple(out_indices), "num_classes": 0, "class_names": None, "window_size": window}
    if cfg.version == 2:
        # the CPB inputs stay normalised by the windows the source used (a classifier's clamped ones included)
        changes["pretrained_window_sizes"] = tuple(0 if w == window else w for w in source_windows(cfg))
    return cfg.replace(**changes)


def to_backbone(checkpoint: Checkpoint, out_indices=ALL_STAGES, window: int | None = None
                ) -> tuple[Checkpoint, list[str]]:
    """(backbone checkpoint with `window` (None: the source's), what was done, one line each)."""
    src = checkpoint.config
    dst = backbone_config(src, out_indices, window)
    notes: list[str] = []
    if dst.window_size != src.window_size:
        notes.append(f"window {src.window_size} -> {dst.window_size}")
    if dst.version == 2 and dst.pretrained_window_sizes != src.pretrained_window_sizes:
        notes.append(f"pretrained_window_sizes {list(dst.pretrained_window_sizes)} (the CPB MLP is kept; its inputs "
                     "stay normalised by the source's windows)")
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
    why = "the backbone never clamps its window" if src.window_size == dst.window_size else f"window {dst.window_size}"
    for key, value in list(sd.items()):
        if key.endswith("relative_position_bias_table"):
            size = 2 * dst.stage_window(int(key.split(".")[1])) - 1
            if value.shape[0] != size * size:
                sd[key] = resize_bias_table(value, size)
                notes.append(f"resized {key} {tuple(value.shape)} -> {tuple(sd[key].shape)} bicubically ({why})")
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


def check_features_only(config: SwinConfig, features_only: bool | None, out_indices, source: str,
                        window: int | None = None) -> bool:
    """Whether to build a backbone, or a one-line error when the request contradicts the checkpoint."""
    if features_only is None:
        features_only = config.is_backbone or out_indices is not None
    if not features_only and config.is_backbone:
        raise SwinzooError(f"{source} is a detection backbone (outputs {list(config.out_indices)}, no classifier "
                           "head): load it with features_only=True, or give a classification checkpoint")
    if not features_only and out_indices is not None:
        raise SwinzooError("out_indices applies to backbones only: pass features_only=True as well")
    if not features_only and window is not None:
        raise SwinzooError(WINDOW_FOR_CLASSIFIER)
    return features_only


def from_backbone_keys(sd: dict[str, torch.Tensor], arch: SwinConfig | None = None,
                       source: str = "checkpoint") -> Checkpoint:
    """A backbone state dict in the official detection layout (buffers and `norm{i}` included, no prefix) -> its
    canonical checkpoint. `arch` (from --arch) gives the window and resolution; `absolute_pos_embed` may be
    (1, C, H, W) as the detector keeps it or (1, L, C) as the classification layout does."""
    sd = dict(sd)
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
    pos = sd.get("absolute_pos_embed")
    if pos is not None and pos.ndim == 3:
        side = math.isqrt(pos.shape[1])
        if side * side != pos.shape[1]:
            raise SwinzooError(f"{source}: absolute_pos_embed {tuple(pos.shape)} is not a square grid of tokens")
        sd["absolute_pos_embed"] = pos = pos.reshape(1, side, side, -1).permute(0, 3, 1, 2).contiguous()
    if pos is not None:  # the pretraining grid the embedding is stored at
        img_size = pos.shape[-1] * fields["patch_size"]
    outputs = sorted(int(k[4:-7]) for k in sd if OUTPUT_NORM.match(k))
    if not outputs:
        outputs = list(range(len(windows)))  # no output norms in the file: every stage, with fresh norms
        dtype = sd["patch_embed.proj.weight"].dtype
        for i in outputs:
            width = fields["embed_dim"] * 2**i
            sd[f"norm{i}.weight"], sd[f"norm{i}.bias"] = torch.ones(width, dtype=dtype), torch.zeros(width, dtype=dtype)
    cfg = SwinConfig(img_size=img_size, window_size=window, pretrained_window_sizes=(0,) * len(windows),
                     out_indices=tuple(outputs), **fields)
    if cfg.version == 2:
        cfg = cfg.replace(pretrained_window_sizes=v2_pretrained_windows(sd, cfg))
    sd, _ = drop_buffers(sd)
    verify_state_dict(parameter_shapes(cfg), sd, source)
    return Checkpoint(sd, cfg, {"out_indices": list(outputs)})
