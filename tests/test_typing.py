"""Type checkers (mypy, pyright) read swinzoo's annotations in user code: the package says so (py.typed)."""

from pathlib import Path

import pytest

import swinzoo

ROOT = Path(__file__).resolve().parents[1]


def test_py_typed_marker_ships():
    # without it, mypy skips swinzoo ("missing library stubs or py.typed marker") and every result is Any
    assert (Path(swinzoo.__file__).parent / "py.typed").is_file()
    tomllib = pytest.importorskip("tomllib")
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data.get("swinzoo", []), "py.typed must be package data, or the wheel lacks it"
