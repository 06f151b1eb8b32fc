"""`swinzoo bench` runs and reports what it promises (a smoke test on a tiny input: no timing is asserted)."""

import json
import os

import pytest
import torch
from PIL import Image

from swinzoo.bench import Result, Spec, add_ratios, measure_memory, memory_probe, timm_arch
from swinzoo.bench_plot import draw_sweep, global_attention_macs
from swinzoo.hardware import cpu_class, cpu_model, describe_cpu, native_bf16_matmul
from swinzoo.models import count_macs, cpu_gemm, fast_path
from swinzoo.zoo import zoo_config

from .conftest import run_cli

KEYS = {"name", "impl", "res", "batch", "mode", "precision", "params", "gmacs", "images_per_s", "latency_ms_p50",
        "latency_ms_p95", "matmul_peak_gflops", "peak_share", "load_corrected_ms", "peak_mem_mb", "mem_method",
        "extra"}


def test_bench_json_vs_timm(capsys):
    code, out, err = run_cli(["bench", "swin_t_224", "--res", 32, "--batch", 1, "--reps", 2, "--warmup", 0,
                              "--vs-timm", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    rows = data["results"]
    assert data["cpu"] == cpu_model() and data["native_bf16_matmul"] == native_bf16_matmul()
    assert data["cpu_class"] == cpu_class()
    assert data["malloc"] == "default"  # glibc as it is unless --malloc keep
    assert data["cpu_gemm"] == cpu_gemm.backend()  # what "auto" chose on this CPU
    assert data["weight_packing"] == cpu_gemm.weight_packing()
    assert data["cpu_attention"] == fast_path.cpu_attention()
    assert (data["reps"], data["warmup"], data["compile"], data["grad_ckpt"]) == (2, 0, False, False)
    assert [r["impl"] for r in rows] == ["swinzoo", "timm"]
    for r in rows:
        assert set(r) == KEYS
        assert r["res"] == 32 and r["mode"] == "eval" and r["images_per_s"] > 0 and r["matmul_peak_gflops"] > 0
        assert r["latency_ms_p95"] >= r["latency_ms_p50"] > 0
    assert rows[0]["params"] == 28288354
    assert {r["extra"]["matmul_library"] for r in rows} <= {"aten", "onednn"}
    assert rows[0]["extra"]["speedup_vs_timm"] > 0
    low, high = rows[0]["extra"]["speedup_vs_timm_quartiles"]
    assert 0 < low <= rows[0]["extra"]["speedup_vs_timm"] <= high


def test_bench_cpu_gemm_switch(capsys):
    """--cpu-gemm aten: swinzoo's fp32 products on MKL for the run (the title says so); the process's own choice
    comes back afterwards (the switch is process-wide)."""
    before, env = cpu_gemm.backend(), os.environ.get(cpu_gemm.BACKEND_ENV)
    code, out, _ = run_cli(["bench", "swin_t_224", "--res", 32, "--batch", 1, "--reps", 1, "--warmup", 0,
                            "--cpu-gemm", "aten"], capsys)
    assert code == 0 and "fp32 products aten" in " ".join(out.split())
    assert cpu_gemm.backend() == before and os.environ.get(cpu_gemm.BACKEND_ENV) == env


def test_ratios_are_per_round():
    """Speedup = median of per-round time ratios, with quartiles: a round where the machine was slow for both
    leaves the ratio alone, while the ratio of medians would mix rounds."""
    rows = [Result("m", impl, 224, 8, "eval", "fp32", 1, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5) for impl in ("swinzoo", "timm")]
    ours = [1.0, 2.0, 1.0, 4.0, 1.0]
    timm = [1.2, 2.6, 1.1, 4.4, 1.5]  # per round: 1.2, 1.3, 1.1, 1.1, 1.5
    add_ratios(rows, [ours, timm])
    assert rows[0].extra["speedup_vs_timm"] == 1.2
    assert rows[0].extra["speedup_vs_timm_quartiles"] == [1.1, 1.3]
    assert "speedup_vs_timm" not in rows[1].extra


def test_bench_table_and_errors(capsys):
    code, out, _ = run_cli(["bench", "swinv2_t_256_w8", "--res", 32, "--batch", 1, "--reps", 1, "--warmup", 0,
                            "--train", "--precision", "bf16"], capsys)
    assert code == 0 and "swinv2_t_256_w8" in out and "train" in out
    flat = " ".join(out.split())  # the title names the CPU and its bf16 support; the share is of the bf16 peak
    assert describe_cpu() in flat and "measured bf16 matmul peak" in flat and "% bf16 peak" in flat
    assert "malloc default" in flat
    code, _, err = run_cli(["bench", "swin_q_224"], capsys)
    assert code == 2 and err.startswith("error: unknown model name")
    code, _, err = run_cli(["bench", "swin_t_c24_256", "--vs-timm"], capsys)
    assert code == 2 and "no timm counterpart" in err


def test_gpu_title_leaves_out_cpu_settings_and_the_peak_is_a_big_product(capsys):
    """On a GPU the title names no CPU threads, malloc or CPU matmul settings, and the peak is an 8192 product
    (a 2048 one times the launch: 79 of ~790 TFLOP/s on an H200)."""
    import argparse

    from swinzoo.bench import matmul_step
    from swinzoo.commands.bench import print_table

    row = Result("swin_t_224", "swinzoo", 224, 8, "eval", "bf16", 28, 4.5, 1000.0, 8.0, 9.0, 7e5, 0.1, 8.0)
    args = argparse.Namespace(device="cuda", precision="bf16", batch_size=8, malloc="default", cpu_gemm="auto",
                              cpu_attention="sdpa", cpu_attention_line="sdpa", weight_packing=True, memory=False,
                              vs_timm=False, runtime=None, plot=None, reps=10, warmup=2, compile=False,
                              grad_ckpt=False)
    print_table([row], args)
    flat = " ".join(capsys.readouterr().out.split())
    assert "measured bf16 matmul peak 700000 GFLOP/s" in flat
    assert "threads" not in flat and "malloc" not in flat and "weight packing" not in flat and "sdpa" not in flat
    assert matmul_step("meta", torch.bfloat16)[1] == 2 * 8192**3 and matmul_step("cpu")[1] == 2 * 2048**3
    assert matmul_step("cpu:0")[1] == 2 * 2048**3  # a CPU named with an index is still the CPU
    args.device = "cpu:0"
    print_table([row], args)
    flat = " ".join(capsys.readouterr().out.split())
    assert "threads" in flat and "inference attention sdpa" in flat


def test_timm_names():
    assert timm_arch("swin_t_224") == "swin_tiny_patch4_window7_224"
    assert timm_arch("swinv2_t_256_w8") == "swinv2_tiny_window8_256"
    assert timm_arch("swin_b_384") == "swin_base_patch4_window12_384"


def test_memory_probe_runs():
    mb, method = memory_probe(Spec("swin_t_224", res=32, batch=1, train=True, grad_ckpt=True))
    assert mb >= 0 and "RSS" in method


def test_memory_probe_ignores_the_parents_peak():
    """The probe's subprocess must not inherit this process's high-water mark (ru_maxrss survives exec)."""
    big = torch.ones(768 * 2**20 // 4)  # touch 768 MiB here first
    del big
    mb, _ = measure_memory(Spec("swin_t_224", res=32, batch=1, train=True))
    assert 0 <= mb < 200


def test_sweep_plot(tmp_path):
    results = [Result("swin_t_224", impl, res, 8, "eval", "fp32", 1, count_macs(zoo_config("swin_t_224",
                      img_size=res)) / 1e9, 100 / (res / 224) ** 2 / (2 if impl == "timm" else 1), 1, 1, 1, 0.5)
               for impl in ("swinzoo", "timm") for res in (224, 448, 896)]
    path = draw_sweep(results, tmp_path / "sweep.png", "test")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 400
    # the reference is quadratic in tokens: 4x the side, ~256x the attention MACs once attention dominates
    ratio = global_attention_macs("swin_t_224", 896) / global_attention_macs("swin_t_224", 224)
    assert ratio > 16 * 4


def test_bench_onnxruntime_against_eager(capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    code, out, err = run_cli(["bench", "swin_n_64", "--batch", 1, "--reps", 2, "--warmup", 0,
                              "--runtime", "onnxruntime", "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)["results"]
    assert [r["impl"] for r in rows] == ["swinzoo", "onnxruntime"]
    assert rows[0]["params"] == rows[1]["params"] and rows[1]["images_per_s"] > 0
    low, high = rows[1]["extra"]["speedup_vs_eager_quartiles"]
    assert low <= rows[1]["extra"]["speedup_vs_eager"] <= high


def test_bench_onnxruntime_refuses_what_it_cannot_time(capsys):
    code, _, err = run_cli(["bench", "swin_n_64", "--runtime", "onnxruntime", "--train"], capsys)
    assert code == 2 and err.startswith("error: --runtime onnxruntime times fp32 inference") and err.count("\n") == 1
