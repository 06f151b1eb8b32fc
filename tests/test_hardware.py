"""CPU detection, the precision a recipe's 'auto' resolves to on each CPU class, and glibc's memory settings."""

import os
import platform
import subprocess
import sys

import pytest

from swinzoo import hardware
from swinzoo.train.module import resolve_precision, trainer_kwargs
from swinzoo.train.recipes import Recipe

ZEN3 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
        "model name\t: AMD EPYC 7R13 Processor\nflags\t\t: fpu avx avx2 fma\n")
ZEN4 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
        "flags\t\t: avx2 avx512f avx512_bf16\n")
ZEN5 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel name\t: AMD EPYC 9R45\n"
        "flags\t\t: avx2 avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\n")
SAPPHIRE = ("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n"
            "model name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: avx512f avx512_bf16 amx_bf16 amx_tile\n")


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    def use(text: str | None):
        path = tmp_path / "cpuinfo"
        if text is not None:
            path.write_text(text)
        monkeypatch.setattr(hardware, "CPUINFO", path)
        hardware._cpuinfo.cache_clear()
    yield use
    hardware._cpuinfo.cache_clear()


@pytest.mark.parametrize("text, model, native, described, precision", [
    (ZEN3, "AMD EPYC 7R13 Processor", None, "AMD EPYC 7R13 Processor (Zen 3, no native bf16)", "32-true"),
    (ZEN4, "AMD EPYC", "AVX512-BF16", "AMD EPYC (Zen 4, AVX512-BF16)", "bf16-mixed"),
    (ZEN5, "AMD EPYC 9R45", "AVX512-BF16", "AMD EPYC 9R45 (Zen 5, AVX512-BF16)", "bf16-mixed"),
    (SAPPHIRE, "Intel(R) Xeon(R) Platinum 8488C", "AMX", "Intel(R) Xeon(R) Platinum 8488C (AMX)", "bf16-mixed"),
])
def test_cpu_classes(cpuinfo, text, model, native, described, precision):
    cpuinfo(text)
    assert hardware.cpu_model() == model and hardware.native_bf16_matmul() == native
    assert hardware.describe_cpu() == described
    chosen, why = hardware.auto_precision(on_cuda=False)
    assert chosen == precision and model in why
    assert resolve_precision(Recipe(), accelerator="cpu")[0] == precision
    assert trainer_kwargs(Recipe(), accelerator="cpu")["precision"] == precision
    # what the user or the recipe says wins
    assert resolve_precision(Recipe(precision="32-true"), accelerator="cpu")[0] == "32-true"
    assert hardware.auto_precision(on_cuda=True)[0] == "16-mixed"


def test_no_cpuinfo_is_no_native_bf16(cpuinfo):
    cpuinfo(None)
    assert hardware.native_bf16_matmul() is None and hardware.cpu_model()
    assert hardware.auto_precision(on_cuda=False)[0] == "32-true"


# Minor page faults of a 16 MiB tensor made where a 20 MiB one was freed, in a fresh process: glibc maps the 20 MiB
# freshly by default and unmaps it on free, so the 16 MiB comes from a heap grown anew; kept, it reuses the memory.
FAULTS_OF_A_REALLOCATION = """
import resource, torch
from swinzoo.hardware import keep_freed_memory
print(keep_freed_memory() is not None)
a = torch.ones(5 << 20)
del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = torch.ones(4 << 20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_stops_page_faults_of_reallocation():
    def run(env_value):
        env = {**os.environ, hardware.MALLOC_ENV: env_value}
        out = subprocess.run([sys.executable, "-c", FAULTS_OF_A_REALLOCATION], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
        return out[0] == "True", int(out[1])

    applied, kept = run("")
    not_applied, default = run("default")  # the opt-out leaves glibc as it is
    assert applied and not not_applied
    assert default > 2000 and kept < default / 10, (kept, default)  # 16 MiB = 4096 pages
