"""A fine-tune's metrics.json says the precision its final validation ran under, and `swinzoo eval RUN` measures
under it by default, so the two top-1 figures are one measurement (bf16-mixed, chosen on CPUs with native bf16,
moved top-1 against eval's float32 default: 0.867 vs 0.863)."""

import json

import pytest

import swinzoo
from tests.conftest import run_cli
from tests.test_finetune import image_folder

# 6 val images, at most 2 batches of 4 validated: the run validates every one, as eval does
RUN = ["--from", "swin_n_64", "--max-steps", "2", "--batch-size", "4", "--num-workers", "0",
       "--trainer.limit_val_batches", "2", "--precision", "bf16-mixed", "--accelerator", "cpu"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    out = root / "run"
    from swinzoo.cli import cli_main

    code = cli_main([*map(str, ["finetune", *RUN, "--data", image_folder(root / "data", per_class=3), "--out", out])])
    assert code == 0
    return out


@pytest.fixture
def bf16_cpu(monkeypatch):
    """This CPU as one with bf16 matmul, whatever it is (eval takes the run's bf16 only there)."""
    from swinzoo import eval_precision

    monkeypatch.setattr(eval_precision, "native_bf16_matmul", lambda: "AVX512-BF16")


def test_metrics_and_eval_measure_under_the_runs_precision(run, capsys, bf16_cpu):
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["precision"] == "bf16-mixed" and metrics["n"] == 6
    for model in (run, run / "model.safetensors"):  # the run folder, or its model file beside metrics.json
        code, out, err = run_cli(["eval", model, "--json", "--num-workers", "0", "--device", "cpu"], capsys)
        assert code == 0, err
        result = json.loads(out)
        assert (result["top1"], result["n"]) == (metrics["top1"], metrics["n"])
        assert "precision bf16, as the run validated" in err and "--precision fp32 for float32" in err
    code, out, err = run_cli(["eval", run, "--json", "--num-workers", "0", "--device", "cpu", "--precision", "fp32"],
                             capsys)
    assert code == 0 and "as the run validated" not in err


def test_the_python_api_takes_the_runs_precision_else_fp32(run, tmp_path, bf16_cpu):
    assert swinzoo.evaluate(run, num_workers=0, device="cpu")["precision"] == "bf16"
    assert swinzoo.evaluate(run, num_workers=0, device="cpu", precision="fp32")["precision"] == "fp32"
    alone = tmp_path / "model.safetensors"  # the run's weights away from its metrics.json: no run to follow
    alone.write_bytes((run / "model.safetensors").read_bytes())
    assert swinzoo.evaluate(alone, num_workers=0, device="cpu")["precision"] == "fp32"


def test_a_bf16_run_evaluates_in_fp32_on_a_cpu_without_bf16_matmul(run, capsys, monkeypatch):
    """A run from a CPU (or GPU) with bf16 matmul, evaluated on one without (AMD Zen 3): emulated bf16 would be
    several times slower than fp32, so eval stays in fp32 and says why."""
    from swinzoo import eval_precision

    monkeypatch.setattr(eval_precision, "native_bf16_matmul", lambda: None)
    code, out, err = run_cli(["eval", run, "--json", "--num-workers", "0", "--device", "cpu"], capsys)
    assert code == 0 and "precision fp32: the run validated under bf16-mixed" in err and "no bf16 matmul" in err
    assert swinzoo.evaluate(run, num_workers=0, device="cpu")["precision"] == "fp32"


def test_a_pretraining_records_the_precision_of_its_val_loss(tmp_path):
    from swinzoo.cli import cli_main

    out = tmp_path / "pre"
    assert cli_main(["pretrain", "--from", "swin_n_64", "--data", "shapes", "--max-steps", "1", "--batch-size", "4",
                     "--num-workers", "0", "--trainer.limit_val_batches", "1", "--precision", "bf16-mixed",
                     "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["precision"] == "bf16-mixed"


def test_a_bf16_run_evaluates_in_fp32_on_a_gpu_without_bf16(run, monkeypatch):
    """V100s and T4s run bf16 only emulated: a bf16 run evaluated there stays in fp32, as on a CPU without it."""
    import torch

    from swinzoo import eval_precision

    provenance = swinzoo.load_model(run / "model.safetensors").provenance
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    chosen, note = eval_precision.run_precision(run, torch.device("cuda"), provenance)
    assert chosen == "fp32" and "this GPU has no bf16" in note
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert eval_precision.run_precision(run, torch.device("cuda"), provenance)[0] == "bf16"


def test_a_python_caller_is_told_the_keyword_for_a_flag_a_note_names(run, capsys, bf16_cpu):
    """evaluate() from Python prints the same note as `swinzoo eval`, and says how the flag it names is spelled."""
    swinzoo.evaluate(run, num_workers=0, device="cpu")
    err = capsys.readouterr().err
    assert "--precision fp32 for float32 (in Python: --precision is precision=...)" in err
    code, _, err = run_cli(["eval", run, "--num-workers", "0", "--device", "cpu"], capsys)
    assert code == 0 and "--precision fp32 for float32" in err and "in Python" not in err
