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
from swinzoo.models.attention import WindowAttentionV1, WindowAttentionV2, attention_term, group_attention
from swinzoo.models.layers import DropPath, Mlp, PatchEmbed, PatchMerging
from swinzoo.models.windows import PlanCache, WindowPlan

# Inference runs a block over runs of windows whose widest activation (the MLP hidden) stays under this size.
# glibc hands allocations over 32 MiB straight to mmap, so whole-batch activations of the first stages are
# page-faulted in anew at every call; runs this size are recycled from the heap and stay in the last-level
# cache, and are still large enough GEMMs (8 MiB: ~5k tokens at C=96). Measured best of 4/6/8/12/16/24 MiB.
EVAL_CHUNK_BYTES = 8 << 20


class SwinBlock(nn.Module):
    """(B, H, W, C) -> (B, H, W, C). V1 pre-norm: x + attn(norm1(x)); V2 res-post-norm: x + norm1(attn(x))."""

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
        """(B, h, w, C) -> (B, h, w, C): gather into windows, attend, gather back (autograd-friendly)."""
        idx = plan.indices(x.shape[0], x.device, grouped=False)
        return plan.reverse(self.attn(plan.partition(x, idx), plan), idx, x.shape[0])

    def forward(self, x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
        if not (self.training or torch.is_grad_enabled()):
            b, h, w, c = x.shape
            into, _, back, _ = plan.indices(b, x.device, grouped=True)
            rows = self.forward_windows(plan.pad(x).reshape(-1, c), into, plan, b)
            return rows.index_select(0, back).view(b, h, w, c)
        if self.post_norm:
            x = x + self.drop_path(self.norm1(self.attention_branch(x, plan)))
            return x + self.drop_path(self.norm2(self.mlp(x)))
        x = x + self.drop_path(self.attention_branch(self.norm1(x), plan))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward_windows(self, src: torch.Tensor, gather: torch.Tensor, plan: WindowPlan, batch: int) -> torch.Tensor:
        """Inference: (rows, C) -> (B*Hp*Wp, C) in `plan`'s grouped window order; row i of the result is the block
        output of the padded-grid token that `src` holds in row `gather[i]`.

        Every op after the gather is token- or window-local, so a run of windows goes through attention, both
        residuals and the MLP while it is small and hot in cache, in place in its rows of the output. Tokens stay
        in window order: a stage gathers once per block and puts tokens back in grid order only at its end.
        """
        c, n = src.shape[-1], plan.window**2
        out = src.new_empty(gather.shape[0], c)
        term = attention_term(self.attn, plan, src.dtype)
        max_windows = max(1, EVAL_CHUNK_BYTES // (src.element_size() * self.mlp.fc1.out_features * n))
        mlp = self.mlp
        autocast = torch.is_autocast_enabled(src.device.type)
        for start, end, segments in plan.chunks(batch, max_windows):
            t = torch.index_select(src, 0, gather[start:end], out=out[start:end])
            # in place: t is this run's own rows of the output, and nothing records autograd here
            if self.post_norm:
                t.add_(self.norm1(group_attention(self.attn, t.view(-1, n, c), term, segments)))
                t.add_(self.norm2(mlp.fc2(torch.ops.aten.gelu_(mlp.fc1(t)))))
            elif autocast:  # branch outputs in the autocast dtype, the residual stream not: add them
                t.add_(group_attention(self.attn, self.norm1(t).view(-1, n, c), term, segments))
                t.add_(mlp.fc2(torch.ops.aten.gelu_(mlp.fc1(self.norm2(t)))))
            else:
                # both residual branches accumulate into t inside their last GEMM (addmm_, beta=1), each bias added
                # first once the norm has read t: no branch output is materialised and then added
                normed = self.norm1(t).view(-1, n, c)
                group_attention(self.attn, normed, term, segments, accumulate=t.add_(self.attn.proj.bias))
                hidden = torch.ops.aten.gelu_(mlp.fc1(self.norm2(t)))
                t.add_(mlp.fc2.bias).addmm_(hidden, mlp.fc2.weight.t())
        return out


class SwinStage(nn.Module):
    """(B, H, W, C) -> (B, H/2, W/2, 2C), or (B, H, W, C) for the last stage: blocks, then patch merging."""

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training or torch.is_grad_enabled() or any(map(_has_forward_hooks, self.blocks))):
            return self.forward_inference(x)
        _, h, w, _ = x.shape
        for block in self.blocks:
            plan = self.plans.get(h, w, self.window, block.shift)
            if self.grad_checkpointing and torch.is_grad_enabled():
                # recompute the block in backward instead of keeping its activations
                x = checkpoint(block, x, plan, use_reentrant=False)
            else:
                x = block(x, plan)
        return self.downsample(x) if self.downsample is not None else x

    def forward_inference(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` without autograd, tokens kept in window order from block to block.

        Each block gathers its windows straight from the previous block's window order (the two permutations
        composed), so a block costs one gather instead of a gather and a scatter back to the grid; the last
        gather back to the grid also does patch merging's 2x2 regrouping when the grid is even.
        """
        b, h, w, c = x.shape
        rows, where = None, None  # where[p]: the row of `rows` holding padded-grid token p
        for block in self.blocks:
            plan = self.plans.get(h, w, self.window, block.shift)
            into, into_inverse, back, _ = plan.indices(b, x.device, grouped=True)
            if rows is None:
                rows, gather = plan.pad(x).reshape(-1, c), into
            else:
                gather = where.index_select(0, into)
            rows, where = block.forward_windows(rows, gather, plan, b), into_inverse
        if rows is None:
            return self.downsample(x) if self.downsample is not None else x
        if self.downsample is None or h % 2 or w % 2:
            x = rows.index_select(0, back).view(b, h, w, c)
            return x if self.downsample is None else self.downsample(x)
        merged = rows.index_select(0, PatchMerging.merge_order(back.view(b, h, w)).reshape(-1))
        return self.downsample.reduce(merged.view(b, h // 2, w // 2, 4 * c))


class SwinTransformer(nn.Module):
    """(B, 3, H, W) -> (B, num_classes) logits; H = W = `config.img_size` is the native size, any other size works
    through masked padding. `config` travels with the module."""

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
        rates = torch.linspace(0, c.drop_path_rate, sum(c.depths), device="cpu").tolist()
        starts = [sum(c.depths[:i]) for i in range(c.num_stages)]
        self.layers = nn.ModuleList(
            SwinStage(c, i, rates[starts[i] : starts[i] + c.depths[i]]) for i in range(c.num_stages)
        )
        self.norm = nn.LayerNorm(c.num_features)
        self.head = nn.Linear(c.num_features, c.num_classes) if c.num_classes > 0 else nn.Identity()
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
        """(B, 3, H, W) -> (B, num_features): the token mean after the final norm.

        Any H, W: the configured `img_size` runs the official geometry; other sizes are padded to the patch and
        window grids with the padding masked out of attention (see `swinzoo.models.windows`).
        """
        x = self.patch_embed(x)
        if self.absolute_pos_embed is not None:
            g = self.config.patch_grid
            if x.shape[1:3] != (g, g):
                raise SwinzooError(f"this model has an absolute position embedding for {self.config.img_size} px "
                                   f"inputs only; got {tuple(x.shape[1:3])} patches: convert it with --res first")
            x = x + self.absolute_pos_embed.view(1, x.shape[1], x.shape[2], -1)
        x = self.pos_drop(x)
        for stage in self.layers:
            x = stage(x)
        return self.norm(x).mean(dim=(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per block: activations are recomputed in backward (less memory, ~30% slower)."""
        for stage in self.layers:
            stage.grad_checkpointing = enable

    def no_weight_decay_keywords(self) -> set[str]:
        """Names whose parameters the official optimizer leaves undecayed (besides 1-D tensors and biases)."""
        return {"absolute_pos_embed", "relative_position_bias_table", "cpb_mlp", "logit_scale"}


def _has_forward_hooks(module: nn.Module) -> bool:
    """Hooks on a block see it run only when it is called as a module, which the stage's inference path skips."""
    return bool(module._forward_hooks or module._forward_pre_hooks or nn.modules.module._global_forward_hooks
                or nn.modules.module._global_forward_pre_hooks)


def _init_weights(m: nn.Module) -> None:
    """Official scratch init: truncated normal(0.02) on Linear weights and tables, zero biases, unit LayerNorm."""
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
