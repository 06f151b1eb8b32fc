"""`swinzoo finetune` as a whole-run config: `--print-config` -> `--config` and OUT/config.yaml replay a run to the
same metrics and weights; Lightning callbacks and loggers as objects beside swinzoo's own; the best validated
weights kept; the recipe chosen from source and target; progress lines when piped; Lightning's chatter silenced."""

import csv
import importlib.util
import json
import logging

import pytest
import torch
from safetensors.torch import load_file

import swinzoo
from swinzoo.train.recipes import PLAIN_RECIPE, choose_recipe, packaged_recipes
from tests.conftest import run_cli
from tests.test_finetune import image_folder, tiny  # noqa: F401  (the module-scoped source model)

FAST = ["--batch-size", "4", "--num-workers", "0", "--trainer.limit_val_batches", "2"]


def finetune(capsys, *args) -> str:
    code, out, err = run_cli(["finetune", *map(str, args)], capsys)
    assert code == 0, err
    return out


def weights(run) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


def test_print_config_and_run_config_replay_the_run(tiny, tmp_path, capsys):  # noqa: F811
    data = image_folder(tmp_path / "data")
    flags = ["--from", tiny, "--res", "64", "--data", data, "--max-steps", "4", *FAST]
    finetune(capsys, *flags, "--out", tmp_path / "a")
    printed = finetune(capsys, *flags, "--print-config")
    assert "from: " in printed and "max_steps: 4" in printed and "limit_val_batches: 2" in printed
    (tmp_path / "run.yaml").write_text(printed)
    finetune(capsys, "--config", tmp_path / "run.yaml", "--out", tmp_path / "b")
    saved = (tmp_path / "a" / "config.yaml").read_text()
    assert "\nrecipe:\n  name: finetune\n" in saved and "\nres: 64\nwindow: 8\n" in saved  # resolved, in full
    finetune(capsys, "--config", tmp_path / "a" / "config.yaml", "--out", tmp_path / "c")
    finetune(capsys, "--config", tmp_path / "a" / "config.yaml", "--seed", "1", "--out", tmp_path / "d")

    metrics = {k: json.loads((tmp_path / k / "metrics.json").read_text()) for k in "abcd"}
    assert metrics["a"] == metrics["b"] == metrics["c"] and metrics["a"]["global_step"] == 4
    a, b, c, d = (weights(tmp_path / k) for k in "abcd")
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    assert not all(torch.equal(a[k], d[k]) for k in a)  # a flag after --config overrides it: another seed


def test_recipe_keys_change_the_named_or_chosen_recipe(tiny, tmp_path, capsys):  # noqa: F811
    """--recipe.KEY VALUE sets one key over the recipe the run would use without it; it is recorded, and the run
    replays from --print-config and from its config.yaml."""
    data = image_folder(tmp_path / "data")
    flags = ["--from", tiny, "--data", data, "--max-steps", "2", *FAST, "--recipe", "nano_finetune",
             "--recipe.base_lr", "0.5"]
    stdout = finetune(capsys, *flags, "--out", tmp_path / "a")
    assert "recipe nano_finetune (with base_lr 0.5 set over it): given" in stdout
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    recipe = run["recipe"]
    assert recipe["name"] == "nano_finetune" and recipe["base_lr"] == 0.5
    assert recipe["mixup"] == recipe["hflip"] == 0.0 and recipe["epochs"] == 30  # nano_finetune's, not defaults
    assert run["provenance"]["recipe_overrides"] == {"base_lr": 0.5}
    assert "\nrecipe_overrides:\n  base_lr: 0.5\n" in (tmp_path / "a" / "config.yaml").read_text()
    printed = finetune(capsys, *flags, "--print-config")
    assert "\nrecipe: nano_finetune\nrecipe_overrides:\n  base_lr: 0.5\n" in printed
    (tmp_path / "run.yaml").write_text(printed)
    finetune(capsys, "--config", tmp_path / "run.yaml", "--out", tmp_path / "b")
    finetune(capsys, "--config", tmp_path / "a" / "config.yaml", "--out", tmp_path / "c")
    metrics = {k: json.loads((tmp_path / k / "metrics.json").read_text()) for k in "abc"}
    assert metrics["a"] == metrics["b"] == metrics["c"]
    a, b, c = (weights(tmp_path / k) for k in "abc")
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    for k in "bc":
        assert json.loads((tmp_path / k / "run.json").read_text())["recipe"] == recipe

    # no --recipe: over the chosen one, also when a partial mapping is the recipe
    stdout = finetune(capsys, "--from", tiny, "--data", data, "--max-steps", "2", *FAST, "--recipe.mixup", "0",
                      "--recipe", "{cutmix: 0.5}", "--out", tmp_path / "d")
    assert f"recipe {PLAIN_RECIPE} (with cutmix 0.5, mixup 0.0 set over it): a plain fine-tune" in stdout
    chosen = json.loads((tmp_path / "d" / "run.json").read_text())["recipe"]
    assert chosen["name"] == PLAIN_RECIPE and chosen["mixup"] == 0.0 and chosen["cutmix"] == 0.5


def test_callbacks_and_loggers_join_swinzoos_own(tiny, tmp_path, capsys):  # noqa: F811
    data = image_folder(tmp_path / "data")
    out = tmp_path / "run"
    finetune(capsys, "--from", tiny, "--data", data, "--max-steps", "3", *FAST, "--out", out, "--logger", "tensorboard",
             "--trainer.callbacks+=LearningRateMonitor", "--trainer.callbacks.logging_interval=step")
    with open(out / "logs" / "metrics.csv") as f:
        header = next(csv.reader(f))
    # the user's callback logged into swinzoo's CSV log
    assert any(h.startswith("lr-AdamW") for h in header) and "val/top1" in header
    assert list((out / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "last.ckpt").is_file()  # swinzoo's checkpointing still runs: --resume works
    saved = (out / "config.yaml").read_text()
    assert "class_path: lightning.pytorch.callbacks.LearningRateMonitor" in saved and "logger: tensorboard" in saved

    yaml_run = tmp_path / "early.yaml"
    yaml_run.write_text(f"from: {tiny}\ndata: {data}\nepochs: 4\nbatch_size: 4\nnum_workers: 0\ntrainer:\n"
                        "  callbacks:\n  - class_path: EarlyStopping\n    init_args: {monitor: val/top1, mode: max, "
                        "patience: 1, stopping_threshold: 0.0}\n")
    finetune(capsys, "--config", yaml_run, "--out", tmp_path / "early")
    steps_per_epoch = 3  # 12 training images in batches of 4
    # the threshold stops the run at the first validation: one epoch instead of four
    assert json.loads((tmp_path / "early" / "metrics.json").read_text())["global_step"] == steps_per_epoch


def test_early_stopping_on_val_top1_when_max_steps_ends_inside_an_epoch(tiny, tmp_path, capsys):  # noqa: F811
    """The --help example: 2 steps of a 3-step epoch. The run validates at its last step inside fit, so
    EarlyStopping finds val/top1 at the epoch's end instead of failing and taking the run folder with it."""
    data = image_folder(tmp_path / "data")
    out = tmp_path / "run"
    code, _, err = run_cli(["finetune", "--from", tiny, "--data", data, "--max-steps", "2", *FAST, "--out", out,
                            "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=val/top1",
                            "--trainer.callbacks.mode=max"], capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and (out / "last.ckpt").is_file()
    with open(out / "logs" / "metrics.csv") as f:
        logged = [float(r["val/top1"]) for r in csv.DictReader(f) if r.get("val/top1")]
    assert logged == [metrics["top1"]]  # the last step's validation, in the log and in metrics.json


def test_validation_off_during_fit_still_scores_the_final_weights(tiny, tmp_path, capsys):  # noqa: F811
    """--trainer.limit_val_batches 0 skips the fit's validations (for speed); metrics.json still gets the final
    weights' figures from one whole validation after fit instead of an IndexError after training."""
    data = image_folder(tmp_path / "data")
    out = tmp_path / "run"
    code, _, err = run_cli(["finetune", "--from", tiny, "--data", data, "--max-steps", "2", *FAST, "--out", out,
                            "--trainer.limit_val_batches", "0"], capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and metrics["n"] == 12  # every val image (2 classes x 6), not 2 batches
    again = swinzoo.evaluate(str(out / "model.safetensors"), str(data), batch_size=4, num_workers=0)
    assert metrics["top1"] == pytest.approx(again["top1"])  # the saved weights' figure


def test_keeps_the_best_validated_weights(tiny, tmp_path, capsys):  # noqa: F811
    data = image_folder(tmp_path / "data")
    out = tmp_path / "best"
    whole_val = ["--batch-size", "4", "--num-workers", "0"]  # every val image, as `evaluate` below sees them
    finetune(capsys, "--from", tiny, "--data", data, "--epochs", "4", "--lr", "3e-3", *whole_val, "--out", out)
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "logs" / "metrics.csv") as f:
        rows = [(int(r["step"]), float(r["val/top1"])) for r in csv.DictReader(f) if r.get("val/top1")]
    seen = [top1 for _, top1 in rows]
    assert len(seen) == 4  # four epochs; the validations after fit are not logged
    assert metrics["top1"] == pytest.approx(max(seen)) and (out / "best.ckpt").is_file()
    assert metrics["weights"] in ("best", "last") and 0 < metrics["weights_step"] <= metrics["global_step"] == 12
    again = swinzoo.evaluate(str(out / "model.safetensors"), str(data), batch_size=4, num_workers=0)
    assert again["top1"] == pytest.approx(metrics["top1"])  # the file holds the weights the metrics describe

    last = tmp_path / "last"
    finetune(capsys, "--from", tiny, "--data", data, "--epochs", "4", "--lr", "3e-3", *whole_val, "--out", last,
             "--keep", "last")
    kept = json.loads((last / "metrics.json").read_text())
    assert kept["weights"] == "last" and kept["weights_step"] == 12 and not (last / "best.ckpt").exists()
    last_weights = rows[-1][1]  # the last epoch's validation: of the last weights
    assert kept["top1"] == pytest.approx(last_weights)  # the same run, so the same last weights


def test_recipe_follows_source_and_target():
    assert choose_recipe(1, 224, 384, 1000)[0] == "swin_224to384"
    assert choose_recipe(2, 192, 256, 21841)[0] == "swinv2_192to256"
    assert choose_recipe(2, 192, 384, 21841)[0] == "swinv2_192to384"
    assert choose_recipe(1, 224, 224, 21841)[0] == "swin_22kto1k"
    assert choose_recipe(1, 224, 224, 1000) == (PLAIN_RECIPE, "a plain fine-tune at the source's 224 px")
    assert choose_recipe(1, 224, 256, 1000)[0] == PLAIN_RECIPE
    assert choose_recipe(1, 64, 128, 10, "nano_finetune")[0] == "nano_finetune"  # what the source names wins
    assert PLAIN_RECIPE in packaged_recipes()


def test_defaults_piped_progress_and_quiet_output(tiny, tmp_path, capsys, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)  # what Lightning logs reaches the terminal at INFO (its own handler)
    data = image_folder(tmp_path / "data")
    out = tmp_path / "run"
    code, stdout, err = run_cli(["finetune", "--from", str(tiny), "--data", str(data), "--max-steps", "2", *FAST,
                                 "--out", str(out)], capsys)
    assert code == 0, err
    # no --res: the source's resolution, with the plain fine-tune recipe, and why
    assert swinzoo.load_model(out).config.img_size == 32
    assert f"recipe {PLAIN_RECIPE}: a plain fine-tune at the source's 32 px" in stdout
    # not a terminal: progress as lines, not a bar drawn at the end
    assert "training from step 0 to 2" in stdout and "step 2/2" in stdout and "validation at step 2" in stdout
    for noise in ("Tip:", "GPU available", "LeafSpec", "exists and is not empty", "LOCAL_RANK"):
        assert noise not in stdout + err, noise
    assert [r.getMessage() for r in caplog.records if r.name.startswith("lightning")] == []


def test_recipes_command_lists_every_recipe(capsys):
    code, out, _ = run_cli(["recipes"], capsys)
    assert code == 0
    for name in packaged_recipes():
        assert f"\n{name} " in "\n" + out
    code, out, _ = run_cli(["recipes", "swin_224to384"], capsys)
    assert code == 0 and "res: 384" in out and "window: 12" in out


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_logger_without_its_package_is_one_line(tiny, tmp_path, capsys):  # noqa: F811
    data = image_folder(tmp_path / "data")
    code, _, err = run_cli(["finetune", "--from", str(tiny), "--data", str(data), "--logger", "wandb",
                            "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and err.count("\n") == 1 and "pip install wandb" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("first", ["rich.console", "lightning"])
def test_a_whole_number_of_batches_stays_a_count(first):
    """`--trainer.limit_val_batches 1` is one batch, `1.0` all of them. typing caches `Optional[Union[...]]` by
    equality, which ignores the order: imported first, rich's `Union[float, int]` made Lightning's annotations try
    float first, and 1 became 1.0 (every batch)."""
    import subprocess
    import sys

    code = (f"import {first}\nfrom swinzoo.commands.finetune import parse\n"
            "t = parse(['--from', 'swin_n_64', '--trainer.limit_val_batches', '1', '--trainer.limit_train_batches',"
            " '0.5', '--trainer.val_check_interval', '2', '--trainer.overfit_batches', '1.0',"
            " '--trainer.gradient_clip_val', '1']).trainer\nprint(repr(sorted(t.items())))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == repr([("gradient_clip_val", 1), ("limit_train_batches", 0.5),
                                        ("limit_val_batches", 1), ("overfit_batches", 1.0),
                                        ("val_check_interval", 2)])
