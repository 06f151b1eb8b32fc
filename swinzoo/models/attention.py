"""Window attention, V1 and V2: one shared core, and the two ways the papers compute logits and position bias.

V1: scaled dot product + a learned relative position bias table. V2: cosine similarity times a clamped learned
scale + 16*sigmoid of a continuous position bias MLP over log-spaced offsets. Both add one term per block
(position bias + shift/padding mask), cached in eval mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from swinzoo.hardware import cpu_vendor
from swinzoo.models.cache_keys import param_key, with_newest
from swinzoo.models.cpu_gemm import Linear
from swinzoo.models.layers import built_on_cpu, relative_position_index
from swinzoo.models.windows import WindowPlan

# The official clamp is `torch.log(torch.tensor(1. / 0.01))`: log(100) rounded to float32, which differs from
# math.log(100) in the 8th digit and so moves float64 logits by ~1e-6 when a logit scale sits at the clamp.
LOGIT_SCALE_MAX = float(torch.log(torch.tensor(1.0 / 0.01)))

# The official -100 mask makes probabilities of ~e^-100 = 4e-44: denormal in fp32 (and bf16), which Intel CPUs
# compute and multiply through microcode assists. On an AMX Xeon a softmax over masked 49-token windows took 5x as
# long, the products with its probabilities 9-10x (docs/performance.md). Where `FLOOR_LOGITS`, the CPU path raises
# each fp32 logit to at least its row's max - 80 before the softmax: e^-80 = 1.8e-35 is a normal float, and a
# probability that small, in a row summing to 1, changes no fp32 or bf16 sum it enters (outputs and gradients came
# out the same bits). Training also sets probabilities below 1e-30 to zero after the softmax, so the backward's
# products of tiny probabilities and gradients make no denormals either. Intel CPUs only: measured there; what the
# two extra passes cost on AMD is unmeasured.
LOGIT_FLOOR = 80.0
PROBABILITY_FLOOR = 1e-30
FLOOR_LOGITS = cpu_vendor() == "GenuineIntel"


@built_on_cpu
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
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.proj = Linear(dim, dim)
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
        # index_select: its backward is an index_add, table[idx]'s an accumulating index_put (12x slower at w12)
        bias = self.relative_position_bias_table.index_select(0, self.relative_position_index.view(-1))
        return bias.view(n, n, -1).permute(2, 0, 1)

    def qkv_heads(self, x: torch.Tensor, contiguous: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float | None]:
        """(B, N, C) -> q, k, v (B, heads, N, d) and the logit scale (None: SDPA's default 1/sqrt(d), the official
        qk_scale). `contiguous` packs the three in one copy for the inference path (`fast_path.packs_heads`):
        batched products would copy each strided view."""
        q, k, v = split_heads(self.qkv(x), self.num_heads, contiguous)
        return q, k, v, None

    def forward(self, x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
        return window_attention(self, x, plan)


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
        self.qkv = Linear(dim, 3 * dim, bias=False)
        if qkv_bias:  # no k bias: a key bias shifts every logit of a query equally, softmax cancels it
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = Linear(dim, dim)
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
        coords = self.relative_coords_table
        # fp32 under autocast too: the MLP is tiny ((2w-1)^2 rows), and in bf16 its gradients were ~10% off
        with torch.autocast(coords.device.type, enabled=False):
            table = self.cpb_mlp(coords).view(-1, self.num_heads)
            bias = table.index_select(0, self.relative_position_index.view(-1)).view(n, n, -1).permute(2, 0, 1)
            return 16 * torch.sigmoid(bias)

    def qkv_heads(self, x: torch.Tensor, contiguous: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float | None]:
        """(B, N, C) -> cosine-ready q * logit scale, k (both unit rows), v (B, heads, N, d), and scale 1."""
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        q, k, v = split_heads(self.qkv.forward_with_bias(x, bias), self.num_heads, contiguous)
        scale = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()
        # cosine similarity times the per-head scale; folding the scale into q lets SDPA run with scale 1
        # float16: F.normalize's eps (1e-12) is 0 there, and a padded token's key, a zero vector (V2 has no k
        # bias), would come out 0/0 = NaN; the node clamps its fp32 norm instead
        if (torch.is_grad_enabled() and not torch.compiler.is_compiling()) or q.dtype == torch.float16:
            return ScaledUnitRows.apply(q, scale), ScaledUnitRows.apply(k, None), v, 1.0
        # in place: q keeps its dtype (bf16 under autocast, where `* scale` would promote it to fp32), rounded once
        # from the fp32 product, as the cast at the bf16 product with k would round it
        return F.normalize(q, dim=-1).mul_(scale), F.normalize(k, dim=-1), v, 1.0

    def forward(self, x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
        return window_attention(self, x, plan)


def split_heads(qkv: torch.Tensor, heads: int, contiguous: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, N, 3C) -> q, k, v (B, heads, N, d), views of `qkv` (or one packed copy when `contiguous`)."""
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        return SplitHeads.apply(qkv, heads)
    b, n, c3 = qkv.shape
    qkv = qkv.view(b, n, 3, heads, c3 // (3 * heads)).permute(2, 0, 3, 1, 4)
    return (qkv.contiguous() if contiguous else qkv).unbind(0)


class SplitHeads(torch.autograd.Function):
    """split_heads whose backward writes the three head gradients straight into one (B, N, 3C) tensor.

    Autograd's unbind would stack them (one copy) and then make the permuted stack contiguous for qkv's
    backward (a second, strided copy of 3C per token, the slowest copy of a training step).
    """

    @staticmethod
    def forward(ctx, qkv, heads):
        b, n, c3 = qkv.shape
        ctx.shape = (b, n, 3, heads, c3 // (3 * heads))
        return qkv.view(ctx.shape).permute(2, 0, 3, 1, 4).unbind(0)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        b, n, three, heads, d = ctx.shape
        like = next(g for g in grads if g is not None)
        grad = like.new_empty(ctx.shape) if all(g is not None for g in grads) else like.new_zeros(ctx.shape)
        parts = grad.permute(2, 0, 3, 1, 4)
        for i, g in enumerate(grads):
            if g is not None:
                parts[i].copy_(g)
        return grad.view(b, n, three * heads * d), None


class ScaledUnitRows(torch.autograd.Function):
    """x / max(|x|, 1e-12) * scale over the last dim (F.normalize, then a per-head scale), as one autograd node.

    Autograd through F.normalize and the scale makes ~10 passes over the (B, heads, N, d) tensor (norm, clamp,
    div, mul; in backward div, neg, mul, masked_fill, the norm's backward and the scale's sum); here forward
    reads x twice and writes once, backward reads x and the gradient twice. The row norms are summed in fp32
    also under bf16 autocast. Same values as autograd through F.normalize (float64 tests).
    """

    @staticmethod
    def forward(ctx, x, scale):
        acc = torch.promote_types(x.dtype, torch.float32)
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=acc)
        clamped = norm < 1e-12  # F.normalize's eps: no gradient flows through a clamped norm
        inv = norm.clamp_min_(1e-12).reciprocal_()
        factor = inv if scale is None else inv * scale
        ctx.save_for_backward(x, inv, factor, clamped)
        ctx.has_scale = scale is not None
        # written contiguous: x is a strided view of the qkv output, which `x * factor` would copy in its layout and
        # the attention node would then copy again to make (B, heads, N, d) contiguous for its products
        return torch.mul(x, low_precision_factor(factor, x.dtype), out=x.new_empty(x.shape))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, inv, factor, clamped = ctx.saved_tensors
        # y = x * inv * s: dy/dx = s * inv * (g - x_hat <x_hat, g>), dy/ds = <x_hat, g> summed over rows
        gx = (grad * x).sum(-1, keepdim=True, dtype=inv.dtype)  # <x, g> per row
        grad_scale = None
        if ctx.has_scale and ctx.needs_input_grad[1]:
            grad_scale = (gx * inv).sum(dim=tuple(d for d in range(gx.dim()) if d != gx.dim() - 3), keepdim=True)
            grad_scale = grad_scale.view(-1, 1, 1)
        along = (-factor * inv * inv * gx).masked_fill_(clamped, 0.0)
        if x.dtype == torch.float16:  # in fp32, cast once: 1/|x| of a zero row (1e12) is inf in float16
            return torch.addcmul(grad * factor, x, along).to(x.dtype), grad_scale
        grad_x = torch.addcmul(grad * factor.to(grad.dtype), x, along.to(x.dtype))
        return grad_x, grad_scale


def low_precision_factor(factor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The fp32 row factor in x's dtype, except in float16, where a zero row's 1e12 would be inf: kept fp32 there
    (the product runs in fp32 and is cast once)."""
    return factor if dtype == torch.float16 else factor.to(dtype)


class SoftmaxAttention(torch.autograd.Function):
    """softmax(scale * q k^T + term) v as one autograd node, for training; same values as autograd (float64 tests).

    q, k, v: (B*nW, heads, N, d); term: (G, heads, N, N), added to each run of G consecutive windows.
    Autograd would make three (B*nW, heads, N, N) tensors in forward (q k^T, + term, softmax) and, with the term
    added in place, a zero-filled copy of the logits in backward; here the logits, term and softmax share one
    buffer, which is also what backward keeps, and backward turns its gradient into the logits' (the softmax and
    its backward in place where that pays, `softmax_rows`).
    """

    @staticmethod
    def forward(ctx, q, k, v, term, scale):
        # q, k, v arrive as strided views of the qkv output, which matmul would copy to contiguous (batch, heads)
        # at every product, forward and backward: copied once here and kept instead of the views
        # (q scaled before the product, in the official order, in the same pass)
        q = q.contiguous() if scale == 1.0 else torch.mul(q, scale, out=q.new_empty(q.shape))
        k, v = k.contiguous(), v.contiguous()
        logits = torch.matmul(q, k.transpose(-2, -1))
        groups = term.shape[0]
        if term.dtype == logits.dtype:
            probs = logits
            probs.view(-1, groups, *probs.shape[1:]).add_(term)
        else:  # bf16 logits + the fp32 term: softmax in fp32 (CPU's bf16 softmax is ~2x slower on 49-wide rows)
            probs = torch.add(logits.view(-1, groups, *logits.shape[1:]), term).view(logits.shape)
            del logits
        floors = floors_logits(probs)
        if floors:
            floor_logits_(probs, -1)
        probs = softmax_rows(probs)
        if floors:
            torch.threshold_(probs, PROBABILITY_FLOOR, 0.0)
        probs = probs.to(q.dtype)
        ctx.save_for_backward(q, k, v, probs)
        ctx.scale, ctx.groups = scale, groups
        return torch.matmul(probs, v)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        q, k, v, probs = ctx.saved_tensors
        grad = grad.contiguous()  # the head merge's gradient is strided; two products read it
        grad_v = torch.matmul(probs.transpose(-2, -1), grad)
        grad_logits = torch.matmul(grad, v.transpose(-2, -1))
        grad_logits = softmax_rows_backward(grad_logits, probs)
        grad_term = None
        if ctx.needs_input_grad[3]:
            grad_term = grad_logits.view(-1, ctx.groups, *grad_logits.shape[1:]).sum(0)
        grad_q = torch.matmul(grad_logits, k)
        if ctx.scale != 1.0:
            grad_q.mul_(ctx.scale)
        grad_k = torch.matmul(grad_logits.transpose(-2, -1), q)  # q is the scaled one
        return grad_q, grad_k, grad_v, grad_term, None


def floors_logits(logits: torch.Tensor) -> bool:
    """Whether the softmax of these logits goes through `floor_logits_` first: fp32 on the CPU, `FLOOR_LOGITS`."""
    return FLOOR_LOGITS and logits.dtype == torch.float32 and logits.device.type == "cpu"


def floor_logits_(logits: torch.Tensor, dim: int) -> torch.Tensor:
    """Each logit raised to at least the max of its softmax slice (along `dim`) - `LOGIT_FLOOR`, in place."""
    return torch.maximum(logits, logits.amax(dim, keepdim=True).sub_(LOGIT_FLOOR), out=logits)


def softmax_rows(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim, in place in `x` where that is as fast as into a new tensor.

    On the CPU, torch's softmax over rows whose length is not a multiple of 16 ran 1.2-1.3x as long in place as
    into a new tensor (fp32, 49-token windows, Zen 5), its bf16 backward 1.4-1.8x, likely the tail of one row's
    partial vector written and then read back with the next row; at 64 tokens in place was as fast or faster, and
    spares a buffer. Same values either way.
    """
    if in_place_pays(x):
        return torch.softmax(x, -1, out=x)
    return torch.softmax(x, -1)


def softmax_rows_backward(grad: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """The logits' gradient from the probabilities' (`softmax_rows`'s backward), in place in `grad` where that pays."""
    if in_place_pays(grad):
        return torch.ops.aten._softmax_backward_data.out(grad, probs, -1, probs.dtype, grad_input=grad)
    return torch.ops.aten._softmax_backward_data(grad, probs, -1, probs.dtype)


def in_place_pays(x: torch.Tensor) -> bool:
    return x.device.type != "cpu" or x.shape[-1] % 16 == 0


class TermCache:
    """Eval-mode cache of a block's additive attention term (position bias, V2's 16*sigmoid(CPB), + group masks).

    Entries are keyed on the data pointers and in-place version counters of the parameters the bias is made of
    (`cache_keys.param_key`), so an optimizer step, `load_state_dict`, `.to()` or `.double()` invalidates them;
    `train()` clears them. The cache is bypassed in training, whenever autograd records (the term must carry
    gradients) and under `torch.compile` (the compiled graph computes the term itself). `state` (the key and its
    terms) is replaced whole, never changed in place: threads sharing the model never see a half-made entry.
    """

    def __init__(self) -> None:
        self.state: tuple[tuple, dict[tuple, torch.Tensor]] = ((), {})

    @property
    def terms(self) -> dict[tuple, torch.Tensor]:
        return self.state[1]

    def clear(self) -> None:
        self.state = ((), {})


def attention_term(attn: WindowAttentionV1 | WindowAttentionV2, plan: WindowPlan, dtype: torch.dtype) -> torch.Tensor:
    """(G, heads, N, N): position bias + the mask of each window group of `plan`."""
    params = attn.bias_parameters()
    # inference tensors (a model converted inside inference_mode) have no version counter to key on
    cacheable = not (attn.training or torch.is_grad_enabled() or torch.compiler.is_compiling()
                     or any(p.is_inference() for p in params))
    if cacheable:
        key = param_key(*params)
        cached_key, terms = attn.term_cache.state
        entry = terms.get((plan.key, dtype)) if cached_key == key else None
        if entry is not None:
            return entry
    bias = attn.position_bias()
    term = (bias.unsqueeze(0) + plan.group_masks.to(bias.device, bias.dtype).unsqueeze(1)).to(dtype)
    if cacheable:
        kept = terms if cached_key == key else {}  # other parameters: every term is stale
        attn.term_cache.state = (key, with_newest(kept, (plan.key, dtype), term.contiguous(), 8))
    return term


def window_attention(attn: WindowAttentionV1 | WindowAttentionV2, x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
    """(B*nW, N, C) -> (B*nW, N, C) on windows in the official order: the reference attention.

    An eager softmax(q k^T + term) v with the (nW, heads, N, N) term broadcast over the batch, as SDPA's math
    fallback (the only one with a mask gradient on CPU) would do, minus its extra scaling and NaN guards; while
    autograd records, the same as one node (`SoftmaxAttention`).
    """
    bw, n, c = x.shape
    q, k, v, scale = attn.qkv_heads(x)
    # the term stays fp32 under bf16 autocast: the bias is added and the softmax taken in fp32 (as autocast's
    # type promotion does for the reference code), the products with v and k in bf16
    term = attention_term(attn, plan, torch.promote_types(q.dtype, torch.float32))
    nw = len(plan.window_group)
    if scale is None:  # V1: the official qk_scale; V2's scale is already in q
        scale = q.shape[-1] ** -0.5
    if plan.masked:
        # (nW, heads, N, N), broadcast over the batch; index_select, not term[idx]: the latter's backward (an
        # accumulating index_put) took 3 ms for Swin-T's stage 1 against 0.06 ms
        term = term.index_select(0, plan.window_group.to(term.device))
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        out = SoftmaxAttention.apply(q, k, v, term, scale)
    else:
        logits = (q * scale if scale != 1.0 else q) @ k.transpose(-2, -1)
        logits = logits.view(-1, nw if plan.masked else 1, *logits.shape[1:]) + term
        out = logits.softmax(-1).to(v.dtype).view(bw, -1, n, n) @ v
    return attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(bw, n, c)))
