"""`swinzoo push` without a token names the login command the installed huggingface_hub has."""

from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import constants

import swinzoo

from .conftest import run_cli


@pytest.fixture
def no_token(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "SWINZOO_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    # a token saved on this machine must not count (huggingface_hub fixes these paths at import)
    for attr in ("HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH"):
        if hasattr(constants, attr):
            monkeypatch.setattr(constants, attr, str(tmp_path / attr.lower()))


def test_push_without_token_names_the_installed_login_command(no_token, capsys):
    model = Path(swinzoo.__file__).parent / "data" / "swin_n_64.safetensors"
    code, _, err = run_cli(["push", model, "--repo", "me/x"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    if tuple(int(p) for p in huggingface_hub.__version__.split(".")[:2]) >= (0, 34):  # what has `hf auth`
        assert "`hf auth login`" in err and "huggingface-cli" not in err, err
    else:
        assert "`huggingface-cli login`" in err, err


@pytest.mark.parametrize(("version", "command"), [
    ("0.23.0", "huggingface-cli login"), ("0.33.4", "huggingface-cli login"), ("0.34.0", "hf auth login"),
    ("1.1.2", "hf auth login"), ("1.0.0.dev0", "hf auth login"), ("dev", "hf auth login")])
def test_login_command_follows_the_version(monkeypatch, version, command):
    from swinzoo.upload import login_command

    monkeypatch.setattr(huggingface_hub, "__version__", version)
    assert login_command() == command
