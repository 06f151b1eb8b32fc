"""Bad input to finetune / eval: one-line errors, exit code 2, and no output folder or model left behind."""

import io

import pytest
from rich.console import Console

import swinzoo
from swinzoo.config import SwinConfig
from tests.conftest import run_cli
from tests.test_finetune import image_folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "tiny.safetensors"
    cfg = SwinConfig(img_size=32, embed_dim=8, depths=(1, 1), num_heads=(1, 2), window_size=4,
                     pretrained_window_sizes=(0, 0), num_classes=3)
    swinzoo.save_model(swinzoo.SwinTransformer(cfg), path)
    return path


def finetune_fails(tiny, tmp_path, capsys, *extra) -> str:
    out = tmp_path / "out"
    code, stdout, err = run_cli(["finetune", "--from", tiny, "--max-steps", "1", "--out", out, "--batch-size", "2",
                                 "--num-workers", "0", *extra], capsys)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not out.exists()
    return err


def test_missing_data_folder(tiny, tmp_path, capsys):
    err = finetune_fails(tiny, tmp_path, capsys, "--data", tmp_path / "nope")
    assert "no such folder" in err and "shapes" in err


def test_empty_data_folder(tiny, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "has no train/ or val/ folder" in finetune_fails(tiny, tmp_path, capsys, "--data", tmp_path / "empty")
    (tmp_path / "empty2" / "train").mkdir(parents=True)
    assert "has no class folders" in finetune_fails(tiny, tmp_path, capsys, "--data", tmp_path / "empty2")


def test_class_folder_without_images(tiny, tmp_path, capsys):
    data = image_folder(tmp_path / "data", per_class=2)
    (data / "train" / "c").mkdir()
    err = finetune_fails(tiny, tmp_path, capsys, "--data", data)
    assert "class folder" in err and "train/c has no images" in err


def test_unreadable_image_stops_with_its_name(tiny, tmp_path, capsys):
    data = image_folder(tmp_path / "data", per_class=2)
    (data / "val" / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    err = finetune_fails(tiny, tmp_path, capsys, "--data", data)
    assert "val/b/broken.png is not a readable image" in err


def test_unknown_recipe_key(tiny, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 1\nwarmup: 3\n")
    err = finetune_fails(tiny, tmp_path, capsys, "--data", "shapes", "--recipe", recipe)
    assert "unknown recipe key 'warmup'; valid keys:" in err and "warmup_epochs" in err


def test_resolution_the_window_cannot_tile(tiny, tmp_path, capsys):
    err = finetune_fails(tiny, tmp_path, capsys, "--data", "shapes", "--res", "40", "--window", "4")
    assert "not a multiple of window 4" in err and "use --res" in err


def test_unknown_trainer_option_and_missing_data(tiny, tmp_path, capsys):
    err = finetune_fails(tiny, tmp_path, capsys, "--data", "shapes", "--trainer", "max_epoch=3")
    assert "not a Trainer option" in err and "max_epochs" in err
    assert "--data is required" in finetune_fails(tiny, tmp_path, capsys)


def test_eval_class_count_mismatch(tiny, tmp_path, capsys):
    code, _, err = run_cli(["eval", tiny, "--data", "shapes"], capsys)
    assert code == 2 and "the model has 3 classes but shapes has 10" in err


def test_resume_needs_a_run(tmp_path, capsys):
    code, _, err = run_cli(["finetune", "--resume", tmp_path], capsys)
    assert code == 2 and "needs" in err and "last.ckpt" in err


def test_callback_monitoring_a_metric_the_run_never_logs(tiny, tmp_path, capsys):
    data = image_folder(tmp_path / "data", per_class=2)
    err = finetune_fails(tiny, tmp_path, capsys, "--data", data, "--trainer.callbacks+=EarlyStopping",
                         "--trainer.callbacks.monitor=val/acc")
    assert "EarlyStopping monitors 'val/acc', which the run never logs; monitor one of val/top1" in err
    err = finetune_fails(tiny, tmp_path, capsys, "--data", data, "--trainer.limit_val_batches", "0",
                         "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.monitor=val/top1")
    assert "--trainer.limit_val_batches 0 turns validation off" in err


def test_recipe_key_that_is_not_one(tiny, tmp_path, capsys):
    data = image_folder(tmp_path / "data", per_class=2)
    err = finetune_fails(tiny, tmp_path, capsys, "--data", data, "--recipe.warmup", "3")
    assert "--recipe.warmup: unknown recipe key 'warmup'; valid keys:" in err and "warmup_epochs" in err
    err = finetune_fails(tiny, tmp_path, capsys, "--data", data, "--recipe.base_lr", "fast")
    assert "--recipe.base_lr: base_lr='fast' is invalid" in err


def test_eval_of_one_class(tmp_path, capsys):
    """One class folder among a model's classes evaluates (labels matched by name); a model of one class cannot."""
    data = image_folder(tmp_path / "data", classes=("dots",), per_class=3)
    code, stdout, err = run_cli(["eval", "swin_n_64", "--data", data, "--num-workers", "0", "--json"], capsys)
    assert code == 0 and '"n": 3' in stdout, err
    one = tmp_path / "one.safetensors"
    swinzoo.save_model(swinzoo.create_model("swin_n_64", num_classes=1), one)
    code, _, err = run_cli(["eval", one, "--data", data], capsys)
    assert code == 2 and err.count("\n") == 1 and "has 1 class" in err and "2 or more" in err, err


@pytest.mark.parametrize("verb", ["finetune", "pretrain"])
def test_print_config_refuses_a_recipe_key_as_a_run_does(verb, capsys):
    from tests.conftest import one_error_line

    for flags, needle in ((["--recipe.nope", "1"], "--recipe.nope: unknown recipe key 'nope'; valid keys:"),
                          (["--recipe.base_lr", "fast"], "--recipe.base_lr: base_lr='fast' is invalid")):
        code, out, err = run_cli([verb, "--from", "swin_n_64", *flags, "--print-config"], capsys)
        assert code == 2 and out == "", out
        one_error_line(err, needle)


def test_an_unreadable_class_folder_is_named_as_such(tiny, tmp_path, capsys, monkeypatch):
    """A class folder this user may not list said "has no images", sending them to look for images that are
    there. os.scandir refuses it here, as chmod would for anyone but root."""
    import os

    data = image_folder(tmp_path / "data", per_class=2)
    locked, real_scandir = str(data / "val" / "b"), os.scandir

    def scandir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    err = finetune_fails(tiny, tmp_path, capsys, "--data", data)
    assert err.startswith(f"error: {locked}: permission denied; give a path this user can read"), err
    code, _, err = run_cli(["eval", tiny, "--data", data, "--num-workers", "0"], capsys)
    assert code == 2 and err.startswith(f"error: {locked}: permission denied"), err


def test_imbalanced_training_classes_get_a_note(tmp_path, capsys):
    """A class with 3 images beside one with 40: top-1 then mostly measures the big class. The plan says so, and
    where the per-class figures are; balanced data, or a budget carved from it, gets no note."""
    from PIL import Image

    from swinzoo.train.data import SwinDataModule
    from swinzoo.train.hf_data import DataOptions

    for split, sizes in (("train", {"big": 40, "small": 3}), ("val", {"big": 2, "small": 2})):
        for name, count in sizes.items():
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (8, 8), (i, 0, 0) if name == "big" else (0, i, 0)).save(
                    tmp_path / split / name / f"{i}.png")
    console = Console(file=io.StringIO(), width=300)
    SwinDataModule(str(tmp_path), 32, 2, console=console).check()
    lines = console.file.getvalue().splitlines()
    assert lines[-1] == ("note: the training classes hold 3 ('small') to 40 images each; top-1 mostly measures the "
                         "large classes: `swinzoo eval RUN --per-class` gives each its own")
    console = Console(file=io.StringIO(), width=300)  # a budget of the training images: counted as carved
    SwinDataModule(str(tmp_path), 32, 2, data_options=DataOptions(train_fraction=0.5), console=console).check()
    assert "hold 2 ('small') to 20 images each" in console.file.getvalue()
    console = Console(file=io.StringIO(), width=300)
    SwinDataModule("shapes", 32, 2, console=console).check()
    assert "note" not in console.file.getvalue()
