"""Bad input for the foreign formats: one line naming the problem and the fix, exit 2, nothing half-written."""

import json

import pytest
import torch
from safetensors.torch import save_file

from swinzoo import SwinConfig, SwinTransformer
from swinzoo.converters import timm as timm_format

from .conftest import V1, fixture_pth, run_cli
from .formats_helpers import SMALL
from .test_cli_errors import assert_clean_failure


@pytest.fixture
def resnet_pth(tmp_path):
    """A state dict of some other model (a torchvision ResNet-18, random weights)."""
    import torchvision

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


@pytest.mark.parametrize("fmt,expect", [
    ("timm", "not a timm Swin state dict"), ("hf", "not a transformers Swin state dict"),
    ("torchvision", "not a torchvision Swin state dict"),
    ("auto", "not a Swin checkpoint swinzoo recognises"),
])
def test_state_dict_of_another_model(fmt, expect, resnet_pth, tmp_path, capsys):
    code, _, err = run_cli(["convert", resnet_pth, "--from-format", fmt, "-o", tmp_path / "o.safetensors"], capsys)
    assert_clean_failure(tmp_path, code, "o.safetensors", err, expect, "first keys seen: conv1.weight, bn1.weight")


def test_folder_without_config_json(tmp_path, capsys):
    cfg = SwinConfig(version=1, img_size=64, window_size=4, **SMALL)
    folder = tmp_path / "weights_only"
    folder.mkdir()
    save_file(timm_format.from_canonical(SwinTransformer(cfg).state_dict()), folder / "model.safetensors")
    code, _, err = run_cli(["convert", folder, "-o", tmp_path / "o.safetensors"], capsys)
    assert_clean_failure(tmp_path, code, "o.safetensors", err, "has no config.json", "--arch")
    code, _, err = run_cli(["convert", folder, "--from-format", "hf", "-o", tmp_path / "o.safetensors"], capsys)
    assert_clean_failure(tmp_path, code, "o.safetensors", err, "has no config.json")


def test_hf_config_of_another_model_type(tmp_path, capsys):
    code, _, err = run_cli(["export", fixture_pth(V1), "--to", "hf", "-o", tmp_path / "hf"], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["model_type"] = "vit"
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli(["convert", tmp_path / "hf", "-o", tmp_path / "o.safetensors"], capsys)
    assert_clean_failure(tmp_path, code, "o.safetensors", err, "'vit' model, not Swin", "model_type 'swin'")


def test_torchvision_export_of_pretrained_windows_is_refused(tmp_path, capsys):
    from swinzoo import save_model

    cfg = SwinConfig(version=2, img_size=128, window_size=4, pretrained_window_sizes=(8, 8, 8, 8), **SMALL)
    src = save_model(SwinTransformer(cfg), tmp_path / "m.safetensors")
    code, _, err = run_cli(["export", src, "--to", "torchvision", "-o", tmp_path / "tv.pth"], capsys)
    assert_clean_failure(tmp_path, code, "tv.pth", err, "no pretrained window", "--allow-numeric-change")
    with pytest.warns(UserWarning, match="numerics"):
        code, _, err = run_cli(["export", src, "--to", "torchvision", "-o", tmp_path / "tv.pth",
                                "--allow-numeric-change"], capsys)
    assert code == 0 and (tmp_path / "tv.pth").exists()


def test_failed_folder_export_leaves_nothing(tmp_path, capsys):
    cfg = SwinConfig(version=1, img_size=64, window_size=4, ape=True, **SMALL)
    from swinzoo import save_model

    src = save_model(SwinTransformer(cfg), tmp_path / "ape.safetensors")
    code, _, err = run_cli(["export", src, "--to", "timm", "-o", tmp_path / "out"], capsys)
    assert_clean_failure(tmp_path, code, "out", err, "absolute position embedding", "official")


def test_atomic_dir_keeps_the_old_folder_on_failure(tmp_path):
    from swinzoo.errors import SwinzooError
    from swinzoo.io import atomic_dir

    out = tmp_path / "out"
    out.mkdir()
    (out / "model.txt").write_text("old")
    owned = {"model.txt", "config.txt"}
    with pytest.raises(RuntimeError), atomic_dir(out, owned) as tmp:
        (tmp / "model.txt").write_text("half")
        raise RuntimeError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "model.txt").read_text() == "old"
    with atomic_dir(out, owned) as tmp:  # an earlier output of the same kind: its files are replaced
        (tmp / "model.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["model.txt"] and (out / "model.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    (out / "notes.txt").write_text("mine")  # a file swinzoo did not write: refused, then only ours replaced
    with pytest.raises(SwinzooError, match="notes.txt.*--overwrite"), atomic_dir(out, owned):
        pass
    with atomic_dir(out, owned, overwrite=True) as tmp:
        (tmp / "model.txt").write_text("newer")
    assert sorted(p.name for p in out.iterdir()) == ["model.txt", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.txt").read_text() == "newer"


@pytest.mark.parametrize("command,example", [
    (["convert"], "model.safetensors"), (["export", "--to", "timm"], "out_timm"),
    (["export", "--to", "official"], "model.pth"), (["export", "--to", "onnx"], "model.onnx")])
@pytest.mark.parametrize("spelling", ["", " "])
def test_an_empty_output_path_is_one_line(command, example, spelling, tmp_path, capsys, monkeypatch):
    """`-o "$OUT"` with OUT unset said '. is a folder', and export --to timm read '' as the current folder."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli([command[0], "swin_n_64", *command[1:], "-o", spelling, "--overwrite"], capsys)
    assert_clean_failure(tmp_path, code, "out", err, "the output path (-o) is empty",
                         f"give the path to write, e.g. -o {example}")
    assert list(tmp_path.iterdir()) == []
