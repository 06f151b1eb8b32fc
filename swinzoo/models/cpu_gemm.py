"""fp32 matrix products through oneDNN on CPUs where torch's BLAS runs them at half speed.

PyTorch's x86 wheels multiply fp32 matrices with Intel MKL, and MKL runs its AVX2 kernels on AMD CPUs, AVX-512
or not: on a 2-core Zen 5 EPYC a 2048^3 `torch.mm` reaches 215 GFLOP/s where oneDNN, which torch also ships (and
already uses for bf16), reaches 460 with AVX-512 (docs/performance.md). Here the Linear layers of the blocks, the
patch merging and the head, forward and backward, run their fp32 products through oneDNN's matmul
(`torch.ops.mkldnn._linear_pointwise`, the op inductor itself emits) where that is the faster library.

In eval mode without autograd a `Linear` keeps its weight in oneDNN's blocked layout between calls (`PackedWeight`):
fp32 on the oneDNN backend and on Intel CPUs with AVX-512 (MKL multiplies their training products), and bf16 (CPU
autocast or a `.bfloat16()` model) on any CPU where oneDNN multiplies bf16 (torch's own bf16 products are oneDNN's
whichever library multiplies fp32, so Intel AMX CPUs pack too; under autocast the weight is cast once, as autocast
would cast it at every call). The same products, bit for bit, without oneDNN copying (and autocast casting) the
plain weight inside every call (speed-ups in docs/performance.md), for one more copy of the Linear weights, in the
product's dtype, held while the model is in eval mode.

Switches: `set_backend("onednn" | "aten" | "auto")`, or the environment variable `SWINZOO_CPU_GEMM` read at import;
`set_weight_packing(False)`, or `SWINZOO_PACK_WEIGHTS=0`, keeps a single copy of the weights (inference at the
plain-weight speed).
"auto" (the default) takes oneDNN on AMD CPUs with AVX-512, the classes measured faster: Zen 5 (family 26 on,
AVX-512 on full-width units) for every product; Zen 4 (family 25 with AVX-512, run on 256-bit units) for the forward
and input-gradient products, which oneDNN runs 1.1-1.5x faster there, while weight gradients stay on MKL, as fast or
faster at most of Swin-T's shapes on Zen 4. Intel CPUs keep MKL, which runs AVX-512 there, except for the products
on packed weights in eval mode, and so does Zen 3 (no AVX-512); `benchmarks/cpu_gemm.py` tells for any CPU. Either
way the values are the same products summed in another order (fp32 tests in `tests/test_cpu_gemm.py` hold the two
equal); float64, other devices, `torch.compile`, `torch.export` and tracing always take aten, and so does bf16 /
autocast except for the packed inference products above.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from swinzoo.hardware import cpu_family, cpu_flags, cpu_vendor
from swinzoo.models.cache_keys import param_key
from swinzoo.settings import environment_choice

BACKEND_ENV = "SWINZOO_CPU_GEMM"
PACK_ENV = "SWINZOO_PACK_WEIGHTS"
BACKENDS = ("auto", "onednn", "aten")
ZEN5_FAMILY = 26
# "onednn": fp32 forward and input-gradient products by oneDNN; "onednn_weight_grad": weight gradients too;
# "pack_fp32": eval-mode fp32 products by oneDNN on packed weights; "min_macs": the smallest fp32 product worth
# oneDNN's call overhead on this CPU class
_state = {"backend": "auto", "onednn": False, "onednn_weight_grad": False, "pack_fp32": False, "min_macs": 1 << 21,
          "pack": True}
# oneDNN spends ~10 us a call before multiplying, MKL ~2 us: with MKL at half oneDNN's rate (AVX2 against
# AVX-512) they break even near 2M multiply-adds (measured on Zen 5: 0.45M MACs 11 us MKL / 19 us oneDNN,
# 19M MACs 196 / 97 us). Also the smallest product worth packing a weight for.
MIN_MACS = 1 << 21
# Zen 4 runs AVX-512 on 256-bit units, MKL's AVX2 gets closer: 1.8M MACs 25 us MKL / 40 us oneDNN, 7.2M 95 / 92,
# 43M 537 / 467 (2 threads)
ZEN4_MIN_MACS = 1 << 23


def set_backend(backend: str) -> None:
    """'onednn', 'aten' or 'auto' (oneDNN on AMD CPUs with AVX-512, its weight gradients on Zen 5 and later only;
    aten elsewhere), for the whole process."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown CPU GEMM backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "auto":
        avx512 = onednn_available() and "avx512f" in cpu_flags()
        onednn = avx512 and cpu_vendor() == "AuthenticAMD"
        full_width = (cpu_family() or 0) >= ZEN5_FAMILY
        # Intel with AVX-512: MKL for training, whose products oneDNN ran 1.16x slower (Swin-T step, AMX Xeon), but
        # eval-mode products on packed weights, bias fused, as on AMD: inference took 0.96x / 0.95x MKL's time
        intel = avx512 and cpu_vendor() == "GenuineIntel"
        _state.update(onednn=onednn, onednn_weight_grad=onednn and full_width, pack_fp32=onednn or intel,
                      min_macs=MIN_MACS if full_width else ZEN4_MIN_MACS)
    else:
        onednn = backend == "onednn" and onednn_available()
        _state.update(onednn=onednn, onednn_weight_grad=onednn, pack_fp32=onednn, min_macs=MIN_MACS)
    _state.update(backend=backend)


@contextlib.contextmanager
def using(backend: str):
    """`set_backend(backend)` for a block, in this process and in the subprocesses it starts (through the
    environment variable); both come back as they were afterwards."""
    before, env = _state["backend"], os.environ.get(BACKEND_ENV)
    set_backend(backend)
    os.environ[BACKEND_ENV] = backend
    try:
        yield
    finally:
        set_backend(before)
        if env is None:
            os.environ.pop(BACKEND_ENV, None)
        else:
            os.environ[BACKEND_ENV] = env


def set_weight_packing(enabled: bool) -> None:
    """Whether eval-mode `Linear` layers keep a packed copy of their weights (default True): fp32 on the oneDNN
    backend, bf16 (autocast or a bf16 model) on either. Off, a layer drops the copy it holds at its next call."""
    _state["pack"] = bool(enabled)


def weight_packing() -> bool:
    return _state["pack"]


def packs_fp32() -> bool:
    """Whether eval-mode fp32 products go through oneDNN on packed weights (with packing on): the oneDNN backend,
    and Intel CPUs with AVX-512 under auto."""
    return _state["pack_fp32"]


def describe() -> str:
    """One line for a run log: which library multiplies fp32 matrices on the CPU, and why."""
    if _state["onednn"] and _state["onednn_weight_grad"]:
        why = "AMD Zen 5, where MKL runs AVX2 kernels" if _state["backend"] == "auto" else "as set"
        return f"fp32 products through oneDNN ({why}; {BACKEND_ENV}=aten for MKL)"
    if _state["onednn"]:
        return (f"fp32 products through oneDNN, weight gradients through MKL (AMD Zen 4, AVX-512 on 256-bit units; "
                f"{BACKEND_ENV}=onednn or aten for one library)")
    if _state["pack_fp32"]:
        return (f"fp32 products through aten's BLAS (MKL), eval-mode ones through oneDNN on packed weights (Intel "
                f"with AVX-512; {BACKEND_ENV}=aten for MKL alone)")
    why = "auto: oneDNN only on AMD CPUs with AVX-512" if _state["backend"] == "auto" else "as set"
    return f"fp32 products through aten's BLAS (MKL; {why})"


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def requested() -> str:
    """What was asked for: 'auto', 'onednn' or 'aten' (`backend()` says what it resolved to)."""
    return _state["backend"]


def backend() -> str:
    """The library that multiplies fp32 matrices on the CPU now: 'onednn' or 'aten'."""
    return "onednn" if _state["onednn"] else "aten"


def weight_grad_backend() -> str:
    """The library of fp32 Linear weight gradients on the CPU now: 'onednn' or 'aten' (aten on Zen 4 under auto)."""
    return "onednn" if _state["onednn_weight_grad"] else "aten"


def applies(a: torch.Tensor, b: torch.Tensor, macs: int) -> bool:
    """Whether a product of a and b (`macs` multiply-adds) goes through oneDNN: switched on, both fp32 on the CPU,
    no autocast, not traced, and large enough to pay oneDNN's ~10 us a call (MKL is faster below)."""
    return (_state["onednn"] and a.dtype == torch.float32 and b.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and _worth_onednn(a, macs, _state["min_macs"]))


def _worth_onednn(x: torch.Tensor, macs: int, min_macs: int = MIN_MACS) -> bool:
    """x on the CPU, not traced, not under a dispatch mode, and `macs` enough to pay oneDNN's ~10 us a call."""
    # the size test last: traced with symbolic sizes, comparing them would put a guard on the batch in the graph
    return (not torch.compiler.is_compiling() and not torch.jit.is_tracing() and x.device.type == "cpu"
            and not _dispatch_mode_active() and macs >= min_macs)


def _dispatch_mode_active() -> bool:
    """A TorchDispatchMode sees aten's products only: FlopCounterMode (Lightning's ModelSummary counts FLOPs with
    it) would count oneDNN's as nothing."""
    return torch._C._len_torch_dispatch_stack() > 0


def _onednn(a: torch.Tensor, b_t: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b_t.T (+ bias) by oneDNN: a (..., K), b_t (N, K), either may be a strided view."""
    if a.numel() == 0 or b_t.numel() == 0:  # oneDNN refuses empty operands (an empty batch's weight gradient)
        return F.linear(a, b_t, bias)
    return torch.ops.mkldnn._linear_pointwise(a, b_t, bias, "none", [], "")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear: (..., K) -> (..., N), through oneDNN where `applies`, with its own backward when recording."""
    if not applies(x, weight, x.numel() * weight.shape[0]):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return OneDnnLinear.apply(x, weight, bias)
    return _onednn(x, weight, bias)


def mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b for 2-D a (M, K), b (K, N), into `out` when given; through oneDNN where `applies` (no autograd)."""
    if not applies(a, b, a.numel() * b.shape[1]):
        return torch.mm(a, b, out=out)
    # oneDNN writes a new tensor (no out=): one copy of the (M, N) result
    return _onednn(a, b.t()) if out is None else out.copy_(_onednn(a, b.t()))


def linear_into(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """out = x @ weight.T + bias for 2-D x, no autograd (the training MLP node's chunks)."""
    if not applies(x, weight, x.numel() * weight.shape[0]):
        return torch.addmm(bias, x, weight.t(), out=out)
    return out.copy_(_onednn(x, weight, bias))


def onednn_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b by oneDNN whatever the switch says (benchmarks compare it with torch.mm)."""
    return _onednn(a, b.t())


def weight_grad(grad: torch.Tensor, x: torch.Tensor, accumulate: torch.Tensor | None = None) -> torch.Tensor:
    """grad.T @ x: (M, N), (M, K) -> (N, K), a Linear's weight gradient (no autograd); added in place to
    `accumulate` when given (which may be fp32 for bf16 products).

    The reduction runs over the M tokens. oneDNN is fastest with the smaller of N and K as its output rows
    (1.3-3.5x apart at Swin-T's shapes). A square one narrower than 128 runs best on MKL (96 x 96: 162 GFLOP/s
    against 123 by oneDNN in either order; 192 x 192 and wider: oneDNN 1.3-2x ahead, measured on Zen 5). On Zen 4
    MKL is as fast or faster at most shapes (`onednn_weight_grad` off there).
    """
    n, k = grad.shape[1], x.shape[1]
    if not (_state["onednn_weight_grad"] and applies(x, grad, x.numel() * n)) or (n == k and n < 128):
        if accumulate is None:
            return torch.mm(grad.t(), x)
        if accumulate.dtype == grad.dtype:
            return accumulate.addmm_(grad.t(), x)
        return accumulate.add_(torch.mm(grad.t(), x))
    product = _onednn(grad.t(), x.t()) if n < k else _onednn(x.t(), grad.t()).t().contiguous()
    return product if accumulate is None else accumulate.add_(product)


class OneDnnLinear(torch.autograd.Function):
    """F.linear with forward and backward products by oneDNN; same values as autograd through F.linear up to
    the order of the sums (fp32 tests)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        rows = grad.reshape(-1, grad.shape[-1])
        grad_x = _onednn(rows, weight.t()).view(x.shape) if need_x else None
        grad_w = weight_grad(rows, x.reshape(-1, x.shape[-1])) if need_w else None
        grad_b = rows.sum(0) if need_b and ctx.has_bias else None
        return grad_x, grad_w, grad_b


@functools.cache
def onednn_bf16_supported() -> bool:
    """Whether this torch has oneDNN and oneDNN multiplies bf16 on this CPU (AVX-512 and up)."""
    return onednn_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def packed_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype | None:
    """The dtype of an eval-mode product of x with a packed `weight`, or None for the plain product: packing on, no
    autograd, not traced, an fp32 or bf16 weight on the CPU (not an inference tensor, which has no version counter
    to key the cache on), at least `MIN_MACS`; fp32 where `packs_fp32()`, bf16 (autocast, or bf16 weights and
    input) on either backend wherever oneDNN multiplies bf16, as aten's bf16 products are oneDNN's too."""
    if (not _state["pack"] or torch.is_grad_enabled() or weight.dtype not in (torch.float32, torch.bfloat16)
            or not _worth_onednn(x, x.numel() * weight.shape[0])):
        return None
    if weight.dtype == torch.bfloat16:  # a bf16 model (`.bfloat16()`), with or without autocast
        dtype = torch.bfloat16 if x.dtype == torch.bfloat16 else None
    elif not torch.is_autocast_enabled("cpu"):
        dtype = torch.float32 if x.dtype == torch.float32 and _state["pack_fp32"] else None
    else:  # the cast autocast would make at every call, made once
        dtype = (torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16
                 and x.dtype in (torch.float32, torch.bfloat16) else None)
    if dtype == torch.bfloat16 and not onednn_bf16_supported():
        return None
    # is_inference() after the tracing tests: dynamo breaks the graph on it
    return None if dtype is None or weight.is_inference() else dtype


class PackedWeight:
    """Eval-mode cache of one Linear weight in oneDNN's blocked layout (`mkldnn::_reorder_linear_weight`).

    Keyed on the weight's data pointer, in-place version counter (`cache_keys`), shape and dtype, so an optimizer step,
    `load_state_dict`, `.to()` or `.data = ...` invalidates it; the owner clears it on `train()` and `_apply`
    (`.to()`, `.double()`), and at its next call once packing is switched off.
    Never copied or pickled (a oneDNN tensor has no storage to pickle): a copy starts empty and packs again.
    """

    def __init__(self) -> None:
        # one attribute, replaced whole: a thread running the same model never sees a key with another's tensor
        self.entry: tuple[tuple, torch.Tensor] | None = None

    @property
    def tensor(self) -> torch.Tensor | None:
        return None if self.entry is None else self.entry[1]

    def clear(self) -> None:
        self.entry = None

    def get(self, weight: torch.Tensor, dtype: torch.dtype, rows: int) -> torch.Tensor:
        key = (param_key(weight), tuple(weight.shape), dtype)
        entry = self.entry
        if entry is None or entry[0] != key:
            # `rows` only hints the layout: the packed weight serves products of any number of rows
            entry = key, torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype), rows)
            self.entry = entry
        return entry[1]

    def __deepcopy__(self, memo: dict) -> PackedWeight:
        return PackedWeight()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.clear()


class Linear(nn.Linear):
    """nn.Linear (same parameters, state dict and init) whose fp32 CPU products go through `linear` above, with
    the weight packed once for oneDNN while in eval mode without autograd (`PackedWeight`; bf16 under autocast)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.packed = PackedWeight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_bias(x, self.bias)

    def forward_with_bias(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """This layer's product with another bias (V2's q/v bias); (..., K) -> (..., N)."""
        dtype = None if self.training else packed_dtype(x, self.weight)
        if dtype is None:
            if self.packed.entry is not None and not _state["pack"]:
                self.packed.clear()
            return linear(x, self.weight, bias)
        packed = self.packed.get(self.weight, dtype, x.numel() // x.shape[-1])
        bias = None if bias is None else bias.to(dtype)  # autocast's casts, done by hand (no-ops in fp32)
        return torch.ops.mkldnn._linear_pointwise(x.to(dtype), packed, bias, "none", [], "")

    def train(self, mode: bool = True) -> Linear:
        if mode:  # not on eval(): code that calls eval() before every inference call keeps its packed weight
            self.packed.clear()
        return super().train(mode)

    def _apply(self, fn: Any, recurse: bool = True) -> Linear:
        self.packed.clear()
        return super()._apply(fn, recurse)


set_backend(environment_choice(BACKEND_ENV))
_pack_env = os.environ.get(PACK_ENV, "").strip() or "1"
if _pack_env not in ("0", "1"):
    warnings.warn(f"{PACK_ENV}={_pack_env!r} is not 0 or 1: packing weights", stacklevel=1)
set_weight_packing(_pack_env != "0")

__all__ = ["BACKEND_ENV", "MIN_MACS", "PACK_ENV", "Linear", "OneDnnLinear", "PackedWeight", "applies", "backend",
           "describe", "linear", "linear_into", "mm", "onednn_available", "onednn_bf16_supported", "onednn_mm",
           "packed_dtype", "packs_fp32", "requested", "set_backend", "set_weight_packing", "using", "weight_grad",
           "weight_grad_backend", "weight_packing"]
