"""Pieces Swin V1 and V2 share: window partition, shift mask, patch embedding, MLP, patch merging, drop path.

Feature maps travel as channels-last `(B, H, W, C)` tensors; the official code keeps `(B, H*W, C)` and reshapes
inside every block, which gives the same numbers with more copies.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from swinzoo.models import cpu_gemm
from swinzoo.models.cpu_gemm import Linear

# The official shift mask uses -100, not -inf: after softmax the masked weights are ~e-44, not exactly zero,
# and matching the official logits to the last digit needs the same constant.
SHIFT_MASK_VALUE = -100.0


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/window * W/window, window*window, C), windows in batch-major, row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def built_on_cpu(build):
    """`build`'s tensor computed on the CPU, then put on the default device. A shape-only build of a model (the meta
    device) would otherwise run `torch.stack` as a Python reference whose first call imports torch._dynamo (~1 s of
    every command that checks a file against its config)."""

    @functools.wraps(build)
    def built(*args) -> torch.Tensor:
        with torch.device("cpu"):
            table = build(*args)
        return table.to(torch.get_default_device())

    return built


@built_on_cpu
def relative_position_index(window: int) -> torch.Tensor:
    """(N, N) int64 index into a ((2w-1)^2, heads) table: (dh + w-1) * (2w-1) + (dw + w-1), N = w*w."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shift_mask(resolution: int, window: int, shift: int) -> torch.Tensor:
    """(nW, N, N) additive mask for a cyclically shifted grid: 0 inside a region, -100 across regions.

    The rolled grid is cut into 3x3 regions (0:-w, -w:-s, -s:) per axis; tokens of different regions that land
    in the same window must not attend to each other.
    """
    region = torch.zeros(1, resolution, resolution, 1)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in cuts:
        for ws in cuts:
            region[:, hs, ws, :] = label
            label += 1
    ids = window_partition(region, window).squeeze(-1)
    mask = ids[:, None, :] - ids[:, :, None]
    return mask.masked_fill(mask != 0, SHIFT_MASK_VALUE).masked_fill(mask == 0, 0.0)


class DropPath(nn.Module):
    """Stochastic depth: zero a whole sample's residual branch with probability p, rescale the survivors."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PatchEmbed(nn.Module):
    """(B, 3, H, W) -> (B, ceil(H/p), ceil(W/p), C): a stride-p convolution, then LayerNorm when `patch_norm`.

    A side that is not a multiple of p is zero-padded at the bottom/right first (as timm's dynamic_img_pad).
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, patch_norm: bool) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else nn.Identity()
        self.always_pad = False  # export (`traceable`): an `if` on a dynamic size would pin it in the graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.proj.stride[0]
        pad_h, pad_w = -x.shape[2] % p, -x.shape[3] % p
        if self.always_pad or pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        # a channels-last input makes the convolution write (B, H, W, C) directly: the permute is then free
        return self.norm(self.proj(x.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1))


def hooked(module: nn.Module) -> bool:
    """Whether `module` has forward hooks, which must see it called as a module, on the whole input."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


class Mlp(nn.Module):
    """(..., C) -> (..., C): fc1 -> exact-erf GELU -> dropout -> fc2 -> dropout.

    `recompute_gelu` (on by default; `SwinTransformer.set_fast_path` switches it): when training on the CPU without
    dropout, run as one `MlpGeluRecompute` autograd node, which keeps fc1's output but not the GELU's. Same numbers.
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear(hidden, dim)
        self.drop = nn.Dropout(drop)
        self.recompute_gelu = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.recompute_applies(x):
            device = x.device.type
            # under autocast the node computes in the autocast dtype, as autocast's Linear would
            dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
            with torch.autocast(device, enabled=False):
                return MlpGeluRecompute.apply(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias,
                                              dtype)
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))

    def recompute_applies(self, x: torch.Tensor) -> bool:
        """Switched on, on the CPU, autograd recording, no dropout to apply, and outside torch.compile (inductor
        plans its own recomputation). Not on a GPU: there a bf16 Swin-T / SwinV2-T training step that stored the
        GELU ran 0-9% faster (H200, batch 8 and 64, docs/performance.md); checkpointing is the memory switch."""
        return (
            self.recompute_gelu
            and x.device.type == "cpu"
            and torch.is_grad_enabled()
            and not (self.training and self.drop.p > 0)
            and not torch.compiler.is_compiling()
            and self.plain()
        )

    def plain(self) -> bool:
        """fc1, GELU and fc2 as built and without hooks: the node uses their weights, never calls them, so a
        wrapped layer (a LoRA adapter) or a hook must see them called as modules."""
        return (type(self.fc1) is Linear and type(self.fc2) is Linear and type(self.act) is nn.GELU
                and self.act.approximate == "none"
                and not any(map(hooked, (self.fc1, self.act, self.fc2))))


# Training runs the MLP over row chunks whose 4C-wide hidden is at most this size. glibc serves allocations
# over its mmap threshold (at most 32 MiB) with fresh mappings, so a whole-batch stage-1 hidden (38 MiB at
# Swin-T batch 8) costs ~9k page faults every time one is made; chunks come from the heap and stay in cache.
# A Swin-T stage-1 MLP forward + backward alone: 165 ms whole-batch, 93-116 ms in 1.5-12 MiB chunks; in whole
# training steps against timm, 8 MiB read best of 2/4/8 MiB (and matches the inference runs' size).
TRAIN_CHUNK_BYTES = 8 << 20


class MlpGeluRecompute(torch.autograd.Function):
    """fc1 -> exact GELU -> fc2 as one autograd node over row chunks; it keeps fc1's output, not the GELU's.

    Autograd would store both (two 4C-wide tensors per token); here the GELU is recomputed in backward, one
    elementwise pass, for one stored 4C tensor less per block. Forward and backward walk the tokens in chunks
    (`TRAIN_CHUNK_BYTES` of hidden each), so no 4C-wide temporary is ever made whole-batch; weight gradients
    accumulate over the chunks. Same numbers as autograd up to the order of those sums.
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, dtype=None):
        dtype = dtype or x.dtype  # the compute dtype: x's, or the autocast dtype (bf16)
        # x cast once and kept in the compute dtype (as autocast keeps its cast): backward needs no second cast
        rows = x.reshape(-1, x.shape[-1]).to(dtype)
        w1c, b1c, w2c, b2c = (t.to(dtype) for t in (w1, b1, w2, b2))
        step = max(1, TRAIN_CHUNK_BYTES // (w1.shape[0] * w1c.element_size()))
        if x.device.type != "cpu":  # (benchmarks/gpu.py times the node on a GPU) a caching allocator: one chunk
            step = max(1, rows.shape[0])
        chunks = max(1, -(-rows.shape[0] // step))
        step = max(1, -(-rows.shape[0] // chunks))  # chunks of equal size: no small ragged last GEMM
        out = rows.new_empty(rows.shape[0], w2.shape[0], dtype=dtype)
        hidden, act = [], None
        for start in range(0, rows.shape[0], step):
            h = cpu_gemm.linear(rows[start : start + step], w1c, b1c)
            hidden.append(h)
            act = gelu_into(h, act)
            cpu_gemm.linear_into(out[start : start + step], act[: h.shape[0]], w2c, b2c)
        ctx.step, ctx.weight_dtype, ctx.x_shape, ctx.x_dtype = step, w1.dtype, x.shape, x.dtype
        # the compute-dtype weights, not the parameters: backward would otherwise cast them again
        ctx.save_for_backward(rows, w1c, w2c, *hidden)
        return out.view(*x.shape[:-1], w2.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        rows, w1c, w2c, *hidden = ctx.saved_tensors
        need_x, need_w1, need_b1, need_w2, need_b2, _ = ctx.needs_input_grad
        dtype, weight_dtype = w1c.dtype, ctx.weight_dtype
        g_out = grad_out.reshape(-1, grad_out.shape[-1]).to(dtype)
        # weight and bias gradients: the first chunk's product is the sum's start (no zeroed accumulator to
        # allocate and fill), later chunks add into it, in the weights' dtype (fp32 under bf16 autocast)
        grad_w1 = grad_b1 = grad_w2 = None
        # sum(dtype=...) would first copy the whole tensor to that dtype; the bf16 sum accumulates in fp32 anyway
        grad_b2 = g_out.sum(0).to(weight_dtype) if need_b2 else None
        grad_x = rows.new_empty(rows.shape, dtype=dtype) if need_x else None
        act = None
        for h, start in zip(hidden, range(0, rows.shape[0], ctx.step)):
            stop = start + h.shape[0]
            g = g_out[start:stop]
            if need_w2:
                act = gelu_into(h, act)
                grad_w2 = accumulate_weight_grad(grad_w2, g, act[: h.shape[0]], weight_dtype)
            # in place into the product just made: no fresh hidden-sized tensor (see gelu_into)
            g_h = cpu_gemm.mm(g, w2c)
            torch.ops.aten.gelu_backward.grad_input(g_h, h, grad_input=g_h)
            if need_w1:
                grad_w1 = accumulate_weight_grad(grad_w1, g_h, rows[start:stop], weight_dtype)
            if need_b1:
                part = g_h.sum(0)
                grad_b1 = part.to(weight_dtype) if grad_b1 is None else grad_b1.add_(part)
            if need_x:
                cpu_gemm.mm(g_h, w1c, out=grad_x[start:stop])
        if not hidden:  # no rows: zero weight gradients, as autograd gives
            grad_w1, grad_w2 = (w.new_zeros(w.shape, dtype=weight_dtype) if need else None
                                for w, need in ((w1c, need_w1), (w2c, need_w2)))
            grad_b1 = w1c.new_zeros(w1c.shape[0], dtype=weight_dtype) if need_b1 else None
        grad_x = grad_x.view(ctx.x_shape).to(ctx.x_dtype) if need_x else None
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2, None


def gelu_into(h: torch.Tensor, scratch: torch.Tensor | None) -> torch.Tensor:
    """GELU of a hidden chunk into `scratch` (made on the first chunk, reused by the later ones, which are never
    longer): rows [0, len(h)) hold the result. A fresh hidden-sized tensor per chunk is a cache-cold write, and
    under glibc as it is often new pages for the kernel to map and zero."""
    if scratch is None:
        scratch = torch.empty_like(h)
    torch.ops.aten.gelu.out(h, out=scratch[: h.shape[0]])
    return scratch


def accumulate_weight_grad(total: torch.Tensor | None, grad: torch.Tensor, x: torch.Tensor, dtype: torch.dtype
                           ) -> torch.Tensor:
    """total + grad.T @ x in `dtype` (a new tensor when total is None). Under autocast grad, x are bf16 and the sum
    fp32; fp32 products go through `cpu_gemm` (oneDNN where it is the faster library)."""
    if total is None:
        return cpu_gemm.weight_grad(grad, x).to(dtype)
    return cpu_gemm.weight_grad(grad, x, accumulate=total)


class PatchMerging(nn.Module):
    """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C); an odd side is zero-padded at the bottom/right first.

    Each 2x2 patch is concatenated as [x(0,0), x(1,0), x(0,1), x(1,1)] (row, col) on channels: the official
    order, which the reduction weights depend on. V1 normalises the 4C vector then reduces; V2 reduces then
    normalises the 2C result (`post_norm`).
    """

    def __init__(self, dim: int, post_norm: bool) -> None:
        super().__init__()
        self.post_norm = post_norm
        self.reduction = Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim if post_norm else 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
            h, w = h + h % 2, w + w % 2
        return self.reduce(self.merge_order(x).flatten(3))

    @staticmethod
    def merge_order(x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, ...) -> (B, H/2, W/2, 4, ...), each 2x2 patch in the official concatenation order.

        Works on features and on (B, H, W) grids of row indices alike (inference gathers with the latter).
        """
        b, h, w = x.shape[:3]
        # (B, H/2, row, W/2, col, ...) -> (B, H/2, W/2, col, row, ...): flattening (col, row) gives the official order
        x = x.reshape(b, h // 2, 2, w // 2, 2, *x.shape[3:]).permute(0, 1, 3, 4, 2, *range(5, x.ndim + 2))
        return x.reshape(b, h // 2, w // 2, 4, *x.shape[5:])

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H/2, W/2, 4C) -> (B, H/2, W/2, 2C): norm and reduction in the V1 or V2 order."""
        if self.post_norm:
            return self.norm(self.reduction(x))
        return self.reduction(self.norm(x))
