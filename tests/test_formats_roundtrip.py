"""The official fixtures survive official -> timm -> hf -> torchvision -> official through `swinzoo export`,
bit for bit, and each intermediate loads in its own library with the official logits (float64, 1e-6)."""

import pytest
import torch

from swinzoo import SwinTransformer
from swinzoo.converters import torchvision as tv_format
from swinzoo.converters.official import from_official, read_official

from .conftest import V1, V2, expected, fixture_pth, run_cli
from .formats_helpers import assert_logits_close

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")


def export(capsys, src, to, out):
    code, stdout, err = run_cli(["export", src, "--to", to, "-o", out], capsys)
    assert code == 0, err
    assert "load it with" in stdout
    return out


@pytest.mark.parametrize("name", [V1, V2])
def test_official_timm_hf_torchvision_official(name, tmp_path, capsys):
    exp = expected(name)
    x = exp["input"].double()
    timm_dir = export(capsys, fixture_pth(name), "timm", tmp_path / "timm")
    model = timm.create_model(f"local-dir:{timm_dir}", pretrained=True).double().eval()
    with torch.no_grad():
        assert_logits_close(model(x), exp["logits"])

    hf_dir = export(capsys, timm_dir, "hf", tmp_path / "hf")
    model = transformers.AutoModelForImageClassification.from_pretrained(hf_dir).double().eval()
    with torch.no_grad():
        assert_logits_close(model(x).logits, exp["logits"])

    tv_file = export(capsys, hf_dir, "torchvision", tmp_path / "tv.pth")
    sd, cfg = from_official(read_official(fixture_pth(name)))
    model = tv_format.build_model(cfg)
    model.load_state_dict(torch.load(tv_file, weights_only=True), strict=True)
    with torch.no_grad():
        assert_logits_close(model.double().eval()(x), exp["logits"])

    back = export(capsys, tv_file, "official", tmp_path / "back.pth")
    original = read_official(fixture_pth(name))
    again = read_official(back)
    assert list(again) == list(original)  # same keys, same order, buffers included: strict-clean officially
    for key, value in original.items():
        assert torch.equal(again[key].to(value.dtype), value), key
    sd2, cfg2 = from_official(again)
    assert cfg2 == cfg
    ours = SwinTransformer(cfg2).double().eval()
    ours.load_state_dict(sd2, strict=True)
    with torch.no_grad():
        assert_logits_close(ours(x), exp["logits"])


def test_convert_from_each_format_is_identical(tmp_path, capsys):
    """`convert --from-format auto` and the explicit format agree, and equal the official tensors."""
    from swinzoo.converters.native import read as read_checkpoint

    timm_dir = export(capsys, fixture_pth(V2), "timm", tmp_path / "timm")
    hf_dir = export(capsys, fixture_pth(V2), "hf", tmp_path / "hf")
    tv_file = export(capsys, fixture_pth(V2), "torchvision", tmp_path / "tv.pth")
    ref, cfg = from_official(read_official(fixture_pth(V2)))
    for src, fmt in ((timm_dir, "timm"), (hf_dir, "hf"), (tv_file, "torchvision")):
        for given in ("auto", fmt):
            out = tmp_path / f"{fmt}-{given}.safetensors"
            code, _, err = run_cli(["convert", src, "--from-format", given, "-o", out], capsys)
            assert code == 0, err
            sd, cfg2, prov = read_checkpoint(out)
            # pretrained windows 0 ("the stage's own") stay so: writing out 8 would change no number
            assert cfg2 == cfg and cfg.pretrained_window_sizes == (0, 0, 0, 0) and prov["format"] == fmt
            assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in ref)


def test_info_reads_foreign_folders(tmp_path, capsys):
    import json

    hf_dir = export(capsys, fixture_pth(V1), "hf", tmp_path / "hf")
    code, out, err = run_cli(["info", hf_dir, "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["config"]["window_size"] == 7 and info["provenance"]["format"] == "hf"


def test_converters_run_as_scripts(tmp_path, capsys):
    """`python -m swinzoo.converters {timm,hf,torchvision}` both ways (its main() in process)."""
    from swinzoo.converters.__main__ import main
    from swinzoo.converters.native import read as read_checkpoint

    ref = tmp_path / "ref.safetensors"
    assert run_cli(["convert", fixture_pth(V1), "-o", ref], capsys)[0] == 0
    ref_sd, ref_cfg, _ = read_checkpoint(ref)
    for fmt, out in (("timm", tmp_path / "timm"), ("hf", tmp_path / "hf"), ("torchvision", tmp_path / "tv.pth")):
        main([fmt, "--export", str(ref), str(out)])
        back = tmp_path / f"{out.stem}.back.safetensors"
        main([fmt, str(out), str(back)])
        sd, cfg, _ = read_checkpoint(back)
        assert cfg == ref_cfg and all(torch.equal(sd[k], ref_sd[k]) for k in ref_sd) and sd.keys() == ref_sd.keys()


@pytest.mark.parametrize("to", ["hf", "timm"])
@pytest.mark.parametrize("rates", [(0.0, 0.0), (0.3, 0.2)])
def test_dropout_rates_survive_an_export_and_back(to, rates, tmp_path):
    """transformers' config.json states drop_path_rate and hidden_dropout_prob, timm's model_args can carry
    drop_path_rate and drop_rate: read back, they are the model's, not SwinConfig's defaults (0.1, 0.0)."""
    from swinzoo.converters import Checkpoint, write
    from swinzoo.sources import read_checkpoint
    from swinzoo.zoo import zoo_config

    drop_path_rate, drop_rate = rates
    cfg = zoo_config("swinv2_n_64_w4").replace(drop_path_rate=drop_path_rate, drop_rate=drop_rate)
    write(Checkpoint(SwinTransformer(cfg).state_dict(), cfg, {}), to, tmp_path / "out")
    back = read_checkpoint(str(tmp_path / "out")).config
    assert (back.drop_path_rate, back.drop_rate) == rates
    assert back.replace(class_names=None, preprocess=None) == cfg.replace(class_names=None, preprocess=None)
