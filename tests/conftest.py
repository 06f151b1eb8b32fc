import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]  # the user documentation the docs tests read
V1 = "swin_v1_tiny_w7_224"
V2 = "swin_v2_tiny_w8_256"


def fixture_pth(name: str) -> Path:
    return FIXTURES / f"{name}.pth"


def expected(name: str) -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / f"{name}.expected.safetensors")


@pytest.fixture(autouse=True)
def _default_dtype():
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.fixture(autouse=True)
def _swinzoo_cache(tmp_path_factory, monkeypatch):
    """Each test its own swinzoo cache (records of passed image checks), never the user's ~/.cache."""
    monkeypatch.setenv("SWINZOO_CACHE", str(tmp_path_factory.mktemp("swinzoo_cache")))


def randomized(model: torch.nn.Module, scale: float = 0.2) -> torch.nn.Module:
    """Non-trivial weights everywhere (V2 starts its post-norms at zero, which would hide the attention)."""
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * scale + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return model


def read_at_import(code: str, variable: str, value: str) -> tuple[list[str], str]:
    """`python -c code` in a fresh process with the environment variable set (swinzoo's modules read theirs at
    import): the words it printed, and its stderr."""
    env = {**os.environ, variable: value}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.split(), done.stderr


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run the CLI in process; returns (exit code, stdout, stderr)."""
    from swinzoo.cli import cli_main

    code = cli_main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(err: str, *needles: str) -> str:
    """The one `error: ...` line a refused command prints, holding each of `needles`."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def hub_home(tmp_path, monkeypatch):
    """An empty Hugging Face home (HF_HOME) in tmp_path, offline: what the Hub tests read instead of the network."""
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home
