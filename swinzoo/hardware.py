"""What the CPU offers: its model name and whether it multiplies bf16 matrices natively.

bf16 autocast only pays on a CPU with bf16 matmul instructions (Intel AMX, or AVX512-BF16 on Intel Cooper Lake
and later and AMD Zen 4 and later): there oneDNN runs bf16 GEMMs at several times the fp32 rate. Elsewhere bf16
is emulated through fp32 and every cast is pure overhead, so fp32 is the faster choice.
"""

from __future__ import annotations

import functools
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


def cpu_flags() -> frozenset[str]:
    return frozenset(_cpuinfo().get("flags", "").split())


def native_bf16_matmul() -> str | None:
    """'AMX' or 'AVX512-BF16' when the CPU has bf16 matmul instructions, else None."""
    flags = cpu_flags()
    return next((name for flag, name in BF16_MATMUL_FLAGS if flag in flags), None)


def describe_cpu() -> str:
    """One line for logs and benchmark tables, e.g. 'AMD EPYC (AVX512-BF16)' or 'AMD EPYC (no native bf16)'."""
    native = native_bf16_matmul()
    return f"{cpu_model()} ({native or 'no native bf16'})"


def auto_precision(on_cuda: bool) -> tuple[str, str]:
    """(Lightning precision, why) for a recipe whose precision is 'auto'; fp16 AMP on CUDA is the official
    recipes' choice."""
    if on_cuda:
        return "16-mixed", "auto: fp16 AMP on CUDA, as the official recipes"
    native = native_bf16_matmul()
    if native:
        return "bf16-mixed", f"auto: {cpu_model()} has {native}, bf16 autocast"
    return "32-true", f"auto: {cpu_model()} has no AMX or AVX512-BF16, where bf16 would be slower than fp32"


__all__ = ["auto_precision", "cpu_flags", "cpu_model", "describe_cpu", "native_bf16_matmul"]
