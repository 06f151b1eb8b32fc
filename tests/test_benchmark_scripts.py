"""The scripts in benchmarks/ stay runnable: gpu.py between GPU loans (its CPU smoke mode runs every part on the nano
model), simmim_label_efficiency.py's table and plot from run folders."""

import importlib.util
import json
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str = "gpu"):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_script_smoke_on_cpu(tmp_path, capsys):
    gpu = load_script()
    assert gpu.main(["--device", "cpu", "--smoke", "--batch", "2", "--out", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert {(r["mode"], r["impl"]) for r in report["vs_timm"]} == {("eval", "swinzoo"), ("train", "swinzoo")}
    check = report["whole_batch_check"][0]
    assert check["name"] == "swin_n_64" and min(check["default_ms"], check["runs_of_windows_ms"],
                                                  check["reference_ms"]) > 0
    (attention,) = report["training_attention"]
    assert attention["windows"] == 8 and attention["node_ms"] > 0 and attention["sdpa_ms"] > 0


def test_gpu_script_without_a_gpu_says_so(capsys):
    if torch.cuda.is_available():
        return
    assert load_script().main([]) == 2
    assert capsys.readouterr().err.startswith("error: no CUDA GPU is visible")


def test_runs_of_windows_can_be_forced():
    """The check's 'runs of windows' arm really changes the path: on a non-CPU tensor the default rule is one run,
    the forced rule the CPU's."""
    gpu = load_script()
    from swinzoo.models import fast_path

    src = torch.empty(4, 8, device="meta")
    assert fast_path._max_windows(src, 1 << 20) == 1 << 62
    with gpu.cpu_runs_everywhere():
        assert fast_path._max_windows(src, 1 << 20) == fast_path.CPU_CHUNK_BYTES // (4 << 20)


def test_label_efficiency_table_and_plot(tmp_path, capsys):
    """Mean and range over seeds per arm and budget, wall times, and the PNG, from run folders as `run` writes."""
    le = load_script("simmim_label_efficiency")
    times = {"pre": 100.0}
    for seed, offset in ((0, 0.0), (1, 0.1)):
        for arm, base in (("simmim", 0.8), ("simmim_ld", 0.7), ("scratch", 0.4)):
            for frac in le.FRACTIONS:
                run = tmp_path / f"s{seed}-{arm}-{frac}"
                run.mkdir()
                (run / "metrics.json").write_text(json.dumps({"top1": base + offset, "top5": 1.0}))
                times[run.name] = 50.0 + seed
    (tmp_path / "wall_times.json").write_text(json.dumps(times))
    assert le.main(["plot", "--root", str(tmp_path), "--png", str(tmp_path / "p.png")]) == 0
    table = capsys.readouterr().out
    row = "| 1% (200 images) | **0.850** (0.800-0.900) | **0.750** (0.700-0.800) | **0.450** (0.400-0.500) | 50-51 s |"
    assert row in table and "mean over 2 seeds" in table
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cpu_gemm_script_runs(tmp_path):
    script = load_script("cpu_gemm")
    if not script.cpu_gemm.onednn_available():
        return
    assert script.main(["--batch", "1", "--reps", "1", "--json", str(tmp_path / "g.json")]) == 0
    report = json.loads((tmp_path / "g.json").read_text())
    names = [r["name"] for r in report["products"]]
    assert names[0] == "2048^3" and "stage 4 fc2" in names and "stage 4 merge" not in names
    assert all(r["forward aten"] > 0 and r["forward packed"] > 0 and r["weight grad onednn"] > 0
               for r in report["products"])
