"""The official optimizer pieces: weight-decay groups, SimMIM layer-wise lr decay, and warmup + cosine per step.

Pure functions of a model's named parameters and a step count, so tests check them without a Trainer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn


def is_no_decay(name: str, ndim: int, keywords: set[str]) -> bool:
    """Official `set_weight_decay`: no decay on 1-D tensors (`ndim`: the parameter's), `.bias`, and names holding a
    no-decay keyword (`absolute_pos_embed`, `relative_position_bias_table`, and for V2 all of `cpb_mlp` and
    `logit_scale`)."""
    return ndim == 1 or name.endswith(".bias") or any(k in name for k in keywords)


def layer_id(name: str, depths: tuple[int, ...]) -> int:
    """SimMIM `get_swin_layer`: 0 for the patch embedding, 1 + block index for blocks, the last block's id for a
    stage's patch merging, and num_blocks + 1 for everything else (final norm, head, absolute_pos_embed)."""
    num_layers = sum(depths)
    if name.startswith(("patch_embed", "mask_token")):
        return 0
    if name.startswith("layers."):
        parts = name.split(".")
        stage = int(parts[1])
        if parts[2] == "downsample":
            return sum(depths[: stage + 1])
        return sum(depths[:stage]) + int(parts[3]) + 1
    return num_layers + 1


def param_groups(model: nn.Module, lr: float, weight_decay: float, layer_decay: float = 1.0,
                 ndims: dict[str, int] | None = None) -> list[dict]:
    """AdamW groups: (decay | no decay) x (layer, when layer_decay < 1), each with its `lr` already scaled.
    `ndims`: each parameter's dimensions as built, by name, where the model's own are not (FSDP hands
    `configure_optimizers` every parameter as a 1-D shard); by default the parameters' own.

    The layer scale is `layer_decay ** (num_blocks + 1 - layer_id)`: the head trains at `lr`, the stem at the
    smallest rate. Every group carries `base_lr` = its peak rate, which the schedule multiplies.
    """
    keywords = set(model.no_weight_decay_keywords()) if hasattr(model, "no_weight_decay_keywords") else set()
    depths = tuple(model.config.depths)
    num_layers = sum(depths)
    groups: dict[tuple[bool, int], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = is_no_decay(name, (ndims or {}).get(name, param.ndim), keywords)
        lid = layer_id(name, depths) if layer_decay < 1.0 else num_layers + 1
        scale = layer_decay ** (num_layers + 1 - lid)
        group = groups.setdefault((no_decay, lid), {
            "params": [], "names": [], "weight_decay": 0.0 if no_decay else weight_decay, "lr": lr * scale,
            "lr_scale": scale,
        })
        group["params"].append(param)
        group["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def warmup_cosine(total_steps: int, warmup_steps: int, base_lr: float, warmup_lr: float,
                  min_lr: float) -> Callable[[int], float]:
    """Step -> lr multiplier (of base_lr): linear from warmup_lr to base_lr over warmup_steps, then cosine from
    base_lr to min_lr over the remaining steps (timm CosineLRScheduler, warmup_prefix, per optimizer update)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            lr = warmup_lr + (base_lr - warmup_lr) * step / warmup_steps
        else:
            span = max(1, total_steps - warmup_steps)
            t = min(step - warmup_steps, span)
            lr = min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t / span))
        return lr / base_lr if base_lr > 0 else 0.0

    return factor


def scaled_lrs(base_lr: float, warmup_lr: float, min_lr: float, total_batch: int) -> tuple[float, float, float]:
    """Official linear scaling: recipe lrs are per 512 images."""
    s = total_batch / 512
    return base_lr * s, warmup_lr * s, min_lr * s


def adamw_warmup_cosine(model: nn.Module, recipe, lrs: tuple[float, float, float], total_steps: int,
                        layer_decay: float, ndims: dict[str, int] | None = None) -> dict:
    """Lightning's `configure_optimizers` answer for a recipe: AdamW over `param_groups` (the official no-decay
    rules, `layer_decay` per block, `ndims` as there), stepped per optimizer step through `warmup_cosine`; `lrs` =
    (peak, warmup, min)."""
    import torch
    from torch.optim.lr_scheduler import LambdaLR

    peak, warm, low = lrs
    groups = param_groups(model, peak, recipe.weight_decay, layer_decay, ndims)
    for g in groups:
        g.pop("names")
    optimizer = torch.optim.AdamW(groups, lr=peak, betas=tuple(recipe.betas), eps=recipe.eps)
    schedule = LambdaLR(optimizer, warmup_cosine(total_steps, int(round(recipe.warmup_fraction * total_steps)),
                                                 peak, warm, low))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
