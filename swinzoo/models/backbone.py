"""Swin as a dense-prediction backbone, with the numerics of the official detection code.

The official backbone (`mmdet/models/backbones/swin_transformer.py` of Swin-Transformer-Object-Detection, which
Mask R-CNN, Cascade R-CNN and UPerNet checkpoints were trained with) differs from the classifier in
`swin.py` in its geometry, not in its layers, so it reuses them (`SwinBlock`, `PatchEmbed`, `PatchMerging`):

- every stage keeps the configured window, also on maps not larger than it, and odd blocks always shift by
  window // 2 (`SwinConfig.stage_window` / `stage_shift` for a config with `out_indices`);
- each block pads its map (after norm1) with zeros to a multiple of the window, and the zeros are NOT masked as
  keys: only the shift mask applies (a `dense` `WindowPlan`);
- `absolute_pos_embed` is kept as (1, C, H, W) at the pretraining size and resized bicubically to the token grid
  of every input;
- one LayerNorm `norm{i}` per output; outputs are NCHW, strides 4, 8, 16, 32.

Parameter names are the official detection ones (`patch_embed.*`, `layers.*`, `norm{i}.*`). The inference fast
path (`fast_path.py`) normalises padded rows too, which is harmless when padding is masked but not here, so a
backbone always runs the reference blocks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError
from swinzoo.models import traceable
from swinzoo.models.cache_keys import with_newest
from swinzoo.models.layers import PatchEmbed, PatchMerging
from swinzoo.models.swin import SwinStage, SwinTransformer, _init_weights, build_stages
from swinzoo.models.swin import parameter_shapes as classifier_shapes
from swinzoo.models.timm_api import BackboneAPI


class SwinBackbone(BackboneAPI, nn.Module):
    """(B, 3, H, W), any H and W -> tuple of (B, C_i, ceil(H/(4*2^i)), ceil(W/(4*2^i))) maps for i in
    `config.out_indices`, each after its LayerNorm `norm{i}`. `config` (with `out_indices`) travels with the
    module; `frozen_stages` freezes as the official backbone does (see `freeze_stages`). timm's `feature_info`,
    `pretrained_cfg` and `no_weight_decay` come from `models/timm_api.py`."""

    def __init__(self, config: SwinConfig, frozen_stages: int = -1) -> None:
        super().__init__()
        if not config.is_backbone:
            raise SwinzooError("SwinBackbone needs a config with out_indices (e.g. config.replace(out_indices="
                               "(0, 1, 2, 3))); a classifier config builds a SwinTransformer")
        if not -1 <= frozen_stages <= config.num_stages + 1:
            raise SwinzooError(f"frozen_stages {frozen_stages} out of range: pick -1 (nothing frozen) .. "
                               f"{config.num_stages + 1} (patch embedding and all {config.num_stages} stages frozen)")
        self.config = c = config
        self.frozen_stages = frozen_stages
        self.num_features = [c.embed_dim * 2**i for i in range(c.num_stages)]
        self.patch_embed = PatchEmbed(c.patch_size, c.in_chans, c.embed_dim, c.patch_norm)
        if c.ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, c.embed_dim, c.patch_grid, c.patch_grid))
        else:
            self.absolute_pos_embed = None
        self.pos_drop = nn.Dropout(c.drop_rate)
        self.layers = build_stages(c)
        for stage in self.layers:
            stage.fast_path = False
            stage.plans.plans.clear()  # planned for the classifier's masked geometry; dense plans come per input
        for i in c.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self.apply(_init_weights)
        if c.ape:
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        if c.version == 2:
            SwinTransformer._init_respostnorm(self)
        self.freeze_stages()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.patch_embed(x)  # (B, Wh, Ww, C)
        if self.absolute_pos_embed is not None:
            # official: resized on every forward (also at the pretraining size, where bicubic is the identity)
            pos = F.interpolate(self.absolute_pos_embed, size=x.shape[1:3], mode="bicubic")
            x = x + pos.permute(0, 2, 3, 1)
        x = self.pos_drop(x)
        outs = []
        for i, stage in enumerate(self.layers):
            out = traceable.stage_blocks(stage, x, dense=True) if stage.traceable else self._blocks(stage, x)
            if i in self.config.out_indices:
                outs.append(getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2).contiguous())
            if stage.downsample is None:
                x = out
            elif stage.traceable:
                x = stage.downsample.reduce(PatchMerging.merge_order(traceable.pad_even(out)).flatten(3))
            else:
                x = stage.downsample(out)
        return tuple(outs)

    @staticmethod
    def _blocks(stage: SwinStage, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C): the stage's blocks on dense plans (before its patch merging)."""
        _, h, w, _ = x.shape
        for block in stage.blocks:
            plan = stage.plans.get(h, w, stage.window, block.shift, dense=True)
            if stage.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, plan, use_reentrant=False)
            else:
                x = block(x, plan)
        return x

    def freeze_stages(self) -> None:
        """The official `_freeze_stages`: >= 0 freezes the patch embedding (and keeps it in eval mode), >= 1 also
        the absolute position embedding, >= 2 also stages 0 .. frozen_stages - 2 (so 1 freezes no stage: one off
        from mmpretrain's count). The output norms are never frozen."""
        f = self.frozen_stages
        if f >= 0:
            self.patch_embed.eval()
            self.patch_embed.requires_grad_(False)
        if f >= 1 and self.absolute_pos_embed is not None:
            self.absolute_pos_embed.requires_grad_(False)
        if f >= 2:
            self.pos_drop.eval()
            for stage in self.layers[: f - 1]:
                stage.eval()
                stage.requires_grad_(False)

    def train(self, mode: bool = True) -> SwinBackbone:
        super().train(mode)
        self.freeze_stages()  # official: re-applied so frozen parts stay in eval mode
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per block: activations are recomputed in backward."""
        for stage in self.layers:
            stage.grad_checkpointing = enable

    def no_weight_decay_keywords(self) -> set[str]:
        """The official detection recipes' `decay_mult=0` names (besides 1-D tensors and biases)."""
        return {"absolute_pos_embed", "relative_position_bias_table", "cpb_mlp", "logit_scale", "norm"}


# config JSON -> its shapes: a command checks a file's weights against its config when reading it and again as the
# target of its transfer or export (the same config when nothing moves); a meta build is 20-200 ms (nano to V2-L)
_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {}


def parameter_shapes(cfg: SwinConfig) -> dict[str, tuple[int, ...]]:
    """Canonical key -> shape of a model of `cfg` (classifier or backbone), built on the meta device once per config
    (the caller gets its own dict: some add buffer shapes to it)."""
    global _SHAPES
    key = cfg.to_json()
    shapes = _SHAPES.get(key)
    if shapes is None:
        if cfg.is_backbone:
            with torch.device("meta"):
                shapes = {k: tuple(v.shape) for k, v in SwinBackbone(cfg).state_dict().items()}
        else:
            shapes = classifier_shapes(cfg)
        _SHAPES = with_newest(_SHAPES, key, shapes, 8)
    return dict(shapes)


def count_params(cfg: SwinConfig) -> int:
    """Parameters of a model of `cfg` (its state dict: the model keeps no persistent buffers), without building it."""
    return sum(math.prod(shape) for shape in parameter_shapes(cfg).values())
