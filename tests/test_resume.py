"""What a run leaves for `--resume` and what a resume keeps: last.ckpt after every epoch and at the last step, the
changed plan written back to run.json, finished runs refused, --keep best across a moved folder."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import swinzoo
from swinzoo.train.module import AtomicCheckpointIO
from tests.conftest import one_error_line, run_cli
from tests.test_finetune import image_folder

# 12 training images in batches of 4: an epoch is 3 steps; one validation batch
RUN = dict(recipe="nano_finetune", batch_size=4, num_workers=0, trainer={"limit_val_batches": 1})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_source(tmp_path_factory.mktemp("src"))


def tiny_source(folder: Path) -> Path:
    """A 3-class 32 px Swin with seeded weights, saved in `folder`."""
    path = folder / "tiny.safetensors"
    cfg = swinzoo.SwinConfig(img_size=32, embed_dim=8, depths=(1, 1), num_heads=(1, 2), window_size=4,
                             pretrained_window_sizes=(0, 0), num_classes=3)
    with torch.random.fork_rng():  # the same weights whichever tests ran before: some compare kept weights
        torch.manual_seed(0)
        model = swinzoo.SwinTransformer(cfg)
    swinzoo.save_model(model, path, {"source": "test"})
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return image_folder(tmp_path_factory.mktemp("data"))


def step_of(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


class CrashAt(L.Callback):
    """A crash (out of memory, a bad batch, a node lost) before the training step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("crash")


def test_a_run_without_ckpt_every_checkpoints_each_epoch_and_resumes(tiny, data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crash"):
        swinzoo.finetune(str(tiny), data=str(data), out=str(out), max_steps=9,
                         **{**RUN, "trainer": {**RUN["trainer"], "callbacks": [CrashAt(4)]}})
    assert step_of(out / "last.ckpt") == 3  # the end of the first epoch: the folder is kept, resumable
    assert not (out / "metrics.json").exists()
    result = swinzoo.finetune(resume=str(out), max_steps=5, trainer={"limit_val_batches": 1})
    assert result.metrics["global_step"] == 5 and step_of(out / "last.ckpt") == 5
    # the resume's --max-steps is the run's plan now, and its provenance says where it resumed
    plan = json.loads((out / "run.json").read_text())
    assert plan["recipe"]["max_steps"] == 5 and [r["step"] for r in plan["provenance"]["resumed"]] == [3]
    assert swinzoo.load_model(out).provenance["resumed"][0]["step"] == 3


def test_a_resume_ending_at_the_step_it_stands_at_records_its_plan(tiny, data, tmp_path):
    """docs/nano-models.md's diary: a run killed at its step-3800 checkpoint, resumed with --max-steps 3800, has no
    step to train (Lightning skips on_train_start) but its outputs to write: run.json must still keep the change."""
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crash"):
        swinzoo.finetune(str(tiny), data=str(data), out=str(out), max_steps=9,
                         **{**RUN, "trainer": {**RUN["trainer"], "callbacks": [CrashAt(4)]}})
    assert step_of(out / "last.ckpt") == 3
    result = swinzoo.finetune(resume=str(out), max_steps=3, trainer={"limit_val_batches": 1})
    assert result.metrics["global_step"] == 3
    plan = json.loads((out / "run.json").read_text())
    assert plan["recipe"]["max_steps"] == 3 and [r["step"] for r in plan["provenance"]["resumed"]] == [3]
    assert swinzoo.load_model(out).provenance["resumed"][0]["step"] == 3


def test_ckpt_every_leaves_last_ckpt_at_the_final_step(tiny, data, tmp_path, capsys):
    out = tmp_path / "run"
    result = swinzoo.finetune(str(tiny), data=str(data), out=str(out), max_steps=4, ckpt_every=3, **RUN)
    assert result.metrics["global_step"] == 4 and step_of(out / "last.ckpt") == 4
    # finished: a resume without more steps has nothing to train, and says how to train on
    code, _, err = run_cli(["finetune", "--resume", out], capsys)
    assert code == 2 and "the run finished at step 4" in err and "give --max-steps above 4" in err


def test_a_finished_epoch_run_resumes_only_for_more_epochs(tiny, data, tmp_path, capsys):
    out = tmp_path / "run"
    swinzoo.finetune(str(tiny), data=str(data), out=str(out), epochs=1, **RUN)
    # the validations after fit (of the last and the best weights) are not rows of an epoch 1 that never ran
    rows = (out / "logs/metrics.csv").read_text().splitlines()[1:]
    assert rows and {row.split(",")[0] for row in rows} == {"0"}
    code, _, err = run_cli(["finetune", "--resume", out], capsys)
    assert code == 2 and "the run finished at step 3, after 1 epoch;" in err and "--epochs above 1" in err
    code, _, err = run_cli(["finetune", "--resume", out, "--epochs", "1"], capsys)
    assert code == 2 and "--epochs above 1" in err
    result = swinzoo.finetune(resume=str(out), epochs=2, trainer={"limit_val_batches": 1})
    assert result.metrics["global_step"] == 6
    assert json.loads((out / "run.json").read_text())["recipe"]["epochs"] == 2


def test_best_score_survives_a_moved_run_folder(tmp_path):
    """A resumed run in a moved folder compares new validations with the best one before the move (Lightning
    drops the best score when the checkpoint's folder is not the callback's)."""
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()

    def callback(folder: Path) -> ModelCheckpoint:
        return ModelCheckpoint(dirpath=folder, filename="best", monitor="val/top1", mode="max", save_top_k=1,
                               save_weights_only=True, enable_version_counter=False)

    before, best = callback(old), str(old / "best.ckpt")
    before.best_model_score, before.best_model_path, before.kth_best_model_path = torch.tensor(0.75), best, best
    before.best_k_models = {best: torch.tensor(0.75)}
    torch.save({"callbacks": {before.state_key: before.state_dict()}, "global_step": 3}, new / "last.ckpt")
    after = callback(new)
    after.load_state_dict(AtomicCheckpointIO().load_checkpoint(new / "last.ckpt")["callbacks"][after.state_key])
    assert after.best_model_score == pytest.approx(0.75) and after.best_model_path == str(new / "best.ckpt")
    assert list(after.best_k_models) == [str(new / "best.ckpt")]


def test_a_validation_within_an_epoch_checkpoints_too(tiny, data, tmp_path):
    """With validations every 2 steps in 3-step epochs, best.ckpt can be written mid-epoch: so is last.ckpt, and
    a crash after it leaves a run that resumes, not a folder deleted with its best weights."""
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crash"):
        swinzoo.finetune(str(tiny), data=str(data), out=str(out), max_steps=9,
                         **{**RUN, "trainer": {**RUN["trainer"], "val_check_interval": 2, "callbacks": [CrashAt(2)]}})
    assert step_of(out / "last.ckpt") == 2 and (out / "best.ckpt").is_file()


def test_a_second_resume_from_one_step_keeps_the_first_ones_log(tmp_path):
    from swinzoo.train.trainer import log_version

    assert log_version(tmp_path, 3) == "resumed-at-3"
    (tmp_path / "logs" / "resumed-at-3").mkdir(parents=True)
    assert log_version(tmp_path, 3) == "resumed-at-3-2"
    (tmp_path / "logs" / "resumed-at-3-2").mkdir()
    assert log_version(tmp_path, 3) == "resumed-at-3-3" and log_version(tmp_path, 4) == "resumed-at-4"


class LrAtStep(L.Callback):
    """The lr each optimizer step runs at."""

    def __init__(self) -> None:
        self.lrs = {}

    def on_train_batch_start(self, trainer, *args) -> None:
        self.lrs[trainer.global_step] = trainer.optimizers[0].param_groups[-1]["lr"]


def test_a_resume_with_more_steps_follows_the_new_schedule_from_its_first_step(tiny, data, tmp_path):
    """The schedule of 6 steps is not the one of 3: Lightning restores the optimizer's lr of the old schedule, and
    LambdaLR would apply the new one only after the resumed run's first step."""
    straight, resumed = LrAtStep(), LrAtStep()
    swinzoo.finetune(str(tiny), data=str(data), out=str(tmp_path / "a"), max_steps=6,
                     **{**RUN, "trainer": {**RUN["trainer"], "callbacks": [straight]}})
    swinzoo.finetune(str(tiny), data=str(data), out=str(tmp_path / "b"), max_steps=3, **RUN)
    swinzoo.finetune(resume=str(tmp_path / "b"), max_steps=6, trainer={**RUN["trainer"], "callbacks": [resumed]})
    assert set(resumed.lrs) == {3, 4, 5}
    assert all(resumed.lrs[s] == pytest.approx(straight.lrs[s], rel=1e-12) for s in resumed.lrs), (resumed.lrs,
                                                                                                    straight.lrs)



def training_reads(monkeypatch, dataset_class) -> list[int]:
    """The indices training reads from `dataset_class` (its samples cropped by RandomResizedCrop), in order."""
    read, getitem = [], dataset_class.__getitem__

    def recording(self, index):
        if any(type(t).__name__ == "RandomResizedCrop" for t in self.transform.transforms):
            read.append(index)
        return getitem(self, index)

    monkeypatch.setattr(dataset_class, "__getitem__", recording)
    return read


def test_a_resume_within_an_epoch_reads_the_rest_of_the_epoch_in_the_straight_runs_order(tiny, data, tmp_path,
                                                                                            monkeypatch):
    """Resumed after step 4 (one batch into the second epoch), training reads the images the straight run reads
    from step 4 on, in its order: not a fresh shuffle of the whole epoch (Lightning's 'not resumable' warning)."""
    from swinzoo.train.data import TransformedDataset

    read = training_reads(monkeypatch, TransformedDataset)
    swinzoo.finetune(str(tiny), data=str(data), out=str(tmp_path / "a"), max_steps=9, **RUN)
    straight = read.copy()
    assert len(straight) == 36  # 3 epochs of 3 batches of 4
    with pytest.raises(RuntimeError, match="crash"):
        swinzoo.finetune(str(tiny), data=str(data), out=str(tmp_path / "b"), max_steps=9, ckpt_every=2,
                         **{**RUN, "trainer": {**RUN["trainer"], "callbacks": [CrashAt(5)]}})
    assert step_of(tmp_path / "b/last.ckpt") == 4
    read.clear()
    swinzoo.finetune(resume=str(tmp_path / "b"), trainer=RUN["trainer"])
    assert read == straight[16:]
    # a run that finished at step 4 and resumes for more: Lightning counts its epoch as done (it sets the sampler's
    # epoch to 2 for the rest of the second one); the order is still the straight run's
    swinzoo.finetune(str(tiny), data=str(data), out=str(tmp_path / "c"), max_steps=4, **RUN)
    read.clear()
    swinzoo.finetune(resume=str(tmp_path / "c"), max_steps=9, trainer=RUN["trainer"])
    assert read == straight[16:]


def test_overfit_batches_puts_in_lightnings_own_sampler(tiny, data, tmp_path):
    """Lightning makes the training loader again with a sequential sampler; it has nothing to resume."""
    result = swinzoo.finetune(str(tiny), data=str(data), out=str(tmp_path / "run"), max_steps=2,
                              **{**RUN, "trainer": {**RUN["trainer"], "overfit_batches": 1}})
    assert result.metrics["global_step"] == 2
    loops = torch.load(tmp_path / "run/last.ckpt", weights_only=True)["loops"]
    assert loops["fit_loop"]["state_dict"] == {"combined_loader": [{}]}


class Validations(L.Callback):
    """The steps validations ran at, in fit and after it."""

    def __init__(self) -> None:
        self.steps = []

    def on_validation_end(self, trainer, *args) -> None:
        self.steps.append(trainer.global_step)


def test_the_final_weights_are_validated_once(tiny, data, tmp_path):
    """The epoch's end validated the last step's weights: metrics.json takes that validation's figures rather
    than running it again; a run whose --max-steps ends between validations validates at that step, in fit."""
    seen = Validations()
    result = swinzoo.finetune(str(tiny), data=str(data), out=str(tmp_path / "a"), epochs=1,
                              **{**RUN, "trainer": {**RUN["trainer"], "callbacks": [seen]}})
    assert seen.steps == [3] and result.metrics["global_step"] == 3 and result.metrics["n"] == 4
    rows = (tmp_path / "a/logs/metrics.csv").read_text().splitlines()
    top1 = rows[0].split(",").index("val/top1")
    assert [float(row.split(",")[top1]) for row in rows[1:] if row.split(",")[top1]] == [result.metrics["top1"]]
    seen.steps.clear()
    swinzoo.finetune(str(tiny), data=str(data), out=str(tmp_path / "b"), max_steps=4,
                     **{**RUN, "trainer": {**RUN["trainer"], "callbacks": [seen]}})
    assert seen.steps == [3, 4]


def test_last_ckpt_written_at_a_validation_holds_that_validations_best_score(tiny, data, tmp_path):
    """last.ckpt written by a validation within an epoch carries ModelCheckpoint's state after that validation:
    a resume then compares new validations with it, and a worse one neither replaces best.ckpt nor the kept
    weights (written before ModelCheckpoint had seen the score, it held none, and the resume kept the worse)."""
    out = tmp_path / "run"
    result = swinzoo.finetune(str(tiny), data=str(data), out=str(out), max_steps=2, **RUN)
    state = torch.load(out / "last.ckpt", weights_only=True)["callbacks"]
    (best,) = [v for k, v in state.items() if k.startswith("ModelCheckpoint")]
    assert best["best_model_score"] is not None
    assert float(best["best_model_score"]) == pytest.approx(result.metrics["top1"])


@pytest.mark.parametrize("every, split", [(None, 2), (2, 2), (None, 3)])
def test_a_resume_logs_its_steps_where_the_straight_run_does(tiny, data, tmp_path, every, split):
    """A resumed run's logs go on at the straight run's step numbers, not one behind or ahead, whether last.ckpt
    was written by the validation at --max-steps within an epoch, by a --trainer.val_check_interval validation
    (Lightning counts that step again on resuming) or at an epoch's end (3 steps an epoch here)."""
    logged = {**RUN, "trainer": {**RUN["trainer"], "log_every_n_steps": 1}}
    if every:
        logged["trainer"]["val_check_interval"] = every

    def loss_steps(csv: Path) -> list[int]:
        rows = [row.split(",") for row in csv.read_text().splitlines()]
        loss, step = rows[0].index("train/loss"), rows[0].index("step")
        return [int(row[step]) for row in rows[1:] if row[loss]]

    swinzoo.finetune(str(tiny), data=str(data), out=str(tmp_path / "straight"), max_steps=5, **logged)
    swinzoo.finetune(str(tiny), data=str(data), out=str(tmp_path / "split"), max_steps=split, **logged)
    swinzoo.finetune(resume=str(tmp_path / "split"), max_steps=5, trainer=logged["trainer"])
    straight = loss_steps(tmp_path / "straight/logs/metrics.csv")
    first = loss_steps(tmp_path / "split/logs/metrics.csv")
    assert first + loss_steps(tmp_path / f"split/logs/resumed-at-{split}/metrics.csv") == straight


def test_the_kept_best_weights_validation_is_not_reported_as_the_last_steps(tiny, data, tmp_path):
    """With --keep best, the best weights are validated again after the fit: that is step 2's weights, not a
    validation at the final step, so the progress lines do not report it as one (the result line says which)."""
    import io

    from rich.console import Console

    out = tmp_path / "run"
    swinzoo.finetune(str(tiny), data=str(data), out=str(out), max_steps=2, **RUN)
    ckpt = torch.load(out / "last.ckpt", weights_only=True)
    (key,) = [k for k in ckpt["callbacks"] if k.startswith("ModelCheckpoint")]
    state = ckpt["callbacks"][key]  # step 2's weights beat anything to come
    state["best_model_score"] = state["kth_value"] = torch.tensor(2.0)
    state["best_k_models"] = {state["best_model_path"]: torch.tensor(2.0)}
    torch.save(ckpt, out / "last.ckpt")
    text = io.StringIO()
    swinzoo.finetune(resume=str(out), max_steps=4, trainer=RUN["trainer"], console=Console(file=text, width=200))
    lines = text.getvalue().splitlines()
    assert sum(line.startswith("validation at step 4") for line in lines) == 1, lines
    assert "(best weights: step 2 of 4)" in lines[-1]


def test_a_resume_whose_epochs_end_before_its_step_is_refused(tiny, data, tmp_path, capsys):
    """--epochs 1 of 1 batch (--trainer.limit_train_batches 1) is a budget of 1 step, below the 2 the run stands at:
    refused as --max-steps 1 is, the run left as it was (Lightning trained one more step, to 3)."""
    out = tmp_path / "run"
    swinzoo.finetune(str(tiny), data=str(data), out=str(out), max_steps=2, **RUN)
    before = (out / "run.json").read_text()
    code, _, err = run_cli(["finetune", "--resume", out, "--epochs", "1", "--trainer.limit_train_batches", "1"],
                           capsys)
    assert code == 2, err
    one_error_line(err, "the run finished at step 2", "1 epoch of 1 step ends at step 1", "--max-steps above 2")
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 2 and step_of(out / "last.ckpt") == 2
    assert (out / "run.json").read_text() == before  # the refused changes are not the plan of the next resume
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["hparams.yaml", "metrics.csv"]


def test_a_resume_whose_epochs_are_shorter_than_the_epoch_in_progress_is_refused(tiny, data, tmp_path, capsys):
    """Stopped 2 batches into an epoch and resumed with epochs of 1 batch: Lightning would train on to the end of the
    loader's pass, one batch, then 2 more epochs (to step 5, past the 3 steps its schedule spans). Refused: more
    batches an epoch, or --max-steps, which bounds the run whatever its epochs."""
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crash"):
        swinzoo.finetune(str(tiny), data=str(data), out=str(out), max_steps=9, ckpt_every=1,
                         **{**RUN, "trainer": {**RUN["trainer"], "callbacks": [CrashAt(2)]}})
    assert step_of(out / "last.ckpt") == 2 and not (out / "metrics.json").exists()
    code, _, err = run_cli(["finetune", "--resume", out, "--epochs", "3", "--trainer.limit_train_batches", "1"],
                           capsys)
    assert code == 2, err
    one_error_line(err, "2 batches into an epoch", "--trainer.limit_train_batches 2 or more", "--max-steps")
    assert step_of(out / "last.ckpt") == 2
    result = swinzoo.finetune(resume=str(out), max_steps=4, trainer={**RUN["trainer"], "limit_train_batches": 1})
    assert result.metrics["global_step"] == 4


def test_a_resume_with_another_total_batch_is_refused(tiny, data, tmp_path):
    """--devices auto on a machine with another device count makes another total batch than the one last.ckpt's
    lr and schedule were scaled for (simulated here by the checkpoint's record): refused before training."""
    out = tmp_path / "run"
    swinzoo.finetune(str(tiny), data=str(data), out=str(out), max_steps=2, **RUN)
    ckpt = torch.load(out / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["total_batch"] = 8  # as if it ran on two devices
    torch.save(ckpt, out / "last.ckpt")
    with pytest.raises(swinzoo.SwinzooError, match=r"trained with total batch 8 .* would train with 4"):
        swinzoo.finetune(resume=str(out), max_steps=4, trainer=RUN["trainer"])
    assert torch.load(out / "last.ckpt", weights_only=True)["global_step"] == 2


def test_run_json_records_the_environment_the_run_resolved_and_a_resume_its_own(tiny, data, tmp_path,
                                                                                 monkeypatch):
    """`--devices auto` and a precision asked for say little: run.json (and the model's provenance) record what
    Lightning resolved them to, the library versions and the machine; a resume on another machine records its own
    beside the run's, which stays as it was."""
    import platform

    import lightning
    import torchmetrics

    from swinzoo.hardware import cpu_model
    from swinzoo.train import environment

    out = tmp_path / "run"
    # fp16 AMP asked for on the CPU: Lightning runs bf16 autocast, and that is what a rerun must know
    swinzoo.finetune(str(tiny), data=str(data), out=str(out), max_steps=2, precision="16-mixed", **RUN)
    env = json.loads((out / "run.json").read_text())["provenance"]["environment"]
    assert {k: env.get(k) for k in ("swinzoo", "torch", "lightning", "torchmetrics", "python")} == {
        "swinzoo": swinzoo.__version__, "torch": torch.__version__, "lightning": lightning.__version__,
        "torchmetrics": torchmetrics.__version__, "python": platform.python_version()}
    assert {k: env.get(k) for k in ("accelerator", "devices", "num_nodes", "world_size", "precision")} == {
        "accelerator": "cpu", "devices": "1", "num_nodes": "1", "world_size": "1", "precision": "bf16-mixed"}
    assert cpu_model() in env["device"]
    # a short string map (the model file's metadata is str -> str), without what a run never imports itself
    assert all(isinstance(v, str) for v in env.values()) and not {"transformers", "timm"} & set(env)
    assert swinzoo.load_model(out).provenance["environment"] == env

    monkeypatch.setattr(environment, "describe_cpu", lambda: "Another CPU (AMX)")  # resumed elsewhere
    swinzoo.finetune(resume=str(out), max_steps=3, trainer={"limit_val_batches": 1})
    provenance = json.loads((out / "run.json").read_text())["provenance"]
    assert provenance["environment"] == env  # the run's own, not overwritten by the resume's
    assert provenance["resumed"][0]["environment"] == {**env, "device": "Another CPU (AMX)"}
    assert swinzoo.load_model(out).provenance["resumed"][0]["environment"]["device"] == "Another CPU (AMX)"


def test_a_run_json_without_an_environment_record_still_resumes(tiny, data, tmp_path):
    """run.json written before the environment was recorded: the resume reads it as before, records its own
    environment, and invents none for the run before it."""
    out = tmp_path / "run"
    swinzoo.finetune(str(tiny), data=str(data), out=str(out), max_steps=2, **RUN)
    plan = json.loads((out / "run.json").read_text())
    del plan["provenance"]["environment"]
    (out / "run.json").write_text(json.dumps(plan, indent=1))
    result = swinzoo.finetune(resume=str(out), max_steps=3, trainer={"limit_val_batches": 1})
    assert result.metrics["global_step"] == 3
    provenance = json.loads((out / "run.json").read_text())["provenance"]
    assert "environment" not in provenance
    assert provenance["resumed"][0]["environment"]["torch"] == torch.__version__


def test_the_environment_counts_every_process_and_names_datasets_only_when_loaded(monkeypatch):
    """Two CPU processes under DDP are a world of 2, known from the Trainer before it launches them (rank zero
    writes run.json then); `datasets` is named when the run loaded it (hf: data), not otherwise."""
    import sys
    from types import SimpleNamespace

    from swinzoo.train.environment import run_environment

    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False)
    monkeypatch.delitem(sys.modules, "datasets", raising=False)
    env = run_environment(trainer)
    assert (env["devices"], env["world_size"], env["strategy"]) == ("2", "2", "DDPStrategy")
    assert "datasets" not in env
    monkeypatch.setitem(sys.modules, "datasets", SimpleNamespace(__version__="9.9.9"))
    assert run_environment(trainer)["datasets"] == "9.9.9"


def test_an_unfinished_run_says_so_and_its_last_checkpoint_evaluates_on_the_runs_data(tiny, data, tmp_path, capsys):
    """A killed (or still training) run folder has run.json and last.ckpt but no model.safetensors yet: `swinzoo
    info/eval RUN` said it had "no config.json" and asked for a timm or transformers folder. It now says the run
    has not finished and how to go on; `swinzoo eval RUN/last.ckpt` reads the run's data from its run.json, as
    `swinzoo eval RUN` does for a finished run."""
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crash"):
        swinzoo.finetune(str(tiny), data=str(data), out=str(out), max_steps=9,
                         **{**RUN, "trainer": {**RUN["trainer"], "callbacks": [CrashAt(4)]}})
    capsys.readouterr()
    for verb in ("info", "eval", "export"):
        args = [verb, out] + (["--to", "timm", "-o", tmp_path / "x"] if verb == "export" else [])
        code, stdout, err = run_cli(args, capsys)
        assert code == 2 and stdout == ""
        one_error_line(err, f"{out} is a fine-tuning run that has not finished", "no model.safetensors yet",
                       f"swinzoo finetune --resume {out}", f"{out / 'last.ckpt'}")
    code, stdout, err = run_cli(["eval", out / "last.ckpt", "--json", "--num-workers", "0"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["n"] == 12 and "read as the run read it" in err
    pre = tmp_path / "pre"
    with pytest.raises(RuntimeError, match="crash"):
        swinzoo.pretrain(str(tiny), data=str(data), out=str(pre), max_steps=9, batch_size=4, num_workers=0,
                         ckpt_every=1, trainer={"limit_val_batches": 1, "callbacks": [CrashAt(2)]})
    capsys.readouterr()
    code, _, err = run_cli(["info", pre], capsys)
    assert code == 2
    one_error_line(err, f"{pre} is a pretraining run that has not finished", f"swinzoo pretrain --resume {pre}")
