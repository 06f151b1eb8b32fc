"""swinzoo as a library in one long process (a notebook, a sweep script, a service): what a call leaves behind for
the caller's code and for the next call."""

import os
import random

import numpy as np
import pytest
import torch

import swinzoo
from swinzoo.cli import cli_main
from swinzoo.train.options import OUT_ENV
from tests.test_finetune import image_folder, tiny  # noqa: F401  (the module-scoped source model)
from tests.test_pretrain import image_files

QUIET = {"num_workers": 0, "trainer": {"limit_val_batches": 1, "enable_model_summary": False,
                                       "enable_progress_bar": False}}


def caller_state() -> tuple:
    """The caller's global RNG states and the environment variables a run may set for its DDP processes."""
    env = {k: os.environ.get(k) for k in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", OUT_ENV)}
    return torch.get_rng_state(), np.random.get_state(), random.getstate(), env


def assert_same_state(before: tuple, after: tuple) -> None:
    assert torch.equal(before[0], after[0]), "torch's global RNG was changed"
    (kind, keys, *rest), (kind_after, keys_after, *rest_after) = before[1], after[1]
    assert kind == kind_after and np.array_equal(keys, keys_after) and rest == rest_after, "numpy's RNG was changed"
    assert before[2] == after[2], "Python's random was changed"
    assert before[3] == after[3]


@pytest.mark.parametrize("user_seed", [123, 456])
def test_finetune_leaves_the_callers_rngs_and_environment_as_they_were(user_seed, tiny, tmp_path):  # noqa: F811
    """A random search draws each trial's values from the global RNGs: a run reseeding them with its recipe's seed
    would give every trial after the first the same values."""
    data = image_folder(tmp_path / "data")
    torch.manual_seed(user_seed), np.random.seed(user_seed), random.seed(user_seed)
    before = caller_state()
    swinzoo.finetune(str(tiny), data=str(data), recipe="nano_finetune", max_steps=1, batch_size=4,
                     out=str(tmp_path / "run"), **QUIET)
    assert_same_state(before, caller_state())


def test_pretrain_leaves_the_callers_rngs_and_environment_as_they_were(tmp_path):
    data = image_files(tmp_path / "images", 8)
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    before = caller_state()
    swinzoo.pretrain("swin_n_64", data=str(data), max_steps=1, batch_size=4, out=str(tmp_path / "run"), **QUIET)
    assert_same_state(before, caller_state())



def test_help_and_version_return_from_cli_main(capsys):
    """In process (a script that runs commands one after another), --help is an exit code as finetune's is, not a
    SystemExit that ends the caller."""
    assert cli_main(["--help"]) == 0 and "COMMAND" in capsys.readouterr().out
    assert cli_main(["predict", "--help"]) == 0 and "--topk" in capsys.readouterr().out
    assert cli_main(["--version"]) == 0 and swinzoo.__version__ in capsys.readouterr().out
    assert cli_main(["finetune", "--help"]) == 0


def test_overlapping_predictions_leave_a_training_model_training_and_predict_in_eval():
    """predict() / evaluate() put a caller's model in eval mode and back. Two calls overlapping on one model (two
    threads): the first to end put the model back in train mode while the other still predicted, and the last to
    end restored the eval mode it had found, leaving a training model in eval."""
    from swinzoo.evaluation import eval_mode

    net = swinzoo.create_model("swin_n_64").train()
    first = eval_mode(net)
    second = eval_mode(net)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not any(m.training for m in net.modules())  # the second call is still predicting
    second.__exit__(None, None, None)
    assert all(m.training for m in net.modules())
