"""Our models against the logits the official code computed for the fixtures (float64 to 1e-6, float32 to 1e-4)."""

import pytest
import torch

from swinzoo import SwinTransformer, load_model
from swinzoo.converters.official import from_official, read_official
from swinzoo.weight_transfer import transfer

from .conftest import V1, V2, expected, fixture_pth, run_cli


def official_model(name: str) -> SwinTransformer:
    sd, cfg = from_official(read_official(fixture_pth(name)))
    model = SwinTransformer(cfg)
    model.load_state_dict(sd, strict=True)
    return model.eval()


@pytest.mark.parametrize("name", [V1, V2])
def test_logits_float64(name):
    exp = expected(name)
    model = official_model(name).double()
    with torch.no_grad():
        logits = model(exp["input"].double())
    torch.testing.assert_close(logits, exp["logits"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", [V1, V2])
def test_logits_float32(name):
    exp = expected(name)
    model = official_model(name)
    with torch.no_grad():
        logits = model(exp["input"])
    torch.testing.assert_close(logits.double(), exp["logits"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", [V1, V2])
def test_convert_then_load(name, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    code, _, err = run_cli(["convert", fixture_pth(name), "-o", out], capsys)
    assert code == 0, err
    exp = expected(name)
    model = load_model(out).double().eval()
    with torch.no_grad():
        torch.testing.assert_close(model(exp["input"].double()), exp["logits"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", [V1, V2])
def test_transfer_logits(name, tmp_path, capsys):
    """The fixture's transfer (224/w7 -> 384/w12 for V1; 256/w8 -> 384/w12, pws 8-8-8-8 for V2) through the CLI."""
    out = tmp_path / "t.safetensors"
    code, stdout, err = run_cli(["convert", fixture_pth(name), "-o", out, "--res", 384, "--window", 12], capsys)
    assert code == 0, err
    assert "384" in stdout
    model = load_model(out)
    assert model.config.img_size == 384 and model.config.window_size == 12
    if name == V2:
        assert model.config.pretrained_window_sizes == (8, 8, 8, 8)
    assert model.provenance["transfer"]["from"]["img_size"] != 384
    exp = expected(name)
    with torch.no_grad():
        logits = model.double().eval()(exp["transfer_input"].double())
    torch.testing.assert_close(logits, exp["transfer_logits"], rtol=0, atol=1e-6)


def test_interpolated_table_matches_official():
    sd, cfg = from_official(read_official(fixture_pth(V1)))
    moved, _, report = transfer(sd, cfg, cfg.replace(img_size=384, window_size=12))
    key = "layers.0.blocks.0.attn.relative_position_bias_table"
    assert (key, (169, 1), (529, 1)) in report.interpolated
    torch.testing.assert_close(moved[key].double(), expected(V1)["transfer_rpb_first_block"], rtol=0, atol=1e-7)


def test_align_corners_would_fail():
    """The bicubic details matter: align_corners=True misses the official table, so the test above can fail."""
    table = read_official(fixture_pth(V1))["layers.0.blocks.0.attn.relative_position_bias_table"]
    grid = table.T.reshape(1, 1, 13, 13)
    wrong = torch.nn.functional.interpolate(grid, size=(23, 23), mode="bicubic", align_corners=True)
    diff = (wrong.reshape(1, 529).T.double() - expected(V1)["transfer_rpb_first_block"]).abs().max()
    assert diff > 1e-4


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = official_model(V2).double().train()
    x = expected(V2)["input"][:1].double()
    torch.manual_seed(1)  # same drop-path draws in both passes
    model(x).square().sum().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    torch.manual_seed(1)
    model(x).square().sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[n], rtol=0, atol=1e-10, msg=n)
