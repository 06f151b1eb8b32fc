"""`python -m swinzoo.converters`: one-line errors with the CLI's exit codes, and no existing OUT replaced unasked."""

from pathlib import Path

import pytest

import swinzoo
from swinzoo.converters.__main__ import main

from .conftest import one_error_line

NANO = Path(swinzoo.__file__).parent / "data" / "swin_n_64.safetensors"


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(("flags", "src"), [([], "nope.pth"), (["--export"], "nope.safetensors")])
def test_missing_source_is_one_line(tmp_path, capsys, flags, src):
    code, _, err = run(["timm", *flags, tmp_path / src, tmp_path / "out"], capsys)
    assert code == 2
    one_error_line(err, src, "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_bad_format_is_one_line(tmp_path, capsys):
    code, _, err = run(["bogus", NANO, tmp_path / "x"], capsys)
    assert code == 2
    one_error_line(err, "bogus", "--help")


def test_existing_file_needs_overwrite(tmp_path, capsys):
    pth = tmp_path / "nano.pth"
    assert run(["official", "--export", NANO, pth], capsys)[0] == 0
    out = tmp_path / "back.safetensors"
    out.write_text("keep me")
    code, _, err = run(["official", pth, out], capsys)
    assert code == 2
    one_error_line(err, str(out), "--overwrite")
    assert out.read_text() == "keep me"
    code, stdout, err = run(["official", pth, out, "--overwrite"], capsys)
    assert code == 0 and f"wrote {out}" in stdout, err
    assert swinzoo.load_model(out) is not None


def test_existing_folder_needs_overwrite(tmp_path, capsys):
    folder = tmp_path / "timm"
    assert run(["timm", "--export", NANO, folder], capsys)[0] == 0
    written = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(b"older export")
    code, _, err = run(["timm", "--export", NANO, folder], capsys)
    assert code == 2
    one_error_line(err, str(folder), "--overwrite")
    assert (folder / "model.safetensors").read_bytes() == b"older export"
    assert run(["timm", "--export", NANO, folder, "--overwrite"], capsys)[0] == 0
    assert (folder / "model.safetensors").read_bytes() == written
