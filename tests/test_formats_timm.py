"""timm <-> swinzoo: real timm models (random weights, small geometry) in float64 to 1e-6, both directions."""

import json

import pytest
import torch

from swinzoo import SwinConfig, SwinTransformer
from swinzoo.converters import timm as timm_format
from swinzoo.sources import read_checkpoint
from swinzoo.zoo import ENTRIES

from .conftest import run_cli
from .formats_helpers import SMALL, assert_logits_close, randomize

timm = pytest.importorskip("timm")

CASES = {  # timm architecture, extra kwargs
    "v1": ("swin_tiny_patch4_window7_224", {}),
    "v2": ("swinv2_tiny_window8_256", {}),
    "v2_pretrained_windows": ("swinv2_tiny_window8_256", {"pretrained_window_sizes": (6, 6, 6, 2)}),
}


def timm_model(arch: str, **kwargs):
    model = timm.create_model(arch, img_size=64, window_size=4, num_classes=5, **SMALL, **kwargs)
    return randomize(model).double().eval()


@pytest.mark.parametrize("case", list(CASES))
def test_timm_folder_to_swinzoo(case, tmp_path):
    """timm's own save_for_hf folder (config.json with model_args) -> read_checkpoint -> same logits."""
    from timm.models._hub import save_for_hf

    arch, kwargs = CASES[case]
    model = timm_model(arch, **kwargs)
    save_for_hf(model, tmp_path / "m", safe_serialization=True)
    source = read_checkpoint(str(tmp_path / "m"))
    assert source.provenance["format"] == "timm"
    cfg = source.config
    assert (cfg.img_size, cfg.window_size, cfg.num_classes, cfg.depths) == (64, 4, 5, (2, 2, 2, 2))
    if case == "v2_pretrained_windows":
        assert cfg.pretrained_window_sizes == (6, 6, 6, 2)
    ours = SwinTransformer(cfg).double().eval()
    ours.load_state_dict(source.state_dict, strict=True)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert_logits_close(ours(x), model(x))


@pytest.mark.parametrize("version,pws", [(1, (0, 0, 0, 0)), (2, (0, 0, 0, 0)), (2, (8, 8, 8, 2))])
def test_swinzoo_to_timm_local_dir(version, pws, tmp_path):
    """write_timm_folder -> timm.create_model("local-dir:...", pretrained=True) -> same logits."""
    cfg = SwinConfig(version=version, img_size=64, window_size=4, num_classes=5, pretrained_window_sizes=pws,
                     class_names=list("abcde"), **SMALL)
    ours = randomize(SwinTransformer(cfg)).double().eval()
    out = timm_format.write_timm_folder(ours.state_dict(), cfg, tmp_path / "timm")
    meta = json.loads((out / "config.json").read_text())
    assert meta["model_args"]["embed_dim"] == 24 and meta["label_names"] == list("abcde")
    theirs = timm.create_model(f"local-dir:{out}", pretrained=True).double().eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert_logits_close(ours(x), theirs(x))
        # timm's meaning of the feature API: unpooled normed tokens, then the pooled pre-logits
        features = ours.forward_features(x)
        torch.testing.assert_close(features, theirs.forward_features(x), rtol=0, atol=1e-10)
        torch.testing.assert_close(ours.forward_head(features, pre_logits=True),
                                   theirs.forward_head(theirs.forward_features(x), pre_logits=True), rtol=0, atol=1e-10)
    assert features.shape == (2, 2, 2, cfg.num_features)
    assert read_checkpoint(str(out)).config == cfg  # and back, config included


def test_zoo_geometry_needs_no_model_args():
    """Every zoo entry with timm weights maps to its timm architecture by name alone."""
    for entry in ENTRIES:
        for w in entry.weights:
            if w.timm_arch is None:
                continue
            arch, model_args = timm_format.pick_arch(entry.config(w.tag))
            assert arch == w.hub_repo.split("/")[1].split(".")[0], entry.name
            assert model_args == {}, (entry.name, model_args)


def test_bare_v2_file_needs_arch(tmp_path, capsys):
    from safetensors.torch import save_file

    model = timm_model("swinv2_tiny_window8_256")
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    code, _, err = run_cli(["convert", tmp_path / "w.safetensors", "-o", tmp_path / "o.safetensors"], capsys)
    assert code == 2 and "cannot tell the window" in err and "--arch" in err
    assert not (tmp_path / "o.safetensors").exists()


def test_unknown_timm_architecture(tmp_path):
    from swinzoo.errors import SwinzooError

    with pytest.raises(SwinzooError, match="swinv2_cr_tiny_ns_224.*not a Swin V1/V2 model swinzoo maps"):
        timm_format.config_from_timm({"architecture": "swinv2_cr_tiny_ns_224"})


@pytest.mark.parametrize("input_size", [128, 224])
def test_a_v1_folder_without_model_args_takes_its_window_from_the_weights(input_size, tmp_path):
    """timm before 1.0.31 wrote model_args only when given them: a swin_tiny_patch4_window7_224 fine-tuned at
    window 8 left a config.json saying window 7 (and its pretrained_cfg's input_size sometimes the preset's 224).
    The read stopped on a bias-table shape mismatch, or asked for --res/--window, flags `info` and `convert` do not
    have. V1 bias tables state the window, and the resolution where a stage narrower than the window clamps it."""
    from timm.models._hub import save_for_hf

    model = timm.create_model("swin_tiny_patch4_window7_224", img_size=128, window_size=8, num_classes=5,
                              **SMALL)
    model = randomize(model).double().eval()
    save_for_hf(model, tmp_path / "m", safe_serialization=True)
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    del meta["model_args"]
    meta["pretrained_cfg"]["input_size"] = [3, input_size, input_size]
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    source = read_checkpoint(str(tmp_path / "m"))
    assert (source.config.window_size, source.config.img_size) == (8, 128)
    ours = SwinTransformer(source.config).double().eval()
    ours.load_state_dict(source.state_dict, strict=True)
    x = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        assert_logits_close(ours(x), model(x))


def test_a_v2_folder_without_model_args_whose_preset_window_cannot_be_its_own_says_why(tmp_path, capsys):
    """V2 weights state no window: a swinv2_tiny_window8_256 fine-tuned at 128 px / window 16 with timm before
    1.0.31 reads as window 8 at 128 px, which does not tile. The error said "use --res ... --window", flags `info`
    does not have; it now says what is missing and how to give it."""
    from timm.models._hub import save_for_hf

    model = timm.create_model("swinv2_tiny_window8_256", img_size=128, window_size=16, num_classes=5, **SMALL)
    save_for_hf(randomize(model), tmp_path / "m", safe_serialization=True)
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    del meta["model_args"]
    meta["pretrained_cfg"]["input_size"] = [3, 96, 96]
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    code, out, err = run_cli(["info", tmp_path / "m"], capsys)
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    for words in ("names swinv2_tiny_window8_256 (window 8) and states no window", "V2 weights do not reveal",
                  "save it again with timm 1.0.31 or later", "--arch NAME"):
        assert words in line, line
    assert "--res" not in line
