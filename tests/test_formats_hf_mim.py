"""transformers' SwinForMaskedImageModeling / Swinv2ForMaskedImageModeling folders <-> swinzoo's SimMIM: the official
SimMIM fixtures exported and run by transformers, and transformers' own MIM models read by swinzoo, loss and
reconstruction in float64 to 1e-6 against the fixtures' official outputs or transformers' outputs."""

import json

import pytest
import torch
from safetensors.torch import load_file

import swinzoo
from swinzoo import SwinzooError, conversion, converters
from swinzoo.converters.simmim import is_simmim

from .conftest import FIXTURES
from .formats_helpers import randomize

transformers = pytest.importorskip("transformers")
SIMMIM = FIXTURES / "simmim"
NAMES = ["simmim_swin_tiny_w6_192", "simmim_swinv2_tiny_w12_192"]
# 128 px, window 4: every stage (32, 16, 8, 4) is at least one window, which transformers' V1 needs
GEOMETRY = dict(image_size=128, patch_size=4, embed_dim=24, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
                window_size=4, encoder_stride=32)


def expected(name: str) -> dict[str, torch.Tensor]:
    return load_file(SIMMIM / f"{name}.expected.safetensors")


def hf_forward(model, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' (loss, reconstruction) for (B, C, H, W) images and a (B, H/4, W/4) mask (1 = masked)."""
    with torch.no_grad():
        out = model(pixel_values=images, bool_masked_pos=mask.flatten(1).bool())
    return out.loss, out.reconstruction


def ours_forward(model, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.double().eval()(images, mask)


def assert_close(got: tuple[torch.Tensor, torch.Tensor], want: tuple[torch.Tensor, torch.Tensor]) -> None:
    """float64 loss and reconstruction within 1e-6, and not trivially small (so the comparison can fail)."""
    for ours, theirs in zip(got, want):
        assert ours.dtype == torch.float64 and theirs.dtype == torch.float64
        assert theirs.abs().max() > 1e-2
        torch.testing.assert_close(ours, theirs.reshape(ours.shape), rtol=0, atol=1e-6)


def one_line_error(fn, match: str) -> None:
    with pytest.raises(SwinzooError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_official_simmim_exported_runs_in_transformers(name, tmp_path):
    """The fixture written as an HF MIM folder: transformers loads every key and gives the official loss and
    reconstruction; swinzoo reads the folder back to the same checkpoint and outputs."""
    source = converters.read(SIMMIM / f"{name}.pth")
    how = converters.write(source, "hf", tmp_path / "mim")
    assert "AutoModelForMaskedImageModeling" in how
    config_json = json.loads((tmp_path / "mim" / "config.json").read_text())
    version = source.config.version
    assert config_json["architectures"] == [("Swinv2" if version == 2 else "Swin") + "ForMaskedImageModeling"]
    assert config_json["encoder_stride"] == 32 and config_json["image_size"] == 192
    theirs, info = transformers.AutoModelForMaskedImageModeling.from_pretrained(tmp_path / "mim",
                                                                                 output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    exp = expected(name)
    images, official = exp["input"].double(), (exp["loss"][0], exp["reconstruction"])
    assert_close(hf_forward(theirs.double().eval(), images, exp["mask"]), official)

    assert converters.detect(tmp_path / "mim")[0].name == "hf"
    back = swinzoo.read_checkpoint(tmp_path / "mim")
    assert back.config == source.config and sorted(back.state_dict) == sorted(source.state_dict)
    assert all(torch.equal(back.state_dict[k], v) for k, v in source.state_dict.items())
    assert back.provenance["finetune_recipe"] == source.provenance["finetune_recipe"]
    model = swinzoo.load_simmim(tmp_path / "mim")
    assert model.provenance["format"] == "hf" and "simmim" not in model.provenance  # nothing initialised
    assert_close(ours_forward(model, images, exp["mask"]), official)


def test_bare_weight_file_of_a_mim_folder(tmp_path):
    """Without config.json the keys tell (V1: the window from the bias tables, 192 px as for every SimMIM model)."""
    converters.write(converters.read(SIMMIM / f"{NAMES[0]}.pth"), "hf", tmp_path / "mim")
    exp = expected(NAMES[0])
    model = swinzoo.load_simmim(tmp_path / "mim" / "model.safetensors")
    assert (model.config.img_size, model.config.window_size) == (192, 6)
    assert_close(ours_forward(model, exp["input"].double(), exp["mask"]), (exp["loss"][0], exp["reconstruction"]))


def hf_mim_model(version: int, seed: int = 0, **extra):
    if version == 2:
        model = transformers.Swinv2ForMaskedImageModeling(transformers.Swinv2Config(**GEOMETRY, **extra))
    else:
        model = transformers.SwinForMaskedImageModeling(transformers.SwinConfig(**GEOMETRY, **extra))
    return randomize(model, seed).double().eval()  # the mask token and decoder random too (created zero / default)


@pytest.mark.parametrize("version,extra,safe", [
    (1, {}, True), (1, {}, False), (2, {}, True), (2, {"pretrained_window_sizes": [6, 6, 6, 3]}, True),
])
def test_transformers_mim_model_reads_into_swinzoo(version, extra, safe, tmp_path):
    theirs = hf_mim_model(version, seed=version, **extra)
    theirs.save_pretrained(tmp_path / "m", safe_serialization=safe)
    checkpoint = swinzoo.read_checkpoint(tmp_path / "m")
    assert is_simmim(checkpoint.state_dict) and checkpoint.provenance["format"] == "hf"
    cfg = checkpoint.config
    assert (cfg.version, cfg.img_size, cfg.window_size, cfg.num_classes) == (version, 128, 4, 0)
    if extra:
        assert cfg.pretrained_window_sizes == (6, 6, 6, 3)
    model = swinzoo.load_simmim(tmp_path / "m")
    g = torch.Generator().manual_seed(version)
    images = torch.randn(2, 3, 128, 128, generator=g, dtype=torch.float64)
    mask = (torch.rand(2, 32, 32, generator=g) < 0.6).long()  # any mask: both use it patch by patch
    assert_close(ours_forward(model, images, mask), hf_forward(theirs, images, mask))


def test_classifier_folder_gives_a_fresh_decoder_and_mim_folder_is_no_classifier(tmp_path):
    classifier = transformers.SwinForImageClassification(transformers.SwinConfig(**GEOMETRY, num_labels=5))
    classifier.save_pretrained(tmp_path / "cls")
    model = swinzoo.load_simmim(tmp_path / "cls")  # a classifier source: the SimMIM parts start fresh
    assert sorted(model.provenance["simmim"]["dropped"]) == ["head.bias", "head.weight"]
    encoder = swinzoo.read_checkpoint(tmp_path / "cls").state_dict
    assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in encoder.items() if not k.startswith("head."))

    hf_mim_model(1).save_pretrained(tmp_path / "mim")
    one_line_error(lambda: swinzoo.load_model(tmp_path / "mim"), "is a SimMIM pretraining checkpoint: load it with "
                                                                 "swinzoo.load_simmim")
    # config.json says MIM but the weights are a classifier's
    config_path = tmp_path / "cls" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "architectures": ["SwinForMaskedImageModeling"]}))
    one_line_error(lambda: swinzoo.read_checkpoint(tmp_path / "cls"),
                   "incomplete transformers MaskedImageModeling checkpoint: it lacks swin.embeddings.mask_token")


def test_export_keeps_simmim_for_hf(tmp_path, monkeypatch):
    """`swinzoo export SIMMIM --to hf` once conversion.export keeps the SimMIM model for hf (its `keep_simmim` switch,
    forced on here), then the whole export path: a MIM folder transformers loads."""
    keep = conversion.read_transferred
    monkeypatch.setattr(conversion, "read_transferred", lambda *a, **k: keep(*a, **{**k, "keep_simmim": True}))
    done = conversion.export(str(SIMMIM / f"{NAMES[1]}.pth"), "hf", tmp_path / "mim")
    assert "AutoModelForMaskedImageModeling" in done.how_to_load
    theirs = transformers.AutoModelForMaskedImageModeling.from_pretrained(tmp_path / "mim").double().eval()
    exp = expected(NAMES[1])
    assert_close(hf_forward(theirs, exp["input"].double(), exp["mask"]), (exp["loss"][0], exp["reconstruction"]))


def test_a_simmim_model_transformers_cannot_hold_is_pointed_to_the_simmim_export(tmp_path, capsys):
    """The nano V1 SimMIM model has a 2 px last stage under window 4: transformers' Swin cannot hold it, and timm
    or official would drop its mask token and decoder."""
    from tests.conftest import run_cli

    code, _, err = run_cli(["export", "swin_n_64.simmim", "--to", "hf", "-o", tmp_path / "h"], capsys)
    assert code == 2 and "--to simmim" in err and "timm or official" not in err, err
    assert not (tmp_path / "h").exists()
