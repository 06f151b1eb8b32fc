"""Which data `swinzoo eval` reads: a fine-tune's own, as it read it (run.json or the model's provenance), so a
validation split carved from `hf:` train rows is the rows the run held out, never training rows."""

import json

import pytest

from swinzoo.cli import cli_main
from tests.conftest import run_cli
from tests.test_hf_data import offline, table, write  # noqa: F401 (offline: the autouse fixture)

datasets = pytest.importorskip("datasets")


@pytest.fixture
def run(tmp_path, capsys):
    """A 2-step fine-tune on an hf: dataset without a validation split, a quarter of train held out, seed 3."""
    data = write(tmp_path / "ds", {"default": {"train": table([i % 3 for i in range(24)])}})
    out = tmp_path / "run"
    assert cli_main(["finetune", "--from", "swin_n_64", "--data", data, "--val-fraction", "0.25", "--split-seed", "3",
                     "--max-steps", "2", "--batch-size", "4", "--res", "64", "--num-workers", "0",
                     "--precision", "32-true", "--out", str(out)]) == 0
    capsys.readouterr()
    return data, out, json.loads((out / "metrics.json").read_text())


def eval_json(capsys, *args):
    code, stdout, err = run_cli(["eval", *map(str, args), "--num-workers", "0", "--json"], capsys)
    assert code == 0, err
    return json.loads(stdout), err


def test_eval_of_a_run_reads_the_rows_it_held_out(run, capsys):
    data, out, metrics = run
    assert metrics["n"] == 6
    for args in ([out], [out, "--data", data], [out / "model.safetensors", "--data", data],
                 [out / "model.safetensors"]):
        result, err = eval_json(capsys, *args)
        assert (result["n"], result["top1"]) == (6, metrics["top1"]), args
        assert "--val-fraction 0.25, --split-seed 3" in err and "(6 rows)" in err, err
    # the flags state the same explicitly, or change it
    result, _ = eval_json(capsys, out, "--data", data, "--val-fraction", "0.25", "--split-seed", "3")
    assert result == eval_json(capsys, out)[0]
    assert eval_json(capsys, out, "--val-fraction", "0.5")[0]["n"] == 12


def test_eval_flags_for_hf_data(tmp_path, capsys):
    data = write(tmp_path / "ds", {"default": {"train": table([i % 3 for i in range(24)], classes=None)}})
    code, _, err = run_cli(["eval", "swin_n_64", "--data", data, "--val-fraction", "0.25", "--num-workers", "0"],
                           capsys)
    assert code == 2 and "the model has 10 classes but" in err  # the carved rows were read, then refused
    code, _, err = run_cli(["eval", "swin_n_64", "--data", "shapes", "--val-split", "test"], capsys)
    assert code == 2 and err.strip() == "error: --val-split only applies to hf:NAME data; drop it for --data shapes"
    code, _, err = run_cli(["eval", "swin_n_64", "--data", data, "--val-fraction", "2"], capsys)
    assert code == 2 and "--val-fraction must be a number in (0, 1)" in err
