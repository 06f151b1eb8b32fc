"""Swin Transformer V1 and V2 with the numerics of the official Microsoft code.

Helpers -> attention (V1: scaled dot product + bias table; V2: cosine + continuous position bias) -> block ->
stage -> model -> analytic MAC count. Parameter names are the official ones, so an official state dict loads
as it is once its buffers are dropped; buffers here are non-persistent and rebuilt for the model's own geometry.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError
from swinzoo.models.layers import (
    DropPath,
    Mlp,
    PatchEmbed,
    PatchMerging,
    relative_position_index,
)
from swinzoo.models.windows import PlanCache, WindowPlan

# The official clamp is `torch.log(torch.tensor(1. / 0.01))`: log(100) rounded to float32, which differs from
# math.log(100) in the 8th digit and so moves float64 logits by ~1e-6 when a logit scale sits at the clamp.
LOGIT_SCALE_MAX = float(torch.log(torch.tensor(1.0 / 0.01)))


def log_spaced_coords(window: int, pretrained_window: int) -> torch.Tensor:
    """(1, 2w-1, 2w-1, 2) float32 CPB input: offsets / (pretrained_window-1 or w-1) * 8, then sign*log2(1+|x|)/3.

    Computed in float32 in the official order of operations, as the official buffer is.
    """
    offsets = torch.arange(-(window - 1), window, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij")).permute(1, 2, 0).contiguous().unsqueeze(0)
    # A 1x1 window has only the zero offset; the official 0/0 would give NaN, any divisor gives the same 0.
    table /= max((pretrained_window if pretrained_window > 0 else window) - 1, 1)
    table *= 8
    return torch.sign(table) * torch.log2(torch.abs(table) + 1.0) / math.log2(8)


class WindowAttentionV1(nn.Module):
    """(B*nW, N, C) -> (B*nW, N, C): softmax(q k^T / sqrt(d) + B[index] + mask) v with a learned bias table."""

    def __init__(self, dim: int, window: int, num_heads: int, qkv_bias: bool, proj_drop: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.term_cache = TermCache()

    def bias_parameters(self) -> tuple[torch.Tensor, ...]:
        return (self.relative_position_bias_table,)

    def train(self, mode: bool = True):
        self.term_cache.clear()
        return super().train(mode)

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N) additive bias."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, -1).permute(2, 0, 1)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float | None]:
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # one stack in backward; indexing would zero-fill and add three full-size grads
        return q, k, v, None  # SDPA's default 1/sqrt(d) scale is the official qk_scale

    def forward(self, x: torch.Tensor, plan: WindowPlan, grouped: bool) -> torch.Tensor:
        return window_attention(self, x, plan, grouped)


class WindowAttentionV2(nn.Module):
    """(B*nW, N, C) -> (B*nW, N, C): softmax(cos(q, k) * exp(min(s, log 100)) + 16 sigmoid(cpb) + mask) v."""

    def __init__(
        self, dim: int, window: int, num_heads: int, qkv_bias: bool, proj_drop: float, pretrained_window: int
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(inplace=True), nn.Linear(512, num_heads, bias=False))
        self.register_buffer("relative_coords_table", log_spaced_coords(window, pretrained_window), persistent=False)
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        if qkv_bias:  # no k bias: a key bias shifts every logit of a query equally, softmax cancels it
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.term_cache = TermCache()

    def bias_parameters(self) -> tuple[torch.Tensor, ...]:
        return (*self.cpb_mlp.parameters(), self.relative_coords_table)

    def train(self, mode: bool = True):
        self.term_cache.clear()
        return super().train(mode)

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N) additive bias 16 * sigmoid(cpb_mlp(log-spaced offsets))."""
        n = self.window * self.window
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        bias = table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        return 16 * torch.sigmoid(bias)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float | None]:
        b, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).view(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        scale = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()
        # cosine similarity times the per-head scale; folding the scale into q lets SDPA run with scale 1
        return F.normalize(q, dim=-1) * scale, F.normalize(k, dim=-1), v, 1.0

    def forward(self, x: torch.Tensor, plan: WindowPlan, grouped: bool) -> torch.Tensor:
        return window_attention(self, x, plan, grouped)


class TermCache:
    """Eval-mode cache of a block's additive attention term (position bias, V2's 16*sigmoid(CPB), + group masks).

    Entries are keyed on the data pointers and in-place version counters of the parameters the bias is made of,
    so an optimizer step, `load_state_dict`, `.to()` or `.double()` invalidates them; `train()` clears them. The
    cache is bypassed in training, whenever autograd records (the term must carry gradients) and under
    `torch.compile` (the compiled graph computes the term itself).
    """

    def __init__(self) -> None:
        self.key: tuple = ()
        self.terms: dict[tuple, torch.Tensor] = {}

    def clear(self) -> None:
        self.key, self.terms = (), {}


def attention_term(attn: WindowAttentionV1 | WindowAttentionV2, plan: WindowPlan, dtype: torch.dtype) -> torch.Tensor:
    """(G, heads, N, N): position bias + the mask of each window group of `plan`."""
    cacheable = not (attn.training or torch.is_grad_enabled() or torch.compiler.is_compiling())
    if cacheable:
        params = attn.bias_parameters()
        key = tuple((p.data_ptr(), p._version) for p in params)
        cache = attn.term_cache
        if cache.key != key:
            cache.key, cache.terms = key, {}
        entry = cache.terms.get((plan.key, dtype))
        if entry is not None:
            return entry
    bias = attn.position_bias()
    term = (bias.unsqueeze(0) + plan.group_masks.to(bias.device, bias.dtype).unsqueeze(1)).to(dtype)
    if cacheable:
        if len(cache.terms) >= 8:
            cache.terms.pop(next(iter(cache.terms)))
        cache.terms[(plan.key, dtype)] = term.contiguous()
    return term


def window_attention(attn: WindowAttentionV1 | WindowAttentionV2, x: torch.Tensor, plan: WindowPlan,
                     grouped: bool) -> torch.Tensor:
    """Shared V1/V2 attention core on windows in `plan` order: (B*nW, N, C) -> (B*nW, N, C).

    grouped (inference): windows laid out by mask group; one SDPA call per group with a (1, heads, N, N)
    additive term (position bias + the group's shift/padding mask) broadcast over the group's windows. A 4-D
    broadcast mask lets CPU inference use the fused flash kernel, whose output comes back in (windows, N,
    heads, d) order, so no transpose copy is needed.
    not grouped (autograd): official window order and an eager softmax(q k^T + term) v with the (nW, heads,
    N, N) term broadcast over the batch, as SDPA's math fallback (the only one with a mask gradient on CPU)
    would do, minus its extra scaling and NaN guards.
    """
    bw, n, c = x.shape
    q, k, v, scale = attn.qkv_heads(x)
    term = attention_term(attn, plan, q.dtype)
    if not grouped:
        nw = len(plan.window_group)
        logits = (q * (scale if scale is not None else q.shape[-1] ** -0.5)) @ k.transpose(-2, -1)
        if plan.masked:
            term = term[plan.window_group.to(term.device)]  # (nW, heads, N, N), broadcast over the batch
        logits = logits.view(-1, nw if plan.masked else 1, *logits.shape[1:]) + term
        out = logits.softmax(-1).view(bw, -1, n, n) @ v
        return attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(bw, n, c)))
    batch = bw // sum(plan.group_sizes)
    outs, start = [], 0
    for g, size in enumerate(plan.group_sizes):
        sl = slice(start, start + batch * size)
        start += batch * size
        out = F.scaled_dot_product_attention(q[sl], k[sl], v[sl], attn_mask=term[g : g + 1], scale=scale)
        outs.append(out.transpose(1, 2))
    out = torch.cat(outs) if len(outs) > 1 else outs[0]
    return attn.proj_drop(attn.proj(out.reshape(bw, n, c)))


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
        grouped = not torch.is_grad_enabled()  # fused kernel for inference, mask gradients for training
        idx = plan.indices(x.shape[0], x.device, grouped)
        return plan.reverse(self.attn(plan.partition(x, idx), plan, grouped), idx, x.shape[0])

    def forward(self, x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
        if self.post_norm:
            x = x + self.drop_path(self.norm1(self.attention_branch(x, plan)))
            return x + self.drop_path(self.norm2(self.mlp(x)))
        x = x + self.drop_path(self.attention_branch(self.norm1(x), plan))
        return x + self.drop_path(self.mlp(self.norm2(x)))


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
        _, h, w, _ = x.shape
        for block in self.blocks:
            plan = self.plans.get(h, w, self.window, block.shift)
            if self.grad_checkpointing and torch.is_grad_enabled():
                # recompute the block in backward instead of keeping its activations
                x = checkpoint(block, x, plan, use_reentrant=False)
            else:
                x = block(x, plan)
        return self.downsample(x) if self.downsample is not None else x


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
