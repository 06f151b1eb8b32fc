"""`--trainer.*` options of `swinzoo finetune`: a value given applies (even Lightning's default, over the recipe's),
callbacks whose defaults YAML cannot hold are built, and values Lightning would fail on mid-run are refused first."""

import json

import pytest

import swinzoo
from swinzoo.commands.finetune import parse
from swinzoo.errors import SwinzooError
from tests.conftest import one_error_line, run_cli
from tests.test_finetune import image_folder, tiny  # noqa: F401  (the module-scoped source model)

FAST = ["--batch-size", "4", "--num-workers", "0", "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false"]


@pytest.fixture
def trainers(monkeypatch) -> list:
    """The lightning.Trainer each run of the test builds."""
    import swinzoo.train.trainer

    made, real = [], swinzoo.train.trainer.build_trainer

    def recording(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(swinzoo.train.trainer, "build_trainer", recording)  # what start_trainer calls
    return made


def test_a_trainer_value_given_applies_even_at_lightnings_default(tiny, tmp_path, capsys,  # noqa: F811
                                                                    trainers):
    given = ["--recipe.accumulate_grad_batches", "2", "--trainer.accumulate_grad_batches", "1",
             "--trainer.gradient_clip_val", "null"]
    assert parse(["--from", "swin_n_64", *given]).trainer == {"accumulate_grad_batches": 1, "gradient_clip_val": None}
    assert parse(["--from", "swin_n_64"]).trainer == {}  # the parser's defaults are not given
    (tmp_path / "c.yaml").write_text("from: swin_n_64\ntrainer:\n  gradient_clip_val: null\n")
    assert parse(["--config", str(tmp_path / "c.yaml")]).trainer == {"gradient_clip_val": None}

    # --print-config holds the given ones only (the others as comments), so it replays as given
    code, printed, err = run_cli(["finetune", "--from", "swin_n_64", *given, "--print-config"], capsys)
    assert code == 0, err
    assert "\ntrainer:\n  accumulate_grad_batches: 1\n  gradient_clip_val: null\n#" in printed
    assert "\n#   limit_val_batches: null\n" in printed
    (tmp_path / "p.yaml").write_text(printed)
    assert parse(["--config", str(tmp_path / "p.yaml")]).trainer == {"accumulate_grad_batches": 1,
                                                                "gradient_clip_val": None}
    code, printed, err = run_cli(["finetune", "--from", "swin_n_64", "--print-config"], capsys)
    (tmp_path / "d.yaml").write_text(printed)
    assert code == 0 and "\ntrainer:" not in printed and parse(["--config", str(tmp_path / "d.yaml")]).trainer == {}

    # ... and reaches the Trainer over the recipe's clipping (5.0) and accumulation
    out = tmp_path / "run"
    code, _, err = run_cli(["finetune", "--from", tiny, "--data", image_folder(tmp_path / "data"), "--max-steps", "1",
                            *FAST, *given, "--out", out], capsys)
    assert code == 0, err
    assert trainers[-1].accumulate_grad_batches == 1 and trainers[-1].gradient_clip_val is None
    assert json.loads((out / "run.json").read_text())["recipe"]["clip_grad"] == 5.0


def test_a_callback_whose_defaults_yaml_cannot_hold_is_built(tiny, tmp_path, capsys, trainers):  # noqa: F811
    """StochasticWeightAveraging's device defaults to a torch.device: the spec keeps the init_args given, the class
    fills in the rest, and --print-config and config.yaml stay YAML that replays."""
    from lightning.pytorch.callbacks import StochasticWeightAveraging

    swa = ["--trainer.callbacks+=StochasticWeightAveraging", "--trainer.callbacks.swa_lrs=0.01"]
    flags = ["--from", tiny, "--data", image_folder(tmp_path / "data"), "--max-steps", "2", *FAST, *swa]
    code, _, err = run_cli(["finetune", *flags, "--out", tmp_path / "a"], capsys)  # a share of no epochs
    assert code == 2 and "swa_epoch_start=0.8" in one_error_line(err, "--trainer.callbacks.swa_epoch_start=1")
    assert not (tmp_path / "a").exists()

    # the same where the recipe bounds the run by steps (nano_finetune: 150), no --max-steps given
    bound = ["--from", tiny, "--data", image_folder(tmp_path / "data"), "--recipe", "nano_finetune", *FAST, *swa]
    code, _, err = run_cli(["finetune", *bound, "--out", tmp_path / "r"], capsys)
    assert code == 2 and "swa_epoch_start=0.8" in one_error_line(err, "--trainer.callbacks.swa_epoch_start=1")
    assert not (tmp_path / "r").exists()

    flags += ["--trainer.callbacks.swa_epoch_start=1"]
    code, printed, err = run_cli(["finetune", *flags, "--print-config"], capsys)
    assert code == 0 and "Unable to serialize" not in printed, err
    (tmp_path / "p.yaml").write_text(printed)
    for args in ([*flags, "--out", tmp_path / "a"], ["--config", tmp_path / "p.yaml", "--out", tmp_path / "b"],
                 ["--config", tmp_path / "a" / "config.yaml", "--out", tmp_path / "c"]):
        code, _, err = run_cli(["finetune", *args], capsys)
        assert code == 0, err
        swas = [c for c in trainers[-1].callbacks if isinstance(c, StochasticWeightAveraging)]
        lrs = swas[0]._swa_lrs  # a list, one per parameter group, once training starts
        assert len(swas) == 1 and set(lrs if isinstance(lrs, list) else [lrs]) == {0.01}
        assert swas[0]._swa_epoch_start == 1
    assert "swa_lrs: 0.01" in (tmp_path / "a" / "config.yaml").read_text()


@pytest.mark.parametrize("trainer", [[1], 5, "foo"])
def test_trainer_that_is_not_a_mapping_is_one_error_from_python(trainer, tmp_path):
    with pytest.raises(SwinzooError) as e:
        swinzoo.finetune("swin_n_64", max_steps=2, trainer=trainer, out=str(tmp_path / "run"))
    assert str(e.value) == ("trainer: give a mapping of Trainer options (NAME: VALUE, or --trainer.NAME VALUE on the "
                            f"command line), not {trainer!r}")
    assert not (tmp_path / "run").exists()


def test_a_config_listing_every_trainer_argument_keeps_the_old_meaning(tmp_path):
    """--print-config files of earlier versions wrote every Trainer argument at its default: replayed, those
    defaults are not taken as given (they would turn the recipe's clipping off); the values that differ are."""
    from swinzoo.commands.finetune import build_parser

    defaults = build_parser().get_defaults().as_dict()["trainer"]
    dump = {k: v for k, v in defaults.items() if k not in ("callbacks", "logger", "plugins", "profiler")}
    dump["log_every_n_steps"] = 7
    import yaml

    (tmp_path / "old.yaml").write_text(yaml.safe_dump({"from": "swin_n_64", "trainer": dump}))
    assert parse(["--config", str(tmp_path / "old.yaml")]).trainer == {"log_every_n_steps": 7}
