"""Errors reached through the Python API name its keyword arguments too: the CLI and the API share the checks, whose
messages name flags (`--trust-checkpoint`), so a Python caller also gets "(in Python: --trust-checkpoint is
trust_checkpoint=True)". The CLI's lines stay as they are."""

import pytest
import torch

import swinzoo
from swinzoo.errors import SwinzooError
from tests.conftest import run_cli


class TrainingOptions:
    lr = 1


@pytest.fixture
def pickled(tmp_path):
    """A training checkpoint holding an object of the user's own class besides the tensors."""
    path = tmp_path / "trained.pth"
    torch.save({"model": swinzoo.create_model("swin_n_64").state_dict(), "args": TrainingOptions()}, path)
    return path


def test_a_flag_in_an_api_error_gets_its_keyword(pickled):
    with pytest.raises(SwinzooError) as raised:
        swinzoo.load_model(pickled)
    message = str(raised.value)
    assert "pass --trust-checkpoint" in message
    assert message.endswith("(in Python: --trust-checkpoint is trust_checkpoint=True)"), message
    model = swinzoo.load_model(pickled, trust_checkpoint=True, arch="swin_n_64")  # read_checkpoint's keywords
    assert model.config.num_classes == 10


def test_values_and_trainer_and_recipe_keys(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SwinzooError, match=r"\(in Python: --out is out=\.\.\., --resume is resume=\.\.\.\)$"):
        swinzoo.finetune("swin_n_64", data="shapes", max_steps=1, out=out)
    with pytest.raises(SwinzooError, match=r"\(in Python: --trainer\.bogus is trainer=\{'bogus': \.\.\.\}\)$"):
        swinzoo.finetune("swin_n_64", data="shapes", max_steps=1, out=tmp_path / "a", trainer={"bogus": 1})
    with pytest.raises(SwinzooError, match=r"\(in Python: --recipe\.bogus is recipe_overrides=\{'bogus': \.\.\.\}\)$"):
        swinzoo.finetune("swin_n_64", data="shapes", max_steps=1, out=tmp_path / "b", recipe_overrides={"bogus": 1})
    existing = tmp_path / "m.safetensors"
    existing.write_text("mine")
    with pytest.raises(SwinzooError, match=r"pass --overwrite .*\(in Python: --overwrite is overwrite=True\)$"):
        swinzoo.convert("swin_n_64", existing)


def test_a_check_deep_inside_is_spelled_once_for_the_function_called(pickled, tmp_path):
    """finetune reads its source through load functions that are public too: the note is finetune's, once."""
    with pytest.raises(SwinzooError) as raised:
        swinzoo.finetune(str(pickled), data="shapes", max_steps=1, out=tmp_path / "run")
    message = str(raised.value)
    assert message.count("(in Python:") == 1 and message.endswith("--trust-checkpoint is trust_checkpoint=True)")


def test_the_cli_line_is_unchanged(pickled, tmp_path, capsys):
    code, _, err = run_cli(["convert", pickled, "-o", tmp_path / "m.safetensors"], capsys)
    assert code == 2 and "pass --trust-checkpoint" in err and "in Python" not in err, err


def test_the_lightning_modules_from_pretrained_spell_them_too(pickled):
    from swinzoo.train.module import SwinClassifier

    with pytest.raises(SwinzooError, match=r"\(in Python: --trust-checkpoint is trust_checkpoint=True\)$"):
        SwinClassifier.from_pretrained(pickled, num_classes=3)
