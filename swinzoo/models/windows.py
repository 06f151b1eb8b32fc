"""Window plans: where each token of a (possibly padded, possibly shifted) grid goes, as gather indices.

A block's attention needs its tokens grouped by window. The official code gets there with roll -> partition
(two strided copies) and back with reverse -> roll (two more). A `WindowPlan` replaces each pair with one
row gather (`index_select` over contiguous C-vectors, several times faster than a strided permute on CPU).

The plan also sorts windows by their mask. A shifted grid has at most a handful of distinct window masks
(interior, bottom edge, right edge, corner; a few more with padding), so windows with the same mask are laid
out next to each other, batch by batch, and inference adds one (1, heads, N, N) term per stretch of a group
(see `chunks`), broadcast over its windows (one SDPA call per stretch off the CPU): no (B*nW, heads, N, N) mask
is ever materialised.

Geometry rule for any input size (the configured resolution gives exactly the official geometry):
- a block keeps the window it was built with (`SwinConfig.stage_window` at the configured resolution), so its
  position bias never changes;
- the grid is zero-padded at the bottom/right to a multiple of the window and the padded tokens are masked out
  as keys (`PAD_MASK_VALUE`), so they never reach a real token; a stage smaller than the window is padded up
  to it, which is the official clamp (window = grid) seen through the same bias table;
- odd blocks shift by window // 2 along each axis whose padded grid spans more than one window (the official
  rule on a square grid: no shift once the stage fits in one window). Padding happens before the roll, and
  the shift regions are cut on the padded grid.

A `dense` plan follows the official detection backbone instead (`models/backbone.py`): padding is not masked
(the zero tokens take part in attention as keys, only the shift mask applies), and odd blocks shift along both
axes even when the padded grid is a single window.
"""

from __future__ import annotations

import contextlib
import itertools

import torch
import torch.nn.functional as F

from swinzoo.models.cache_keys import with_newest
from swinzoo.models.layers import SHIFT_MASK_VALUE

# Large enough that exp() underflows to exactly 0 next to any real logit (even in float64), finite so that a
# window made only of padding still has a well-defined softmax (no NaN to leak through 0 * NaN).
PAD_MASK_VALUE = -1.0e4


def _region_labels(size: int, window: int, shift: int) -> torch.Tensor:
    """(size,) official shift regions along one rolled axis: 0 for [0, -w), 1 for [-w, -s), 2 for [-s, size)."""
    labels = torch.zeros(size, dtype=torch.long)
    if shift:
        labels[size - window :] = 1
        labels[size - shift :] = 2
    return labels


class WindowPlan:
    """Gather indices and grouped masks for one block geometry (grid h x w, window, shift).

    Tokens in window order are laid out (group, batch, window in group, token in window); `group_sizes` counts
    windows per image in each group and `group_masks` is (G, N, N), the additive shift/padding mask of a group.
    """

    def __init__(self, h: int, w: int, window: int, shift: int, dense: bool = False) -> None:
        self.h, self.w, self.window, self.dense = h, w, window, dense
        self.hp, self.wp = -(-h // window) * window, -(-w // window) * window
        self.shift_h = shift if self.hp > window or dense else 0
        self.shift_w = shift if self.wp > window or dense else 0
        n, nh, nw = window * window, self.hp // window, self.wp // window
        # rolled-grid coordinates of every window-order token, (nW, N) each, windows row-major
        r = torch.arange(self.hp).view(nh, window)[:, None, :, None].expand(nh, nw, window, window).reshape(-1, n)
        c = torch.arange(self.wp).view(nw, window)[None, :, None, :].expand(nh, nw, window, window).reshape(-1, n)
        # torch.roll(x, -s)[i] = x[(i + s) % size]: the padded-grid position each rolled token comes from
        src_r, src_c = (r + self.shift_h) % self.hp, (c + self.shift_w) % self.wp
        label = _region_labels(self.hp, window, self.shift_h)[r] * 3 + _region_labels(self.wp, window, self.shift_w)[c]
        masks = torch.where(label[:, :, None] == label[:, None, :], 0.0, SHIFT_MASK_VALUE)
        if not dense:
            padded = (src_r >= h) | (src_c >= w)
            masks = masks + torch.where(padded, PAD_MASK_VALUE, 0.0)[:, None, :]
        uniq, group = torch.unique(masks.view(masks.shape[0], -1), dim=0, return_inverse=True)
        self.group_sizes = tuple(torch.bincount(group, minlength=uniq.shape[0]).tolist())
        self.group_masks = uniq.view(-1, n, n)  # (G, N, N)
        self.window_group = group  # (nW,) group of each window, official (row-major) window order
        self.masked = bool(uniq.any())  # False: no shift and no padding, the term is the position bias alone
        self.order = torch.sort(group, stable=True).indices  # windows sorted by group
        self.source = src_r * self.wp + src_c  # (nW, N) padded-grid position of each token, official order
        self._batch_cache: dict[tuple, tuple[torch.Tensor, ...]] = {}
        self._chunk_cache: dict[tuple[int, int], list] = {}

    @property
    def padded(self) -> bool:
        return self.hp != self.h or self.wp != self.w

    @property
    def single_window(self) -> bool:
        """One unshifted window is the whole (unpadded) grid: window order is grid order, partitions are views."""
        return self.h == self.w == self.window and not (self.shift_h or self.shift_w)

    @property
    def key(self) -> tuple[int, int, int, int, int, bool]:
        return (self.h, self.w, self.window, self.shift_h, self.shift_w, self.dense)

    def indices(self, batch: int, device: torch.device, grouped: bool) -> tuple[torch.Tensor, ...]:
        """Gather indices for a batch: (into, into_inverse, back, back_inverse).

        `into` (B*nW*N,): rows of the padded (B*Hp*Wp, C) grid in window order, laid out (group, batch, window)
        when `grouped`, else (batch, window) in the official order. `back` (B*h*w,): the window-order row of
        each real token. The inverses make the backward of each gather another gather (`RowGather`); the last
        one points padded windows rows at an extra zero row.
        """
        key = (batch, device, grouped)
        if not torch.compiler.is_compiling() and key in self._batch_cache:
            return self._batch_cache[key]
        with outside_inference_mode():
            out = self._build_indices(batch, device, grouped)
        if not torch.compiler.is_compiling():
            self._batch_cache = {key: out}  # one layout at a time: indices are cheap to rebuild
        return out

    def _build_indices(self, batch: int, device: torch.device, grouped: bool) -> tuple[torch.Tensor, ...]:
        lp = self.hp * self.wp
        b = torch.arange(batch)
        if grouped:
            parts, start = [], 0
            for size in self.group_sizes:
                wins = self.order[start : start + size]
                parts.append((b[:, None] * lp + self.source[wins].reshape(1, -1)).reshape(-1))
                start += size
            into = torch.cat(parts)
        else:
            into = (b[:, None] * lp + self.source.reshape(1, -1)).reshape(-1)
        into_inverse = torch.empty_like(into)
        into_inverse[into] = torch.arange(into.numel())
        real = (torch.arange(self.h)[:, None] * self.wp + torch.arange(self.w)[None, :]).reshape(-1)
        back = into_inverse.view(batch, lp)[:, real].reshape(-1)
        back_inverse = torch.full((batch * lp,), back.numel(), dtype=torch.long)
        back_inverse[back] = torch.arange(back.numel())
        return tuple(t.to(device) for t in (into, into_inverse, back, back_inverse))

    def chunks(self, batch: int, max_windows: int) -> list[tuple[int, int, tuple[tuple[int, int, int], ...]]]:
        """Runs of at most `max_windows` consecutive windows of the grouped layout (`indices(..., grouped=True)`),
        as (first row, end row, segments); a segment (first window, end window, group) is the part of the run in
        one mask group, windows counted from the run's start. Runs are balanced (equal sizes up to one window)
        and may span groups: only attention needs a single mask, the token-wise ops run on the whole run.
        """
        key = (batch, max_windows)
        if key not in self._chunk_cache:
            total = sum(self.group_sizes) * batch
            count = max(1, -(-total // max_windows))  # an empty batch: one empty run
            bounds = [total * i // count for i in range(count + 1)]
            group_ends = [batch * end for end in itertools.accumulate(self.group_sizes)]
            n, runs = self.window**2, []
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                segments, start = [], lo
                for g, end in enumerate(group_ends):
                    if start < hi and start < end:
                        stop = min(hi, end)
                        segments.append((start - lo, stop - lo, g))
                        start = stop
                runs.append((lo * n, hi * n, tuple(segments)))
            self._chunk_cache[key] = runs
        return self._chunk_cache[key]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, w, C) -> (B, Hp, Wp, C), zeros at the bottom/right: the grid `indices` rows point into."""
        return F.pad(x, (0, 0, 0, self.wp - self.w, 0, self.hp - self.h)) if self.padded else x

    def partition(self, x: torch.Tensor, idx: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """(B, h, w, C) -> (B*nW, N, C) in window order (pad, roll and partition as one gather)."""
        c = x.shape[-1]
        if self.single_window:
            return x.reshape(-1, self.window**2, c)
        return row_gather(self.pad(x).reshape(-1, c), idx[0], idx[1]).view(-1, self.window**2, c)

    def reverse(self, windows: torch.Tensor, idx: tuple[torch.Tensor, ...], batch: int) -> torch.Tensor:
        """(B*nW, N, C) -> (B, h, w, C): un-partition, un-roll and crop as one gather."""
        c = windows.shape[-1]
        if self.single_window:
            return windows.reshape(batch, self.h, self.w, c)
        return row_gather(windows.reshape(-1, c), idx[2], idx[3]).view(batch, self.h, self.w, c)


class RowGather(torch.autograd.Function):
    """x.index_select(0, index) whose backward is a gather too (autograd's default is a zero fill + index_add).

    `inverse[i]` is the output row that input row i went to, or len(index) for rows that were not gathered.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        ctx.full = index.numel() == x.shape[0]
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        if not ctx.full:
            grad = torch.cat([grad, grad.new_zeros(1, grad.shape[1])])
        return grad.index_select(0, inverse), None, None


def row_gather(x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and x.requires_grad:
        return RowGather.apply(x, index, inverse)
    return x.index_select(0, index)


class PlanCache:
    """Plans per geometry; they depend on shapes only, never on weights, so they are kept in train and eval."""

    def __init__(self) -> None:
        self.plans: dict[tuple[int, int, int, int, bool], WindowPlan] = {}

    def get(self, h: int, w: int, window: int, shift: int, dense: bool = False) -> WindowPlan:
        key = (h, w, window, shift, dense)
        plans = self.plans
        plan = plans.get(key)
        if plan is None:
            plan = _build_plan(h, w, window, shift, dense)
            self.plans = with_newest(plans, key, plan, 16)
        return plan


def _build_plan(h: int, w: int, window: int, shift: int, dense: bool = False) -> WindowPlan:
    if torch.compiler.is_compiling():  # data-dependent (torch.unique): built eagerly, once per geometry, off the graph
        # disabled at the call, not by decorating at import: `torch.compiler.disable` imports torch._dynamo (~1 s
        # of every command that builds a model, most of which never compile). The disabled function is not this
        # one: non-strict torch.export keeps is_compiling() True inside it, and this one would call itself again
        return torch.compiler.disable(_plan_on_cpu)(h, w, window, shift, dense)
    return _plan_on_cpu(h, w, window, shift, dense)


def _plan_on_cpu(h: int, w: int, window: int, shift: int, dense: bool) -> WindowPlan:
    with torch.device("cpu"), outside_inference_mode():  # index arithmetic, even for a model built on the meta device
        return WindowPlan(h, w, window, shift, dense)


def outside_inference_mode():
    """Plans and their indices outlive the call that builds them: made as normal tensors also in a call under
    `torch.inference_mode()` (Lightning's validation), as a later training step saves them for backward, which
    an inference tensor cannot be."""
    # is_compiling() first: dynamo breaks the graph on is_inference_mode_enabled()
    if not torch.compiler.is_compiling() and torch.is_inference_mode_enabled():
        return torch.inference_mode(False)
    return contextlib.nullcontext()
