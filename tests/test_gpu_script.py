"""benchmarks/gpu.py stays runnable between GPU loans: its CPU smoke mode runs every part on the nano model."""

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
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
