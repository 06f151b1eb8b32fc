"""`load_model` and friends: timm's out_indices spellings, overrides that would change the weights, path objects."""

import pytest
import torch

import swinzoo
from swinzoo import SwinzooError


@pytest.mark.parametrize("given, stages", [(3, (1, 2, 3)), (1, (3,)), (4, (0, 1, 2, 3)), ((-1,), (3,)),
                                           ((0, -2), (0, 2)), ([-4, 3], (0, 3))])
def test_out_indices_read_as_timm_does(given, stages):
    """An int n: the last n stages; a negative index counts from the end (timm's feature_take_indices)."""
    assert swinzoo.load_model("swin_n_64", features_only=True, out_indices=given).config.out_indices == stages
    assert swinzoo.create_model("swin_n_64", features_only=True, out_indices=given).config.out_indices == stages


def test_out_indices_as_an_int_in_export(tmp_path):
    out = swinzoo.export("swin_n_64", "swinzoo", tmp_path / "b.safetensors", out_indices=2).config
    assert out.out_indices == (2, 3)


@pytest.mark.parametrize("given, message", [
    (5, "out_indices=5 asks for the last 5 stages, but this model has 4: give 1..4"),
    (0, "out_indices=0 asks for the last 0 stages"),
    ((-5,), "out_indices [-5] out of range: this model has 4 stages, so pick from 0..3 or -4..-1"),
    ((1.0,), "out_indices must be a number of last stages or a list of stage numbers"),
    (True, "out_indices must be a number of last stages"),
])
def test_bad_out_indices_give_one_line(given, message):
    with pytest.raises(SwinzooError) as e:
        swinzoo.load_model("swin_n_64", features_only=True, out_indices=given)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_backbone_from_out_indices_3_matches_the_explicit_stages():
    x = torch.randn(1, 3, 64, 64)
    a = swinzoo.load_model("swin_n_64", features_only=True, out_indices=3).eval()
    b = swinzoo.load_model("swin_n_64", features_only=True, out_indices=(1, 2, 3)).eval()
    with torch.no_grad():
        assert all(torch.equal(p, q) for p, q in zip(a(x), b(x)))
