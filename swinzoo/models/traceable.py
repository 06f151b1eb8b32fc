"""The export path: window padding, shift, masks and gather indices built with tensor ops from the input's shape.

The eager path (`windows.WindowPlan`, cached per shape in a `PlanCache`) does its geometry in Python: under
`torch.export` or ONNX export every such number becomes a constant or a shape guard, so the exported graph only
runs the size it was traced at. Here the same geometry is written in terms of the (symbolic) sizes of the input:
padding to ceil(h / window) * window, the "shift only along axes spanning more than one window" rule as a tensor
condition (a Python `if` on a dynamic size would specialise it), the shift/padding masks from `arange` comparisons,
and partition/roll/reverse as gathers with computed indices. Same numbers as the eager path (same constants,
same order of the bias and mask adds); slower, so only exports switch it on (`traceable(model)`).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from swinzoo.models.layers import SHIFT_MASK_VALUE, Mlp, PatchEmbed
from swinzoo.models.windows import PAD_MASK_VALUE


def _export_switches(module: nn.Module) -> dict:
    """The attributes `traceable` sets on `module`: stages (found by their switches, since swin.py imports this
    module) take the export path without the fast path; MLPs keep GELU's output; patch embedding always pads."""
    if isinstance(module, Mlp):
        return {"recompute_gelu": False}
    if isinstance(module, PatchEmbed):
        return {"always_pad": True}
    if hasattr(module, "traceable") and hasattr(module, "fast_path"):
        return {"fast_path": False, "traceable": True}
    return {}


@contextlib.contextmanager
def traceable(model: nn.Module):
    """Run `model` on the export path (and without the fast path) inside the block; restores both on exit."""
    saved = [(m, name, getattr(m, name)) for m in model.modules() for name in _export_switches(m)]
    try:
        for m, name, _ in saved:
            setattr(m, name, _export_switches(m)[name])
        yield model
    finally:
        for m, name, value in saved:
            setattr(m, name, value)


def size_tensor(size, device) -> torch.Tensor:
    """A (symbolic) size as a 0-d int64 tensor, for `%` and `//` against index tensors: with a symbolic Python
    operand these become scalar ops that the ONNX exporter can only translate for constants."""
    return torch.scalar_tensor(size, dtype=torch.long, device=device)


def _axis(size, window: int, shift: int, dense: bool, device):
    """Per axis of the padded, rolled grid: (padded size, source position of each rolled position, region label).

    Region labels are the official 0 / 1 / 2 cuts [0, -w), [-w, -s), [-s, end) of a shifted axis; an axis that
    is not shifted (no shift, or a classifier axis that fits in one window) is all region 0.
    """
    count = (size + window - 1) // window
    r = torch.arange(count * window, device=device)
    padded = count * window
    if shift == 0:
        return padded, r, torch.zeros_like(r)
    # tensor condition, not `if`: a Python branch on a dynamic size would pin the size in the exported graph
    on = torch.ones((), dtype=torch.long, device=device) if dense else (r >= window).any().long()
    s = shift * on
    label = ((r >= padded - window).long() + (r >= padded - s).long()) * on
    return padded, (r + s) % size_tensor(padded, device), label


def block_forward(block: nn.Module, x: torch.Tensor, dense: bool) -> torch.Tensor:
    """`SwinBlock.forward` with the geometry computed from `x.shape` in the graph."""
    if block.post_norm:
        x = x + block.drop_path(block.norm1(attention_branch(block, x, dense)))
        return x + block.drop_path(block.norm2(block.mlp(x)))
    x = x + block.drop_path(attention_branch(block, block.norm1(x), dense))
    return x + block.drop_path(block.mlp(block.norm2(x)))


def attention_branch(block: nn.Module, x: torch.Tensor, dense: bool) -> torch.Tensor:
    """(B, h, w, C) -> (B, h, w, C): pad, roll and partition as one gather, attend, then gather back and crop."""
    b, h, w, c = x.shape
    win, dev = block.window, x.device
    n = win * win
    hp, src_r, lab_r = _axis(h, win, block.shift, dense, dev)
    wp, src_c, lab_c = _axis(w, win, block.shift, dense, dev)
    x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    nh, nw = hp // win, wp // win
    # rolled-grid (row, col) of every window-order token, windows row-major: (nW, 1) window ids against (1, N)
    # in-window positions. Only a dynamic size against a static one is broadcast, and no view reshapes a dynamic
    # size (the exporter guards the sample's value of a broadcast pair or of a view's size-1 dims into the graph);
    # the views below spell their sizes out, since a -1 would make it divide symbolic sizes and guard on them
    win_id, k = torch.arange(nh * nw, device=dev)[:, None], torch.arange(n, device=dev)[None, :]
    nw_t = size_tensor(nw, dev)
    r = (win_id // nw_t) * win + k // win
    col = (win_id % nw_t) * win + k % win
    sr, sc = src_r[r], src_c[col]
    label = lab_r[r] * 3 + lab_c[col]
    zero = torch.zeros((), dtype=x.dtype, device=dev)
    mask = torch.where(label[:, :, None] == label[:, None, :], zero, zero + SHIFT_MASK_VALUE)
    if not dense:
        mask = mask + torch.where((sr >= h) | (sc >= w), zero + PAD_MASK_VALUE, zero)[:, None, :]
    windows = x.reshape(b, hp * wp, c).index_select(1, (sr * wp + sc).view(nh * nw * n)).view(b * nh * nw, n, c)

    attn = block.attn
    q, k, v, scale = attn.qkv_heads(windows)
    term = (attn.position_bias().unsqueeze(0) + mask.unsqueeze(1)).to(q.dtype)  # (nW, heads, N, N)
    logits = (q * (scale if scale is not None else q.shape[-1] ** -0.5)) @ k.transpose(-2, -1)
    # the window terms repeated per image rather than broadcast over a (B, nW, ...) view of the logits: splitting
    # a symbolic B * nW back into B and nW makes the exporter guard on the sample's sizes
    out = (logits + term.repeat(b, 1, 1, 1)).softmax(-1) @ v
    out = attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(b * nh * nw, n, c)))

    # window-order row of each real token (i, j): the inverse of the gather above, cropping the padding
    t = torch.arange(h * w, device=dev)
    w_t = size_tensor(w, dev)
    ri = (t // w_t - src_r[0]) % size_tensor(hp, dev)  # src[0] is the axis's shift
    cj = (t % w_t - src_c[0]) % size_tensor(wp, dev)
    row = ((ri // win) * nw + cj // win) * n + (ri % win) * win + cj % win
    return out.view(b, nh * nw * n, c).index_select(1, row).view(b, h, w, c)


def stage_blocks(stage: nn.Module, x: torch.Tensor, dense: bool) -> torch.Tensor:
    for block in stage.blocks:
        x = block_forward(block, x, dense)
    return x


def pad_even(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, 2*ceil(H/2), 2*ceil(W/2), C): patch merging's padding, unconditional (an `if` on an odd
    dynamic size would pin it)."""
    h, w = x.shape[1], x.shape[2]
    return F.pad(x, (0, 0, 0, 2 * ((w + 1) // 2) - w, 0, 2 * ((h + 1) // 2) - h))
