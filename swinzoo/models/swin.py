"""Swin Transformer V1 and V2 with the numerics of the official Microsoft code.

Helpers -> attention (V1: scaled dot product + bias table; V2: cosine + continuous position bias) -> block ->
stage -> model -> analytic MAC count. Parameter names are the official ones, so an official state dict loads
as it is once its buffers are dropped; buffers here are non-persistent and rebuilt for the model's own geometry.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError
from swinzoo.models import fast_path, traceable
from swinzoo.models.attention import WindowAttentionV1, WindowAttentionV2
from swinzoo.models.cpu_gemm import Linear
from swinzoo.models.layers import DropPath, Mlp, PatchEmbed, PatchMerging
from swinzoo.models.timm_api import ClassifierAPI
from swinzoo.models.windows import PlanCache, WindowPlan


class SwinBlock(nn.Module):
    """(B, H, W, C) -> (B, H, W, C). V1 pre-norm: x + attn(norm1(x)); V2 res-post-norm: x + norm1(attn(x)).

    The reference block: training, export and readers use this `forward`; the inference fast path
    (`fast_path.block_forward`) computes the same on window-ordered rows.
    """

    def __init__(self, cfg: SwinConfig, stage: int, dim: int, shifted: bool, drop_path: float) -> None:
        super().__init__()
        self.post_norm = cfg.version == 2
        self.window = cfg.stage_window(stage)
        # applied only along axes that span more than one window (see models/windows.py): at the configured
        # resolution this is exactly cfg.stage_shift(stage)
        self.shift = self.window // 2 if shifted else 0
        heads = cfg.num_heads[stage]
        self.norm1 = nn.LayerNorm(dim)
        if cfg.version == 1:
            self.attn = WindowAttentionV1(dim, self.window, heads, cfg.qkv_bias, cfg.drop_rate)
        else:
            pretrained = cfg.pretrained_window_sizes[stage]
            self.attn = WindowAttentionV2(dim, self.window, heads, cfg.qkv_bias, cfg.drop_rate, pretrained)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.drop_rate)

    def attention_branch(self, x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
        """(B, h, w, C) -> (B, h, w, C): partition into (shifted, padded) windows, attend, reverse."""
        idx = plan.indices(x.shape[0], x.device, grouped=False)
        windows = plan.partition(x, idx)  # (B*nW, N, C): pad, roll and partition as one gather
        return plan.reverse(self.attn(windows, plan), idx, x.shape[0])

    def forward(self, x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
        if self.post_norm:
            x = x + self.drop_path(self.norm1(self.attention_branch(x, plan)))
            return x + self.drop_path(self.norm2(self.mlp(x)))
        x = x + self.drop_path(self.attention_branch(self.norm1(x), plan))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """(B, H, W, C) -> (B, H/2, W/2, 2C), or (B, H, W, C) for the last stage: blocks, then patch merging.

    `fast_path` (see `SwinTransformer.set_fast_path`): run inference through `fast_path.stage_forward`.
    """

    def __init__(self, cfg: SwinConfig, stage: int, drop_paths: list[float]) -> None:
        super().__init__()
        dim = cfg.embed_dim * 2**stage
        self.blocks = nn.ModuleList(
            SwinBlock(cfg, stage, dim, shifted=j % 2 == 1, drop_path=drop_paths[j]) for j in range(cfg.depths[stage])
        )
        self.downsample = PatchMerging(dim, post_norm=cfg.version == 2) if stage < cfg.num_stages - 1 else None
        self.window = cfg.stage_window(stage)
        self.plans = PlanCache()
        res = cfg.stage_resolution(stage)
        for block in self.blocks[:2]:  # the configured geometry is planned up front
            self.plans.get(res, res, self.window, block.shift)
        self.grad_checkpointing = False
        self.fast_path = True
        self.traceable = False  # export: geometry from the input's shape in the graph (`models/traceable.py`)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.traceable and fast_path.applies(self):
            return fast_path.stage_forward(self, x)
        return self.merge(self.forward_blocks(x))

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C): the reference blocks, before patch merging (the stage output timm's
        `forward_intermediates` returns: timm merges at the start of the next stage)."""
        if self.traceable:
            return traceable.stage_blocks(self, x, dense=False)
        _, h, w, _ = x.shape
        for block in self.blocks:
            plan = self.plans.get(h, w, self.window, block.shift)
            if self.grad_checkpointing and torch.is_grad_enabled():
                # recompute the block in backward instead of keeping its activations
                x = checkpoint(block, x, plan, use_reentrant=False)
            else:
                x = block(x, plan)
        return x

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H/2, W/2, 2C) by the patch merging; unchanged for the last stage."""
        if self.downsample is None:
            return x
        if self.traceable:
            return self.downsample.reduce(PatchMerging.merge_order(traceable.pad_even(x)).flatten(3))
        return self.downsample(x)


def build_stages(c: SwinConfig) -> nn.ModuleList:
    """The stages of `c`, stochastic depth rising linearly over all blocks from 0 to `drop_path_rate` (official)."""
    c.check_buildable()
    rates = torch.linspace(0, c.drop_path_rate, sum(c.depths), device="cpu").tolist()
    starts = [sum(c.depths[:i]) for i in range(c.num_stages)]
    return nn.ModuleList(SwinStage(c, i, rates[starts[i] : starts[i] + c.depths[i]]) for i in range(c.num_stages))


class SwinTransformer(ClassifierAPI, nn.Module):
    """(B, 3, H, W) -> (B, num_classes) logits; H = W = `config.img_size` is the native size, any other size works
    through masked padding. `config` travels with the module. timm's model API (`reset_classifier`,
    `forward_intermediates`, `group_matcher`, `pretrained_cfg`, ...) comes from `models/timm_api.py`."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        config.validate_geometry()
        self.config = config
        c = config
        self.patch_embed = PatchEmbed(c.patch_size, c.in_chans, c.embed_dim, c.patch_norm)
        if c.ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, c.patch_grid**2, c.embed_dim))
        else:
            self.absolute_pos_embed = None
        self.pos_drop = nn.Dropout(c.drop_rate)
        self.layers = build_stages(c)
        self.norm = nn.LayerNorm(c.num_features)
        self.head = Linear(c.num_features, c.num_classes) if c.num_classes > 0 else nn.Identity()
        self.apply(_init_weights)
        if c.version == 2:
            self._init_respostnorm()

    def _init_respostnorm(self) -> None:
        # V2 starts every residual branch at zero output (official `_init_respostnorm`).
        for stage in self.layers:
            for block in stage.blocks:
                for norm in (block.norm1, block.norm2):
                    nn.init.zeros_(norm.weight)
                    nn.init.zeros_(norm.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H/32, W/32, num_features): the last stage's tokens after the final norm (timm's
        meaning: unpooled, channels last).

        Any H, W: the configured `img_size` runs the official geometry; other sizes are padded to the patch and
        window grids with the padding masked out of attention (see `swinzoo.models.windows`).
        """
        group = fast_path.image_groups(self, x)
        if group is not None:
            return torch.cat([self.forward_tokens(self.patch_embed(part)) for part in x.split(group)])
        return self.forward_tokens(self.patch_embed(x))

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, w, embed_dim) patch tokens (after the patch embedding's norm) -> (B, h/8, w/8, num_features):
        absolute position embedding, dropout, the stages, the final norm.

        Split from `forward_features` so SimMIM can put its mask token where the official code does: between the
        patch norm and the position embedding.
        """
        x = self.embed_positions(x)
        for stage in self.layers:
            x = stage(x)
        return self.norm(x)

    def embed_positions(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, w, embed_dim) -> (B, h, w, embed_dim): the absolute position embedding (if any), then dropout."""
        if self.absolute_pos_embed is not None:
            g = self.config.patch_grid
            if x.shape[1:3] != (g, g):
                raise SwinzooError(f"this model has an absolute position embedding for {self.config.img_size} px "
                                   f"inputs only; got {tuple(x.shape[1:3])} patches: convert it with --res first")
            x = x + self.absolute_pos_embed.view(1, x.shape[1], x.shape[2], -1)
        return self.pos_drop(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, h, w, num_features) -> (B, num_classes) logits, or with `pre_logits` the (B, num_features) token mean
        the head reads (timm's meaning); after timm's `reset_classifier(n, "")` no pooling: per-token outputs."""
        if self.global_pool:
            x = x.mean(dim=(1, 2))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def set_fast_path(self, enable: bool = True) -> None:
        """Switch the fast implementations (on by default): the inference fast path of every stage
        (`models/fast_path.py`) and the CPU training MLP that recomputes its GELU in backward (`layers.Mlp`).
        Off, the model runs the reference block only: same numbers (held equal by float64 tests), slower."""
        for module in self.modules():
            if isinstance(module, SwinStage):
                module.fast_path = enable
            elif isinstance(module, Mlp):
                module.recompute_gelu = enable

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per block: activations are recomputed in backward (less memory, ~30% slower)."""
        for stage in self.layers:
            stage.grad_checkpointing = enable

    def no_weight_decay_keywords(self) -> set[str]:
        """Names whose parameters the official optimizer leaves undecayed (besides 1-D tensors and biases)."""
        return {"absolute_pos_embed", "relative_position_bias_table", "cpb_mlp", "logit_scale"}


def _init_weights(m: nn.Module) -> None:
    """Official scratch init: truncated normal(0.02) on Linear weights and tables, zero biases, unit LayerNorm."""
    if any(p.is_meta for p in m.parameters(recurse=False)):  # no values to fill (and torch < 2.14 imports its
        return  # compiler for a truncated normal on the meta device, ~1 s for a command that only checks shapes)
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, WindowAttentionV1):
        nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)
    elif isinstance(m, SwinTransformer) and m.absolute_pos_embed is not None:
        nn.init.trunc_normal_(m.absolute_pos_embed, std=0.02)


def count_macs(cfg: SwinConfig) -> int:
    """Multiply-adds at the config's resolution, counted term by term as the official `flops()` counts them.

    Softmax, GELU, bias and mask adds and the V2 CPB MLP are left out; LayerNorm costs C per token; the final
    term keeps the official quirk of dividing the token count by 2**num_stages (not 4**(num_stages-1)).
    """
    g = cfg.patch_grid
    macs = g * g * cfg.embed_dim * cfg.in_chans * cfg.patch_size**2
    macs += g * g * cfg.embed_dim if cfg.patch_norm else 0
    for i in range(cfg.num_stages):
        dim, res, win, heads = cfg.embed_dim * 2**i, cfg.stage_resolution(i), cfg.stage_window(i), cfg.num_heads[i]
        n = win * win
        attn = n * dim * 3 * dim + heads * n * (dim // heads) * n * 2 + n * dim * dim
        block = 2 * dim * res * res + res * res / (win * win) * attn + 2 * res * res * dim * dim * cfg.mlp_ratio
        macs += cfg.depths[i] * block
        if i < cfg.num_stages - 1:
            merge = (res // 2) * (res // 2) * 4 * dim * 2 * dim
            macs += merge + (res * res * dim // 2 if cfg.version == 2 else res * res * dim)
    macs += cfg.num_features * g * g // 2**cfg.num_stages + cfg.num_features * cfg.num_classes
    return int(macs)


def parameter_shapes(cfg: SwinConfig) -> dict[str, tuple[int, ...]]:
    """Canonical key -> shape of a model of `cfg`, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in SwinTransformer(cfg).state_dict().items()}
