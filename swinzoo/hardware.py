"""What the CPU offers (its model name, whether it multiplies bf16 matrices natively), how its memory is kept, and
how much of it this process holds (resident set, read from /proc).

bf16 autocast only pays on a CPU with bf16 matmul instructions (Intel AMX, or AVX512-BF16 on Intel Cooper Lake
and later and AMD Zen 4 and later): there oneDNN runs bf16 GEMMs at several times the fp32 rate. Elsewhere bf16
is emulated through fp32 and every cast is pure overhead, so fp32 is the faster choice.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# /proc/cpuinfo flag -> the name people know it by, strongest first
BF16_MATMUL_FLAGS = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"))


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none: not Linux, or unreadable)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def cpu_model() -> str:
    """The CPU's model name, e.g. 'Intel(R) Xeon(R) Platinum 8488C' ('unknown CPU' when the OS does not say)."""
    return _cpuinfo().get("model name") or platform.processor() or "unknown CPU"


def cpu_vendor() -> str:
    """/proc/cpuinfo's vendor_id, e.g. 'AuthenticAMD' or 'GenuineIntel' ('' when the OS does not say)."""
    return _cpuinfo().get("vendor_id", "")


def cpu_family() -> int | None:
    """/proc/cpuinfo's cpu family (AMD: 25 = Zen 3 / Zen 4, told apart by AVX-512; 26 = Zen 5); None when the OS
    does not say."""
    family = _cpuinfo().get("cpu family", "")
    return int(family) if family.isdigit() else None


def cpu_flags() -> frozenset[str]:
    return frozenset(_cpuinfo().get("flags", "").split())


def cpu_class() -> str | None:
    """AMD's core generation, which the model name ('AMD EPYC' in many VMs) may not tell: 'Zen 3' / 'Zen 4' (family
    25, without / with AVX-512), 'Zen 5' (26), 'Zen / Zen 2' (23); None for other CPUs, whose names say enough."""
    if cpu_vendor() != "AuthenticAMD":
        return None
    family = cpu_family()
    if family == 25:
        return "Zen 4" if "avx512f" in cpu_flags() else "Zen 3"
    return {23: "Zen / Zen 2", 26: "Zen 5"}.get(family)


def native_bf16_matmul() -> str | None:
    """'AMX' or 'AVX512-BF16' when the CPU has bf16 matmul instructions, else None."""
    flags = cpu_flags()
    return next((name for flag, name in BF16_MATMUL_FLAGS if flag in flags), None)


def describe_cpu() -> str:
    """One line for logs and benchmark tables, e.g. 'AMD EPYC (Zen 4, AVX512-BF16)' or 'Intel(R) Xeon(R) Platinum
    8488C (AMX)'."""
    details = [cpu_class(), native_bf16_matmul() or "no native bf16"]
    return f"{cpu_model()} ({', '.join(d for d in details if d)})"


def resolve_device(device: str | None):
    """`device` as a torch.device (None: cuda when a GPU is visible, else cpu), refused with a one-line error where
    torch does not know it or this machine cannot run it."""
    import torch

    from swinzoo.errors import SwinzooError

    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise SwinzooError(f"device {device!r} is not a device torch knows; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SwinzooError(f"device {device} but no GPU is visible; use --device cpu")
    if dev.type not in ("cpu", "cuda") and not _usable(dev):  # mps, xpu, ... where this torch build has them
        raise SwinzooError(f"device {device} is not available in this torch build or machine; use cpu or cuda")
    return dev


def _usable(dev) -> bool:
    import torch

    try:
        torch.empty(1, device=dev).cpu()  # the meta device has no data to bring back
        return True
    except (RuntimeError, AssertionError, NotImplementedError):
        return False


def trains_on_cuda(accelerator: str = "auto") -> bool:
    """Whether a run given Lightning's `accelerator` trains on CUDA ('auto' does where a GPU is visible): where
    precision 'auto' means fp16 AMP."""
    import torch

    return str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def auto_precision(on_cuda: bool) -> tuple[str, str]:
    """(Lightning precision, why) for a recipe whose precision is 'auto'; fp16 AMP on CUDA is the official
    recipes' choice."""
    if on_cuda:
        return "16-mixed", "auto: fp16 AMP on CUDA, as the official recipes"
    native = native_bf16_matmul()
    if native:
        return "bf16-mixed", f"auto: {cpu_model()} has {native}, bf16 autocast"
    return "32-true", f"auto: {cpu_model()} has no AMX or AVX512-BF16, where bf16 would be slower than fp32"


# glibc's mallopt parameters, and the values a training process sets. glibc serves an allocation above its mmap
# threshold (128 KiB at start, raised to the size of each big block freed, at most 32 MiB) with a fresh mapping,
# and hands the top of its heap back to the kernel once more than twice that is free; a training step frees and
# makes the same tensors again every step, so the kernel zero-fills them again: ~20 thousand page faults per
# Swin-T bf16 step on a 2-core EPYC, none with the thresholds pinned (docs/performance.md).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest
TRIM_THRESHOLD = 2**31 - 1  # an int: never give the heap back mid-run
MALLOC_ENV = "SWINZOO_MALLOC"  # "default": leave glibc as it is


def keep_freed_memory() -> str | None:
    """Make glibc keep freed memory for the next step (blocks up to 32 MiB from the heap, the heap never trimmed).

    Process-wide and for the rest of the process: for training and evaluation runs on the CPU. Returns a line for
    the run log, or None where nothing was changed (not glibc, or SWINZOO_MALLOC=default)."""
    if os.environ.get(MALLOC_ENV, "").lower() == "default":
        return None
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return None
    return f"glibc keeps freed memory for reuse (fewer page faults per step; {MALLOC_ENV}=default leaves it as is)"


# ---------------------------------------------------------------- resident memory, read from /proc (Linux)
def rss_bytes() -> int:
    """This process's resident set size now, in bytes."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def reset_peak_rss() -> None:
    """Restart this process's RSS high-water mark (Linux >= 4.0: `5` to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    """VmHWM, the high-water mark of this address space. Not `ru_maxrss`: Linux carries that over `exec` from
    the parent (subprocess forks with vfork), so a probe started by a process that once held 5 GiB reports 5 GiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


__all__ = ["auto_precision", "cpu_class", "cpu_family", "cpu_flags", "cpu_model", "cpu_vendor", "describe_cpu",
           "keep_freed_memory", "native_bf16_matmul", "peak_rss_bytes", "reset_peak_rss", "rss_bytes"]
