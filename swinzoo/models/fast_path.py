"""The inference fast path: a stage's blocks run without autograd, tokens kept in window order from block to block.

This module is the only place the fast path lives. It computes exactly what `SwinStage.forward` and
`SwinBlock.forward` (the reference, in `swin.py`) compute, with fewer passes over memory:

- each block gathers its tokens into window order once, straight from the previous block's window order (the two
  permutations composed), instead of partition -> attention -> reverse back to the grid for every block; the
  stage returns to grid order once, at its end, in the same gather that does patch merging's 2x2 regrouping;
- windows are laid out by mask group (see `windows.WindowPlan`), so each run of windows sharing a mask takes one
  (1, heads, N, N) term broadcast over it: on the CPU one add, the two products and one in-place softmax (or one
  SDPA call per run, as `cpu_attention()` chooses), one SDPA call per run elsewhere;
- on CPU, a batch whose patch tokens exceed `CPU_GROUP_BYTES` runs through the model in groups of images, and a
  block runs over runs of windows small enough to stay in cache (`CPU_CHUNK_BYTES`), in place in their
  rows of the output: attention, both residuals and the MLP while the run is hot.

Switch: `SwinTransformer.set_fast_path(False)` (or `stage.fast_path = False`) runs the reference instead. The fast
path applies only where it can: eval mode, no autograd recording (`torch.no_grad()` / `torch.inference_mode()`),
and no forward hooks in the stage's blocks or patch merging (a hook must see its module called as a module, on the
reference's tensors). The float64 tests in `tests/test_fast_path.py` hold it equal to the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from swinzoo.hardware import native_bf16_matmul
from swinzoo.models.attention import attention_term, floor_logits_, floors_logits, softmax_rows
from swinzoo.models.layers import PatchMerging, hooked
from swinzoo.models.windows import WindowPlan
from swinzoo.settings import environment_choice

# CPU only: a block runs over runs of windows whose widest activation (the MLP hidden) stays under this size.
# glibc hands allocations over 32 MiB straight to mmap, so whole-batch activations of the first stages are
# page-faulted in anew at every call; runs this size are recycled from the heap and stay in the last-level
# cache, and are still large enough GEMMs (8 MiB: ~5k tokens at C=96). Measured best of 4/6/8/12/16/24 MiB on
# CPU (docs/performance.md). Other devices have caching allocators and run a block over all its windows at once.
CPU_CHUNK_BYTES = 8 << 20

# CPU only: inference runs the model on groups of images whose patch tokens (B, H/4, W/4, C) stay under this size
# (images never share a window, so nothing changes but the sizes). Whole batch-100 activations are hundreds of
# MiB, mapped and page-faulted afresh at every call. Swin-T 224 / SwinV2-T 256 at batch 100, groups of 4-16 images
# (4.8-25 MiB): 1.05-1.10x; a nano model's whole batch is a few MiB and is not split (docs/performance.md).
CPU_GROUP_BYTES = 12 << 20

# How inference computes attention on the CPU: "eager" (two products and a softmax), "sdpa" (torch's fused kernel,
# once per mask group) or "auto" (the default): SDPA for fp32 and bf16 on CPUs with AMX, eager otherwise. On an AMX
# Xeon SDPA took 0.87-0.99x eager's time in fp32 (Swin-T 0.92x, SwinV2-T 0.99x, window 12-24 models 0.87-0.91x) and
# 0.79x / 0.86x in bf16 (with runs of windows twice as long, `_max_windows`: it holds no fp32 logits); on AMD Zen
# 1.6-2x as long on 49-token windows. Neither lands on the reference's fp32 bits where weights are packed (both
# 5e-7 off float64 on Swin-T). In bf16 the fused kernel keeps its logits in fp32, so it lands beside the reference's
# rounding, as near fp32 (relative error to fp32 0.0060 / 0.0071 against eager's 0.0061 / 0.0072), where eager lands
# on it (docs/performance.md).
ATTENTION_ENV = "SWINZOO_CPU_ATTENTION"
ATTENTION_CHOICES = ("auto", "eager", "sdpa")
SDPA_ON_CPU = native_bf16_matmul() == "AMX"  # what "auto" takes for fp32 and bf16
_attention = {"choice": "auto"}


def set_cpu_attention(choice: str) -> None:
    """'auto', 'eager' or 'sdpa': how CPU inference computes fp32 and bf16 attention, for the whole process. float64
    always takes the eager products."""
    if choice not in ATTENTION_CHOICES:
        raise ValueError(f"unknown CPU attention {choice!r}: use one of {', '.join(ATTENTION_CHOICES)}")
    _attention["choice"] = choice


def cpu_attention() -> str:
    """How CPU inference computes fp32 and bf16 attention now: 'auto', 'eager' or 'sdpa'."""
    return _attention["choice"]


def describe_cpu_attention() -> str:
    """The choice and, for 'auto', what it takes on this CPU: for benchmark titles and logs."""
    choice = _attention["choice"]
    if choice != "auto":
        return choice
    return "auto: sdpa for fp32 and bf16" if SDPA_ON_CPU else "auto: eager"


def applies(stage: nn.Module) -> bool:
    """Whether `stage` may take the fast path now: switched on, eval mode, no autograd, no hooks in its blocks or
    its patch merging, not compiling (its per-plan caches of runs and gathers are Python state dynamo guards on:
    each call recompiled, up to the recompile limit; the compiled reference blocks are one graph)."""
    return (stage.fast_path and not stage.training and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling() and not any(map(hooked_within, stage.blocks))
            and not (stage.downsample is not None and hooked_within(stage.downsample)))


def hooked_within(module: nn.Module) -> bool:
    """Whether `module` or any part of it has forward hooks: the fast path calls the parts of a block (attention,
    MLP, norms) on runs of windows, or not as modules at all, where a hook expects the reference's tensors."""
    return any(map(hooked, module.modules()))


def image_groups(model: nn.Module, x: torch.Tensor) -> int | None:
    """Images per group when `model` should run inference on `x` (B, 3, H, W) in groups, else None: CPU, no
    autograd, eval mode, every stage on the fast path, no hooks anywhere (a hook must see the whole batch once),
    not compiling or tracing (no guard on a symbolic batch), and patch tokens over `CPU_GROUP_BYTES`."""
    if (x.device.type != "cpu" or model.training or torch.is_grad_enabled() or torch.compiler.is_compiling()
            or torch.jit.is_tracing() or not all(stage.fast_path and not stage.traceable for stage in model.layers)):
        return None
    p = model.config.patch_size
    per_image = -(-x.shape[2] // p) * -(-x.shape[3] // p) * model.config.embed_dim * x.element_size()
    group = max(1, CPU_GROUP_BYTES // per_image)
    # the walk over every module last: only batches big enough to split pay for it
    if x.shape[0] <= group or hooked_within(model):
        return None
    return group


def stage_forward(stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`SwinStage.forward` without autograd: (B, H, W, C) -> (B, H/2, W/2, 2C), or (B, H, W, C) for the last stage.

    `rows` holds the tokens of the padded grid in the window order of the block that produced them; `where[p]` is
    the row holding padded-grid token p. Each block gathers with `where` composed with its own window order.
    """
    b, h, w, c = x.shape
    rows, where = None, None
    for block in stage.blocks:  # at least one: SwinConfig requires every depth >= 1
        plan = stage.plans.get(h, w, stage.window, block.shift)
        into, into_inverse, back, _ = plan.indices(b, x.device, grouped=True)
        if rows is None:
            rows, gather = plan.pad(x).reshape(-1, c), into
        else:
            gather = where.index_select(0, into)
        rows, where = block_forward(block, rows, gather, plan, b), into_inverse
    merge = stage.downsample
    if merge is None or h % 2 or w % 2:
        x = rows.index_select(0, back).view(b, h, w, c)
        return x if merge is None else merge(x)
    merged = rows.index_select(0, PatchMerging.merge_order(back.view(b, h, w)).reshape(-1))
    return merge.reduce(merged.view(b, h // 2, w // 2, 4 * c))


def block_forward(block: nn.Module, src: torch.Tensor, gather: torch.Tensor, plan: WindowPlan,
                  batch: int) -> torch.Tensor:
    """`SwinBlock.forward` on rows: (rows, C) -> (B*Hp*Wp, C) in `plan`'s grouped window order; row i of the result
    is the block output of the padded-grid token that `src` holds in row `gather[i]`.

    Every op after the gather is token- or window-local, so each run of windows goes through attention, both
    residuals and the MLP in place in its own rows of the output (nothing records autograd here).
    """
    c, n = src.shape[-1], plan.window**2
    out = src.new_empty(gather.shape[0], c)
    # the term in fp32 (float64 for float64) also under autocast, whose residual stream is bf16 from the patch
    # embedding on: the reference adds it to the logits by type promotion
    term = attention_term(block.attn, plan, torch.promote_types(src.dtype, torch.float32))
    mlp = block.mlp
    for start, end, segments in plan.chunks(batch, _max_windows(src, mlp.fc1.out_features * n)):
        t = torch.index_select(src, 0, gather[start:end], out=out[start:end])
        if block.post_norm:  # V2: x + norm(attn(x)), then x + norm(mlp(x))
            t.add_(block.norm1(group_attention(block.attn, t.view(-1, n, c), term, segments)))
            t.add_(block.norm2(mlp.fc2(torch.ops.aten.gelu_(mlp.fc1(t)))))
        else:  # V1: x + attn(norm(x)), then x + mlp(norm(x))
            t.add_(group_attention(block.attn, block.norm1(t).view(-1, n, c), term, segments))
            t.add_(mlp.fc2(torch.ops.aten.gelu_(mlp.fc1(block.norm2(t)))))
    return out


def _max_windows(src: torch.Tensor, hidden_per_window: int) -> int:
    if src.device.type != "cpu":
        return 1 << 62  # one run: the whole batch
    dtype = _compute_dtype(src)
    # eager attention keeps a run's logits and softmax in fp32 also for bf16 activations: such a run is counted in
    # fp32 bytes (bf16 runs twice as many windows long took 1.2x as long, on AMD Zen). SDPA holds no logits: its
    # bf16 runs are counted in bf16 bytes, and the longer products ran faster on AMX (docs/performance.md)
    size = dtype.itemsize if dtype == torch.bfloat16 and not _eager_on_cpu(dtype) else max(dtype.itemsize, 4)
    return max(1, CPU_CHUNK_BYTES // (size * hidden_per_window))


def _compute_dtype(src: torch.Tensor) -> torch.dtype:
    """The dtype of the products a CPU block makes from `src`: under autocast its dtype (bf16), whatever the residual
    stream's (float64 is not autocast)."""
    if torch.is_autocast_enabled("cpu") and src.dtype != torch.float64:
        return torch.get_autocast_dtype("cpu")
    return src.dtype


def group_attention(attn: nn.Module, x: torch.Tensor, term: torch.Tensor,
                    segments: tuple[tuple[int, int, int], ...]) -> torch.Tensor:
    """(windows, N, C) -> (windows * N, C) on windows laid out by mask group.

    `segments` are (first window, end window, group) runs that share one mask, the (1, heads, N, N) term of their
    group broadcast over their windows. qkv and proj run once over all the windows.
    """
    q, k, v, scale = attn.qkv_heads(x, contiguous=packs_heads(x))
    if eager_attention(q):
        out = softmax_attention(q, k, v, term, segments, scale)
    else:  # SDPA's output comes back in (windows, N, heads, d) memory order: the head merge below copies nothing
        if q.device.type != "cpu":
            term = term.to(q.dtype)  # CUDA's kernels take a float mask in the query's dtype; the CPU's an fp32 one too
        outs = [F.scaled_dot_product_attention(q[a:b], k[a:b], v[a:b], attn_mask=term[g : g + 1], scale=scale)
                for a, b, g in segments]
        out = outs[0] if len(outs) == 1 else torch.cat(outs) if outs else q  # no runs: an empty batch, q is empty
    return attn.proj(out.transpose(1, 2).reshape(-1, x.shape[-1]))


def eager_attention(q: torch.Tensor) -> bool:
    """Products and softmax on the CPU (float64 always, fp32 and bf16 as `cpu_attention()` chooses); SDPA's fused
    kernels elsewhere, and for float16 on the CPU. Under a TorchDispatchMode the products too: FlopCounterMode
    (Lightning's ModelSummary) does not count the CPU's fused kernel."""
    return q.device.type == "cpu" and _eager_on_cpu(q.dtype)


def packs_heads(x: torch.Tensor) -> bool:
    """Whether the attention over the windows x (windows, N, C) takes q, k, v packed in one copy of the qkv output:
    for the eager products (a batched product would copy each strided view) and for SDPA off the CPU. The CPU's
    SDPA reads the strided views as they are, for the same bits: 0.93x / 0.96x the time of packed heads (Swin-T
    inference in bf16 / fp32 on an AMX Xeon, docs/performance.md)."""
    return x.device.type != "cpu" or _eager_on_cpu(_compute_dtype(x))


def _eager_on_cpu(dtype: torch.dtype) -> bool:
    """Whether CPU attention in `dtype` takes the eager products: float64 always, fp32 and bf16 as the choice (and
    'auto') says, and under a dispatch mode; float16 never."""
    if dtype not in (torch.float32, torch.float64, torch.bfloat16):
        return False
    choice = _attention["choice"]
    if choice == "auto":
        choice = "sdpa" if SDPA_ON_CPU else "eager"
    return dtype == torch.float64 or choice == "eager" or torch._C._len_torch_dispatch_stack() > 0


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, term: torch.Tensor,
                      segments: tuple[tuple[int, int, int], ...], scale: float | None) -> torch.Tensor:
    """softmax(scale * q k^T + term) v: q, k, v (windows, heads, N, d) -> (windows, heads, N, d). Consumes q.

    One logits buffer takes the term of each run of windows and the softmax (in place where that pays). bf16
    products (autocast) with an fp32 term: the sum and the softmax in an fp32 buffer, the probabilities back in
    bf16 for the product with v, as the reference computes under autocast (and the training node). Where
    `keys_major`, the buffer holds the logits transposed, (keys, queries) per head, and the softmax runs down its
    columns.
    """
    if scale is None:  # V1: the official qk_scale, applied to q before the product as the official code does
        scale = q.shape[-1] ** -0.5
    q = q.mul_(scale) if scale != 1.0 else q
    transposed = keys_major(q)
    if transposed:
        logits, term = torch.matmul(k, q.transpose(-2, -1)), term.transpose(-2, -1).contiguous()
    else:
        logits = torch.matmul(q, k.transpose(-2, -1))
    # bf16 products: one cast to fp32 first (an add of mixed dtypes into an fp32 buffer ran ~1.5x as long)
    probs = logits.to(term.dtype)
    for a, b, g in segments:
        probs[a:b].add_(term[g])
    if floors_logits(probs):  # no denormal probabilities (`attention.FLOOR_LOGITS`)
        floor_logits_(probs, -2 if transposed else -1)
    # down the columns in place; along the rows in place where that pays (`softmax_rows`)
    probs = (torch.softmax(probs, -2, out=probs) if transposed else softmax_rows(probs)).to(v.dtype)
    return torch.matmul(probs.transpose(-2, -1) if transposed else probs, v)


def keys_major(q: torch.Tensor) -> bool:
    """Whether to hold the logits as (keys, queries): for windows of N tokens, N up to 16 or not a multiple of 16,
    in fp32 and float64. torch's softmax along the last dim reduces each row across vector lanes and pays a
    partial vector at its end; down the columns each lane holds its own row. 49 tokens (window 7): 1.8x faster
    softmax, 36: 1.6x, 16: 1.5x, but 64 / 144 / 256: 0.6-0.8x (measured on Zen 5, AVX-512). Not in bf16: k q^T
    rounds its bf16 logits differently from the reference's q k^T, by as much as bf16 itself is off fp32."""
    n = q.shape[-2]
    return (n <= 16 or n % 16 != 0) and q.dtype != torch.bfloat16


set_cpu_attention(environment_choice(ATTENTION_ENV))
