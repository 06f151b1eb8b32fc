"""The scripts in benchmarks/ stay runnable: gpu.py between GPU loans (its CPU smoke mode runs every part on the nano
model), cpu_targets.py's verdicts and its smoke run, profile_steps.py's op kinds and its smoke run, product_floor.py's
recording, replay, budget and smoke run, cpu_gemm.py, simmim_label_efficiency.py's table and plot from run folders."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from tests.fsdp_cpu import RUNS_HERE

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
    (choices,) = report["training_choices"]
    assert choices["default_ms"] > 0 and choices["SDPA attention"] > 0 and choices["recomputed GELU"] > 0
    (parity,) = report["parity"]  # float64, the fast path against the reference blocks (and timm when installed)
    assert parity["ok"] and parity["eval_logits_fast_vs_reference"] < 1e-6


def test_gpu_script_alternatives_compute_the_same_step():
    """The training alternatives gpu.py times are the same computation: SDPA over images' windows folded into heads
    (shift masks and padding: 56 and 44 px) and the recomputed GELU give the default step's logits and gradients in
    float64, and the SDPA one really runs SDPA."""
    gpu = load_script()
    from swinzoo import SwinConfig, SwinTransformer

    for version in (1, 2):
        cfg = SwinConfig(version=version, img_size=56, window_size=7, embed_dim=16, depths=(2, 2), num_heads=(2, 4),
                         pretrained_window_sizes=(0, 0), num_classes=5, drop_path_rate=0.0)
        model = gpu.randomized(SwinTransformer(cfg)).double().train()
        for size in (56, 44):
            x = torch.randn(3, 3, size, size, dtype=torch.float64)

            def step(model=model, x=x):
                model.zero_grad()
                logits = model(x)
                logits.square().sum().backward()
                return [logits.detach()] + [p.grad.clone() for p in model.parameters()]

            default = step()
            for choice in gpu.ALTERNATIVES:
                with gpu.alternative(choice), torch.profiler.profile() as prof:
                    got = step()
                if choice == "SDPA attention":
                    assert any("scaled_dot_product" in e.key for e in prof.key_averages())
                for a, b in zip(got, default):
                    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_gpu_script_parity_can_fail(monkeypatch):
    """The parity check sees a wrong number: a fast path that drops one block's attention output is reported."""
    gpu = load_script()
    from swinzoo.models import fast_path

    real = fast_path.block_forward
    calls = []

    def broken(block, *args, **kwargs):
        calls.append(1)
        out = real(block, *args, **kwargs)
        return out * 1.001 if len(calls) == 1 else out

    monkeypatch.setattr(fast_path, "block_forward", broken)
    (row,) = gpu.check_parity("cpu", smoke=True)
    assert calls and not row["ok"] and row["eval_logits_fast_vs_reference"] > 1e-6


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


def _result(name, mode, impl, precision="fp32", p50=100.0, gmacs=4.5, share=0.5, speedup=None):
    from swinzoo.bench import Result

    extra = {"peak_share_quartiles": [share - 0.01, share + 0.01]}
    if speedup is not None:
        extra |= {"speedup_vs_timm": speedup, "speedup_vs_timm_quartiles": [speedup - 0.05, speedup + 0.05]}
    return Result(name, impl, 224, 8, mode, precision, 1, gmacs, 8.0, p50, p50, 400.0, share, extra=extra)


def test_cpu_targets_judge():
    """Each target's verdict: the fp32 training goal follows timm's share of the peak, the AMX targets say n/a on
    another CPU, misses say by how much, V2's step per GMAC is against V1's, memory against timm's."""
    targets = load_script("cpu_targets")
    fp32 = [_result("t", "train", "swinzoo", speedup=1.20), _result("t", "train", "timm", share=0.65),
            _result("t", "eval", "swinzoo", speedup=2.1, share=0.72), _result("t", "eval", "timm"),
            _result("v2", "train", "swinzoo", speedup=1.20), _result("v2", "train", "timm", share=0.40),
            _result("v2", "eval", "swinzoo", speedup=1.4, share=0.76), _result("v2", "eval", "timm")]
    bf16 = [_result("t", "train", "swinzoo", "bf16", p50=500, gmacs=4.5, speedup=1.6),
            _result("v2", "train", "swinzoo", "bf16", p50=900, gmacs=5.9, speedup=1.6),
            _result("t", "eval", "swinzoo", "bf16", speedup=1.9), _result("v2", "eval", "swinzoo", "bf16", speedup=2.2)]
    memory = {"model": "swin_b_384", "batch": 4, "mib": {"swinzoo": 600.0, "timm": 2000.0}}

    def verdict(rows, start, model):
        (row,) = [r for r in rows if r["target"].startswith(start) and r["model"] == model]
        return row["verdict"]

    for native, amx in (("AMX", ["not met: 0.10x short", "met", "met", "met"]),
                        ("AVX512-BF16", ["n/a: this CPU has AVX512-BF16, not AMX"] * 4)):
        rows = targets.judge({"fp32": fp32, "bf16": bf16}, native, ("t", "v2"), memory)
        # timm at 65% of the peak on "t": the 1.10x goal, met at 1.20x; at 40% on "v2": 1.25x, missed by 0.05x
        assert verdict(rows, "training step >= 1.10x timm, fp32", "t") == "met"
        assert verdict(rows, "training step >= 1.25x timm, fp32", "v2") == "not met: 0.05x short"
        assert verdict(rows, "inference >= 1.5x timm, fp32", "v2") == "not met: 0.10x short"
        assert [verdict(rows, start, model) for model in ("t", "v2") for start in
                ("inference >= 2.0x timm, bf16", "training step >= 1.5x timm, bf16")] == amx
        peak = [r for r in rows if "matmul peak" in r["target"]]
        assert [r["verdict"] for r in peak] == ["not met: 3.0 points short", "met"]
        assert peak[0]["measured"] == "72.0% (71.0%-73.0%) of 400 GFLOP/s"
        per_gmac = next(r for r in rows if "per GMAC" in r["target"])
        # (900 / 5.9) / (500 / 4.5) = 1.37
        assert per_gmac["measured"].startswith("1.37x") and per_gmac["verdict"] == "not met: 0.07x over"
        assert rows[-1]["measured"] == "30% (600 / 2000 MiB)" and rows[-1]["verdict"] == "met"


def test_cpu_targets_script_smoke(tmp_path):
    targets = load_script("cpu_targets")
    assert targets.main(["--smoke", "--batch", "1", "--out", str(tmp_path / "t.json")]) == 0
    report = json.loads((tmp_path / "t.json").read_text())
    assert report["cpu"] and report["commit"] and report["date"]
    assert {r["model"] for r in report["targets"]} == {"swin_n_64", "swinv2_n_64_w4", "swinv2_n_64_w4 / swin_n_64"}
    assert {(r["mode"], r["precision"]) for v in report["results"].values() for r in v} == {
        ("eval", "fp32"), ("train", "fp32"), ("eval", "bf16"), ("train", "bf16")}


def test_profile_script_kinds_and_smoke(tmp_path):
    """profile_steps.py files every op of a step under a kind by its aten / oneDNN name (backward ops with their
    forward), and its smoke run profiles an inference pass and a training step and times both attention choices."""
    prof = load_script("profile_steps")
    kinds = {"mkldnn::_linear_pointwise": "Linear products, patch conv", "aten::addmm": "Linear products, patch conv",
             "aten::mm": "Linear products, patch conv", "aten::bmm": "attention products",
             "aten::_scaled_dot_product_flash_attention_for_cpu": "attention products",
             "aten::_softmax_backward_data": "softmax", "aten::native_layer_norm_backward": "layer norms",
             "aten::gelu_backward": "GELU", "aten::copy_": "copies", "aten::index_select": "row gathers",
             "aten::linalg_vector_norm": "elementwise", "aten::add_": "elementwise", "aten::empty": "other"}
    assert {op: prof.kind_of(op) for op in kinds} == kinds
    assert prof.main(["--smoke", "--out", str(tmp_path / "p.json")]) == 0
    report = json.loads((tmp_path / "p.json").read_text())
    assert {(r["impl"], r["mode"]) for r in report["profiles"]} == {("swinzoo", "eval"), ("swinzoo", "train")}
    for r in report["profiles"]:
        assert r["ms_per_pass"]["Linear products, patch conv"] > 0 and r["ms_per_pass"]["attention products"] > 0
    (choice,) = report["attention_choice"]
    assert min(choice["ms"].values()) > 0 and choice["sdpa_over_products"] > 0


def test_product_floor_records_and_replays_each_product():
    """product_floor.py records each product call of a step once, with its shapes, strides and dtypes (the
    transposed layout kept), and replays it on fresh inputs laid out alike: the output shape of the call itself."""
    floor = load_script("product_floor")
    x, w = torch.randn(64, 48), torch.randn(32, 48)
    q, k, v = torch.randn(3, 2, 3, 16, 8).unbind(0)  # (windows, heads, N, d) views of one tensor: strided
    mask = torch.randn(1, 3, 16, 16)
    packed = torch.ops.mkldnn._reorder_linear_weight(w, 64) if torch.backends.mkldnn.is_available() else None
    ops = {
        "aten::mm": lambda: torch.mm(x.t(), x),
        "aten::addmm": lambda: torch.addmm(torch.randn(32), x, w.t(), beta=0.5),
        "aten::bmm": lambda: torch.matmul(q[:, 0], k[:, 0].transpose(-2, -1)),
        floor.SDPA: lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask),
    }
    if packed is not None:
        ops["mkldnn::_linear_pointwise"] = lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    for name, op in ops.items():
        calls, in_step = floor.recorded_products(op)
        assert [c["name"] for c in calls] == [name], name
        assert in_step > 0
        replayed = floor.replay(calls[0])()
        assert (replayed[0] if name == floor.SDPA else replayed).shape == op().shape  # the kernel's (out, lse)
    (call,) = floor.recorded_products(ops["aten::mm"])[0]
    assert call["shapes"][0] == [48, 64] and call["strides"][0] == [1, 48]  # the transposed layout, kept
    assert floor.products_alone([call], reps=2)["linear"] > 0


def test_product_floor_budget():
    """timm at 600 ms and a 1.5x goal allow a 400 ms step; with 250 ms of products alone that is 150 ms for the
    rest, which takes 300 now: half of it to go."""
    floor = load_script("product_floor")
    rows = [{"model": "m", "impl": "swinzoo", "step_ms": 550.0, "products_alone_ms": 250.0, "rest_ms": 300.0},
            {"model": "m", "impl": "timm", "step_ms": 600.0, "products_alone_ms": 240.0, "rest_ms": 360.0}]
    b = floor.budget(rows, 1.5)
    assert b["allowed_step_ms"] == pytest.approx(400.0) and b["allowed_rest_ms"] == pytest.approx(150.0)
    assert b["rest_cut"] == pytest.approx(0.5) and b["ratio_now"] == pytest.approx(600 / 550)
    assert floor.budget(rows[:1], 1.5) is None


def test_product_floor_script_smoke(tmp_path):
    floor = load_script("product_floor")
    assert floor.main(["--smoke", "--mode", "train", "--out", str(tmp_path / "f.json")]) == 0
    report = json.loads((tmp_path / "f.json").read_text())
    assert report["cpu"] and report["date"] and report["budgets"] == []
    (row,) = report["rows"]
    assert row["impl"] == "swinzoo" and row["products"] > 0
    assert row["linear_alone_ms"] > 0 and row["attention_alone_ms"] > 0
    assert row["rest_ms"] == pytest.approx(row["step_ms"] - row["linear_alone_ms"] - row["attention_alone_ms"])


@pytest.mark.skipif(not RUNS_HERE, reason="torch's FSDP on CPU processes crashes before 2.14")
def test_gpu_fsdp_script_runs_on_cpu_processes(tmp_path, capsys):
    """gpu_fsdp.py between GPU loans: its --keep best check through the tests' CPU FSDP strategy (tests.fsdp_cpu),
    its callback found by class path in the run's processes."""
    script = load_script("gpu_fsdp")
    code = script.main(["--accelerator", "cpu", "--strategy", "fsdp_cpu", "--runner", "tests.fsdp_cpu", "--devices",
                        "2", "--only", "keep_best", "--keep", str(tmp_path / "runs"),
                        "--out", str(tmp_path / "r.json")])
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 0, report
    assert report["keep_best"]["kept"] == ["best", 1] and report["keep_best"]["export_vs_best_ckpt"] == 0.0
