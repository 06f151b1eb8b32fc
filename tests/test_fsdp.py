"""`--strategy fsdp` (Lightning's FSDPStrategy, torch's FSDP1) end to end on two CPU processes, through
`tests.fsdp_cpu` (Lightning refuses FSDP without a GPU; torch's FSDP runs on the CPU with gloo): each rank holds a
shard of every parameter, so what swinzoo reads or loads of the model after Lightning wrapped it (the exported
weights, the best weights kept, the weight-decay groups, gradient clipping) must go through FSDP.

Two processes at batch 4 see each step the 8 images one process sees at batch 8 (the sampler deals the same
shuffle out), so the weights match the one-process run's to float rounding."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

import swinzoo
from tests.conftest import one_error_line, run_cli
from tests.fsdp_cpu import RUNS_HERE
from tests.test_finetune import env, image_folder
from tests.test_resume import tiny_source

needs_cpu_fsdp = pytest.mark.skipif(not RUNS_HERE, reason="torch's FSDP on CPU processes crashes before 2.14")
FSDP = ["--devices", "2", "--accelerator", "cpu", "--strategy", "fsdp_cpu", "--num-workers", "0"]
# clipping always on, a weight decay that shows, and activation checkpointing; AdamW's eps at 1 makes its step
# follow the gradient's size: at 1e-8 it turns float noise in gradients that are 0 in exact arithmetic (the
# attention's key bias) into whole steps, which no two reduction orders share
RECIPE = {"clip_grad": 0.05, "weight_decay": 0.05, "eps": 1.0, "grad_checkpointing": True}
RUN = dict(recipe="nano_finetune", recipe_overrides=RECIPE, lr=1.0, precision="32-true", num_workers=0)


def fsdp(*args, cwd: Path) -> subprocess.CompletedProcess:
    """`swinzoo ARGS` on two CPU processes under FSDP."""
    return subprocess.run([sys.executable, "-m", "tests.fsdp_cpu", *map(str, args), *FSDP], env=env(),
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def recipe_flags() -> list[str]:
    return [f"--recipe.{k}={str(v).lower()}" for k, v in RECIPE.items()]


def assert_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    shapes = [k for k in a if a[k].shape != b[k].shape]
    assert not shapes, f"{shapes[0]}: {tuple(a[shapes[0]].shape)} vs {tuple(b[shapes[0]].shape)}"
    worst = max(((a[k] - b[k]).abs().max().item(), k) for k in a)
    assert worst[0] <= atol, f"{worst[1]} differs by {worst[0]:.3g}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-step fine-tune of a 3-class model on 2 classes (a fresh head) on two FSDP processes at batch 4, and on
    one process at batch 8."""
    root = tmp_path_factory.mktemp("fsdp")
    src, data = tiny_source(root), image_folder(root / "data")
    proc = fsdp("finetune", "--from", src, "--data", data, "--recipe", "nano_finetune", *recipe_flags(), "--lr", "1",
                "--precision", "32-true", "--max-steps", "2", "--batch-size", "4", "--out", root / "fsdp",
                "--trainer.limit_val_batches", "2", cwd=root)
    swinzoo.finetune(str(src), data=str(data), out=str(root / "one"), max_steps=2, batch_size=8, devices=1,
                     accelerator="cpu", trainer={"limit_val_batches": 2}, **RUN)
    return root, src, proc


@needs_cpu_fsdp
def test_fsdp_fine_tune_matches_one_process(runs):
    root, src, proc = runs
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded, one = load_file(root / "fsdp/model.safetensors"), load_file(root / "one/model.safetensors")
    assert_close(sharded, one, 1e-6)
    start = swinzoo.load_model(src).state_dict()
    assert max((one[k] - start[k]).abs().max().item() for k in one if "head" not in k) > 1e-3  # it trained
    assert swinzoo.load_model(root / "fsdp/model.safetensors").config.num_classes == 2
    metrics = [json.loads((root / run / "metrics.json").read_text()) for run in ("fsdp", "one")]
    assert metrics[0]["n"] == metrics[1]["n"] == 12 and metrics[0]["top1"] == metrics[1]["top1"]


@needs_cpu_fsdp
def test_fsdp_run_resumes(runs, tmp_path):
    """From last.ckpt (gathered from the shards) into a sharded model and its optimizer, in a folder moved since."""
    root, _, first = runs
    assert first.returncode == 0, first.stderr[-3000:]
    for run in ("fsdp", "one"):
        shutil.copytree(root / run, tmp_path / run)
    proc = fsdp("finetune", "--resume", tmp_path / "fsdp", "--max-steps", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the best validation before the move still counts (under FSDP Lightning reads last.ckpt itself)
    assert "dirpath has changed" not in proc.stderr
    swinzoo.finetune(resume=str(tmp_path / "one"), max_steps=3)
    assert_close(load_file(tmp_path / "fsdp/model.safetensors"), load_file(tmp_path / "one/model.safetensors"), 1e-6)
    assert json.loads((tmp_path / "fsdp/metrics.json").read_text())["global_step"] == 3


@needs_cpu_fsdp
def test_fsdp_keeps_the_best_weights_and_prints_lightnings_model_summary(tmp_path):
    """--keep best under FSDP: best.ckpt's weights loaded into the sharded model, validated and exported.

    And Lightning's model summary: its forward of the modules' example input would meet the shards outside FSDP's
    own forward, so under FSDP the modules give no example, and the summary lists the layers without sizes."""
    out = tmp_path / "best"
    proc = fsdp("finetune", "--from", "swin_n_64", "--data", "shapes", "--max-steps", "2", "--batch-size", "4",
                "--precision", "32-true", "--out", out, "--trainer.val_check_interval", "1",
                "--trainer.limit_val_batches", "2", "--trainer.callbacks+=benchmarks.gpu_fsdp.SpoilHeadAt",
                "--trainer.callbacks.step=2", "--trainer.enable_model_summary", "true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SwinTransformer" in proc.stdout + proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["weights"], metrics["weights_step"], metrics["global_step"]) == ("best", 1, 2)
    best = torch.load(out / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert_close(load_file(out / "model.safetensors"), {k[len("model."):]: v for k, v in best.items()}, 0)
    with open(out / "logs/metrics.csv") as f:
        logged = {int(row["step"]): float(row["val/top1"]) for row in csv.DictReader(f) if row["val/top1"]}
    assert logged[0] > logged[1]  # the step-1 validation is logged at step index 0
    assert metrics["top1"] == pytest.approx(logged[0], abs=1e-6)  # validated again: the loaded weights ran


@needs_cpu_fsdp
def test_fsdp_pretrain_exports_the_whole_model(tmp_path):
    out = tmp_path / "mim"
    proc = fsdp("pretrain", "--from", "swin_n_64", "--data", "shapes", "--max-steps", "2", "--batch-size", "4",
                "--out", out, "--trainer.limit_val_batches", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert_close(load_file(out / "model.safetensors"), {k[len("model."):]: v for k, v in last.items()}, 0)
    swinzoo.load_simmim(out)


def test_weight_averaging_is_refused_under_fsdp(tmp_path, monkeypatch, capsys):
    """Lightning's weight averaging (the recipe's EMA, SWA) copies the whole model, which FSDP shards: refused
    before anything is written, not at the first step."""
    from tests.fsdp_cpu import register

    register()
    monkeypatch.setattr(L.Trainer, "fit", lambda *a, **k: pytest.fail("the run started"))
    src, data = tiny_source(tmp_path), image_folder(tmp_path / "data")
    out = tmp_path / "ema"
    code, _, err = run_cli(["finetune", "--from", src, "--data", data, "--recipe", "nano_finetune",
                            "--recipe.ema_decay", "0.9", "--batch-size", "4", "--out", out, "--devices", "2",
                            "--accelerator", "cpu", "--strategy", "fsdp_cpu"], capsys)
    assert code == 2 and not out.exists()
    one_error_line(err, "--strategy fsdp_cpu", "EMA", "--strategy ddp")
