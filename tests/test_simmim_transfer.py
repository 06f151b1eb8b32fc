"""The official SimMIM fine-tune load (`utils_simmim.load_pretrained`): the geometric bias-table resize (SciPy's
removed interp2d rebuilt in torch) and the key remap, against what the official code computed (fixtures/simmim)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from swinzoo import SwinConfig, SwinTransformer, SwinzooError
from swinzoo.geometric_interp import (
    geometric_offsets,
    geometric_ratio,
    interp2d_cubic,
    resize_bias_table_geometric,
    spline_matrix,
)
from swinzoo.weight_transfer import simmim_encoder_to_classifier, with_source_windows

FIXTURES = Path(__file__).parent / "fixtures" / "simmim"
TINY = dict(embed_dim=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
V1_FT, V2_FT = "simmim_swin_tiny_w6_192_ft224_w7", "simmim_swinv2_tiny_w12_192_ft256_w16"
SOURCES = {  # the pretraining each fine-tune fixture loads (its manifest's `source`), as the official configs build it
    V1_FT: SwinConfig(version=1, img_size=192, window_size=6, num_classes=0, **TINY),
    V2_FT: SwinConfig(version=2, img_size=192, window_size=12, num_classes=0, **TINY),
}
FIRST_TABLE = "encoder.layers.0.blocks.0.attn.relative_position_bias_table"


def meta(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.manifest.json").read_text())["meta"]


def pretrained(name: str) -> dict[str, torch.Tensor]:
    return torch.load(FIXTURES / meta(name)["source"], weights_only=True)["model"]


def target(name: str) -> SwinConfig:
    m, src = meta(name), SOURCES[name]
    return with_source_windows(src, src.replace(img_size=m["img_size"], window_size=m["window"], num_classes=10))


def test_first_table_matches_the_official_geometric_resize():
    exp = load_file(FIXTURES / f"{V1_FT}.expected.safetensors")["rpb_first_block"]
    table = pretrained(V1_FT)[FIRST_TABLE].double()
    out = resize_bias_table_geometric(table, 13)
    assert out.shape == exp.shape == (169, 1)
    err = (out - exp).abs().max().item()
    assert err <= 1e-6, err  # measured ~9e-8: the official result went through float32 (torch.Tensor)


@pytest.mark.parametrize("name", [V1_FT, V2_FT])
def test_pooled_features_match_the_official_fine_tune_load(name):
    exp = load_file(FIXTURES / f"{name}.expected.safetensors")
    src, dst = SOURCES[name], target(name)
    if meta(name)["pretrained_window_sizes"] is not None:
        assert list(dst.pretrained_window_sizes) == meta(name)["pretrained_window_sizes"]
    sd, notes = simmim_encoder_to_classifier(pretrained(name), src, dst)
    assert "head.weight" not in sd and any("head" in n for n in notes)
    model = SwinTransformer(dst).double().eval()  # the head keeps its random init: it is not compared
    missing, unexpected = model.load_state_dict({k: v.double() for k, v in sd.items()}, strict=False)
    assert unexpected == [] and sorted(missing) == ["head.bias", "head.weight"]
    with torch.no_grad():
        features = model.forward_head(model.forward_features(exp["input"].double()), pre_logits=True)
    err = (features - exp["features"]).abs().max().item()
    assert features.shape == exp["features"].shape and err <= 1e-6, err


def test_remap_drops_pretraining_only_keys_and_buffers():
    raw = pretrained(V1_FT)
    sd, notes = simmim_encoder_to_classifier(raw, SOURCES[V1_FT], target(V1_FT))
    assert not [k for k in sd if k.startswith(("encoder.", "decoder.")) or k == "mask_token"]
    assert not [k for k in sd if k.endswith(("relative_position_index", "attn_mask", "relative_coords_table"))]
    tables = [k for k in sd if k.endswith("relative_position_bias_table")]
    assert len(tables) == 8 and all(sd[k].shape[0] == 169 for k in tables)
    assert torch.equal(sd["norm.weight"], raw["encoder.norm.weight"])
    assert any("geometrically" in n for n in notes) and any("mask_token" in n for n in notes)


def test_rpe_mlp_is_renamed_cpb_mlp():
    """Released V2 SimMIM files name the CPB MLP `rpe_mlp` (Swin-Transformer issue #271)."""
    raw = pretrained(V2_FT)
    old = {k.replace("cpb_mlp", "rpe_mlp"): v for k, v in raw.items()}
    assert any("rpe_mlp" in k for k in old)
    sd, notes = simmim_encoder_to_classifier(old, SOURCES[V2_FT], target(V2_FT))
    expected, _ = simmim_encoder_to_classifier(raw, SOURCES[V2_FT], target(V2_FT))
    assert sd.keys() == expected.keys() and all(sd[k] is expected[k] for k in sd)
    assert any("rpe_mlp" in n for n in notes)


def test_refusals():
    with pytest.raises(SwinzooError, match="not the SimMIM source's windows"):
        simmim_encoder_to_classifier(pretrained(V2_FT), SOURCES[V2_FT], SOURCES[V2_FT].replace(img_size=256,
                                                                                             window_size=16))
    with pytest.raises(SwinzooError, match="no encoder"):
        simmim_encoder_to_classifier({"norm.weight": torch.ones(192)}, SOURCES[V1_FT], target(V1_FT))
    with pytest.raises(SwinzooError, match="head counts"):
        simmim_encoder_to_classifier(pretrained(V1_FT), SOURCES[V1_FT], target(V1_FT).replace(num_heads=(3, 6, 12, 24)))
    with pytest.raises(SwinzooError, match="at least 3"):
        resize_bias_table_geometric(torch.zeros(9, 2), 5)


# ------------------------------------------------------------------------------------------------- the spline itself
def geometric_points(side: int = 11, dst: int = 13) -> torch.Tensor:
    return geometric_offsets(side, geometric_ratio(side // 2, dst // 2))


def test_geometric_offsets_reach_the_target_half_width():
    x = geometric_points()
    assert x.shape == (11,) and torch.equal(x, -x.flip(0)) and x[5] == 0 and x[6] == 1
    assert abs(float(x[-1]) - 6) < 1e-4  # the bisection solves 1 + q + ... + q^4 = 6 to its 1e-6 width in q


def test_spline_interpolates_the_data_points():
    x = geometric_points()
    torch.testing.assert_close(spline_matrix(x, x), torch.eye(len(x), dtype=torch.float64), rtol=0, atol=1e-13)


def test_spline_reproduces_cubic_polynomials_in_2d():
    x, y = geometric_points(), torch.tensor([-3.0, -1.5, 0.0, 0.5, 2.0, 4.0, 4.5], dtype=torch.float64)
    xq, yq = torch.linspace(-6, 6, 17, dtype=torch.float64), torch.linspace(-3, 4.5, 9, dtype=torch.float64)
    coef = torch.randn(4, 4, dtype=torch.float64)

    def poly(u, v):  # sum c_ij u^i v^j, i, j <= 3: in every bicubic spline space, so reproduced exactly
        return torch.einsum("ij,ai,bj->ba", coef, torch.stack([u**i for i in range(4)], 1),
                            torch.stack([v**j for j in range(4)], 1))

    torch.testing.assert_close(interp2d_cubic(poly(x, y), x, y, xq, yq), poly(xq, yq), rtol=0, atol=1e-10)


def test_spline_is_not_a_knot_and_clamps_outside():
    """One cubic piece on [x0, x2] and on [x-3, x-1] (no knot at x1, x-2), and constant beyond the ends (bisplev
    clamps its arguments)."""
    x = geometric_points()
    f = torch.randn(len(x), dtype=torch.float64)
    for a, b in ((x[0], x[2]), (x[-3], x[-1])):
        values = spline_matrix(x, torch.linspace(float(a), float(b), 9, dtype=torch.float64)) @ f
        assert values.diff(n=4).abs().max() < 1e-10  # equally spaced samples of a cubic: 4th differences vanish
    outside = spline_matrix(x, torch.tensor([-9.0, x[0], x[-1], 9.0], dtype=torch.float64)) @ f
    torch.testing.assert_close(outside, torch.stack([f[0], f[0], f[-1], f[-1]]), rtol=0, atol=1e-13)


def test_spline_matches_fitpack_when_scipy_is_installed():
    interpolate = pytest.importorskip("scipy.interpolate")
    x, y = geometric_points(), geometric_points(9, 11)[1:]
    z = torch.randn(len(y), len(x), dtype=torch.float64)
    xq, yq = torch.linspace(-6, 6, 13, dtype=torch.float64), torch.linspace(float(y[0]), float(y[-1]), 7,
                                                                            dtype=torch.float64)
    # RectBivariateSpline(x, y, z) takes z as (len(x), len(y)); with s=0 it is the same FITPACK regrid fit
    ref = interpolate.RectBivariateSpline(y.numpy(), x.numpy(), z.numpy(), kx=3, ky=3, s=0)(yq.numpy(), xq.numpy())
    torch.testing.assert_close(interp2d_cubic(z, x, y, xq, yq), torch.from_numpy(ref), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", [V1_FT, V2_FT])
def test_convert_and_load_model_take_a_simmim_checkpoint(name, tmp_path):
    """The public path a user takes (`swinzoo convert SIMMIM.pth --res --window`): the same features as the
    official fine-tune load, read back by `load_model` as a classifier."""
    import swinzoo

    m = meta(name)
    out = tmp_path / "ft.safetensors"
    done = swinzoo.convert(str(FIXTURES / m["source"]), out, res=m["img_size"], window=m["window"], num_classes=10)
    assert any("geometrically" in n for n in done.report.notes) == (name == V1_FT)
    model = swinzoo.load_model(out).double().eval()
    exp = load_file(FIXTURES / f"{name}.expected.safetensors")
    with torch.no_grad():
        features = model.forward_head(model.forward_features(exp["input"].double()), pre_logits=True)
    assert (features - exp["features"]).abs().max().item() <= 1e-6
