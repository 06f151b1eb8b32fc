"""`finetune --resume OUT` beside flags that repeat what OUT/run.json recorded (a command line replayed with --resume
added): accepted; a flag that would change the run: refused, naming what the run has."""

import json
import os
from pathlib import Path

import pytest

import swinzoo
from tests.conftest import run_cli
from tests.test_finetune import image_folder

FAST = ["--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false"]


@pytest.fixture
def run(tmp_path, monkeypatch) -> Path:
    """A finished one-step run from a relative --from, made in tmp_path (the working folder)."""
    monkeypatch.chdir(tmp_path)
    cfg = swinzoo.SwinConfig(img_size=32, embed_dim=8, depths=(1, 1), num_heads=(1, 2), window_size=4,
                             pretrained_window_sizes=(0, 0), num_classes=2)
    swinzoo.save_model(swinzoo.SwinTransformer(cfg), "tiny.safetensors", {"source": "test"})
    image_folder(Path("data"), per_class=2)
    result = swinzoo.finetune("tiny.safetensors", data="data", recipe="nano_finetune", max_steps=1, batch_size=2,
                              num_workers=0, out="run", trainer={"limit_val_batches": 1, "enable_progress_bar": False,
                                                                 "enable_model_summary": False})
    assert result.metrics["global_step"] == 1
    return Path("run")


@pytest.mark.parametrize("spelling", ["as recorded", "absolute"])
def test_resume_accepts_the_runs_own_source_and_data(run, capsys, spelling):
    source = "tiny.safetensors" if spelling == "as recorded" else os.path.abspath("tiny.safetensors")
    code, _, err = run_cli(["finetune", "--resume", run, "--from", source, "--data", "data", "--max-steps", "2",
                            *FAST], capsys)
    assert code == 0, err
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 2


def test_resume_refuses_another_source_and_names_the_runs(run, capsys):
    code, _, err = run_cli(["finetune", "--resume", run, "--from", "swin_n_64", "--max-steps", "2"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--from cannot change a resumed run" in err and "it ran with --from tiny.safetensors" in err
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 1


def test_resume_refuses_another_accumulation_and_accepts_the_same(run, capsys):
    """The total batch scales the lr, and the optimizer and schedule come back from last.ckpt with the old one: a
    resume that accumulated otherwise would log one lr and train with another."""
    run_json = (run / "run.json").read_text()
    code, _, err = run_cli(["finetune", "--resume", run, "--max-steps", "2", "--trainer.accumulate_grad_batches", "2",
                            *FAST], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--trainer.accumulate_grad_batches 2 cannot change a resumed run" in err and "it ran with 1" in err, err
    assert (run / "run.json").read_text() == run_json
    code, _, err = run_cli(["finetune", "--resume", run, "--max-steps", "2", "--trainer.accumulate_grad_batches", "1",
                            *FAST], capsys)
    assert code == 0, err
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 2


def test_the_checkpoints_total_batch_is_read_and_another_refused(run):
    """For --devices auto on a machine with another device count: what a resume checks once its Trainer is built."""
    from swinzoo.errors import SwinzooError
    from swinzoo.train.resume import check_checkpoint, check_total_batch

    point = check_checkpoint(run / "last.ckpt")
    assert (point.step, point.total_batch) == (1, 2)
    check_total_batch(point, 2, run)
    with pytest.raises(SwinzooError) as e:
        check_total_batch(point, 4, run)
    assert "\n" not in str(e.value) and "total batch 2" in str(e.value) and "with 4" in str(e.value)
    assert "--from run/model.safetensors" in str(e.value)


def test_a_refused_resume_of_a_killed_run_points_new_runs_at_its_checkpoint(run, capsys):
    """A run killed before its first save has no model.safetensors: the fix a refusal names (a new run --from the
    run's weights) must name a file that exists, its last.ckpt."""
    (run / "model.safetensors").unlink()
    assert (run / "last.ckpt").is_file()
    code, _, err = run_cli(["finetune", "--resume", run, "--from", "swin_n_64", "--max-steps", "2"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.strip().endswith(f"--from {run / 'last.ckpt'}"), err


def test_finetune_resume_of_a_killed_pretraining_run_names_its_checkpoint(tmp_path, capsys):
    """`finetune --resume` of a SimMIM run is refused with the two ways on; for a run killed before its first save
    the fine-tune one names its last.ckpt (which `finetune --from` reads), not a model.safetensors it lacks."""
    import shutil

    from tests.conftest import FIXTURES

    run = tmp_path / "pre"
    shutil.copytree(FIXTURES / "old_versions" / "fe79df5" / "pretrain_killed", run)
    assert not (run / "model.safetensors").exists()
    code, _, err = run_cli(["finetune", "--resume", run], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "is a SimMIM pretraining run" in err and f"swinzoo finetune --from {run / 'last.ckpt'}`" in err, err
