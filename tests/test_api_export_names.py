"""`export` refuses an output named for another format before writing anything: readers go by the suffix."""

import pytest

import swinzoo
from swinzoo import SwinzooError

from .conftest import run_cli


@pytest.mark.parametrize("to, name, message", [
    ("torchvision", "tv.safetensors", "--to torchvision writes a .pth / .pt / .bin file, not 'tv.safetensors' "
                                      "(.safetensors: swinzoo's own format, written by swinzoo convert); name the "
                                      "output tv.pth"),
    ("onnx", "x.pth", "--to onnx writes a .onnx file, not 'x.pth'"),
    ("pt2", "a.onnx", "--to pt2 writes a .pt2 file, not 'a.onnx' (.onnx: written by --to onnx); name the output a.pt2"),
    ("official", "off.onnx", "--to official writes a .pth / .pt / .bin file, not 'off.onnx'"),
    ("official", "off.ckpt", "(.ckpt: a Lightning checkpoint); name the output off.pth"),
    ("timm", "t.safetensors", "--to timm writes a folder (config.json and model.safetensors), not a .safetensors "
                              "file; give a folder name, e.g."),
    ("hf", "h.pth", "--to hf writes a folder"),
    ("swinzoo", "m.pth", "swinzoo convert writes a .safetensors file, not 'm.pth'"),
])
def test_an_output_named_for_another_format_is_refused_before_anything_is_written(tmp_path, to, name, message):
    with pytest.raises(SwinzooError) as e:
        swinzoo.export("swin_n_64", to, tmp_path / name)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_the_cli_says_it_in_one_line(tmp_path, capsys):
    code, out, err = run_cli(["export", "swin_n_64", "--to", "torchvision", "-o", tmp_path / "tv.safetensors"], capsys)
    assert code == 2 and err.startswith("error: --to torchvision writes a .pth") and err.count("\n") == 1
    code, out, err = run_cli(["convert", "swin_n_64", "-o", tmp_path / "n.pth"], capsys)
    assert code == 2 and "swinzoo convert writes a .safetensors file" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("to, name", [("official", "o.PTH"), ("official", "t.pt"), ("mmdet", "m.bin"),
                                      ("timm", "timm_dir"), ("swinzoo", "s.safetensors"), ("official", "plain"),
                                      ("official", "swin.v1")])
def test_the_expected_names_still_write(tmp_path, to, name):
    swinzoo.export("swin_n_64", to, tmp_path / name)
    assert (tmp_path / name).exists()
