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


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 5}, "load_model keeps the checkpoint's head (10 classes), so num_classes=5 is refused: use "
                         "create_model(name, pretrained=True, num_classes=5) or swinzoo.convert(src, out, "
                         "num_classes=5) (CLI: swinzoo convert --num-classes 5)"),
    ({"img_size": 128}, "swinzoo.convert(src, out, res=..., window=...)"),
    ({"window_size": 8}, "create_model(name, pretrained=True, img_size=..., window_size=...)"),
    ({"pretrained_window_sizes": (8, 8, 8, 8)}, "at their own geometry"),
    ({"depths": (2, 2, 6, 2)}, "depths is part of the architecture the weights belong to"),
    ({"embed_dim": 64}, "embed_dim is part of the architecture"),
    ({"num_classes": "5"}, "num_classes='5' is refused"),
    ({"dropout": 0.1}, "load_model has no argument 'dropout'; did you mean drop_rate?"),
])
def test_overrides_that_change_the_weights_are_refused(kwargs, message):
    with pytest.raises(SwinzooError) as e:
        swinzoo.load_model("swinv2_n_64_w4", **kwargs) if "pretrained_window_sizes" in kwargs else \
            swinzoo.load_model("swin_n_64", **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_v2_window_override_no_longer_loads_with_the_wrong_cpb_inputs():
    """It used to load with pretrained windows 0 (the CPB normalised by the new window), unlike the transfer."""
    with pytest.raises(SwinzooError, match="at their own geometry"):
        swinzoo.load_model("swinv2_n_64_w4", window_size=8)
    moved = swinzoo.create_model("swinv2_n_64_w4", pretrained=True, window_size=8)
    assert moved.config.pretrained_window_sizes == (4, 4, 4, 2)


def test_overrides_that_keep_the_weights_still_apply():
    model = swinzoo.load_model("swin_n_64", drop_path_rate=0.3, drop_rate=0.1, num_classes=10, window_size=4)
    assert (model.config.drop_path_rate, model.config.drop_rate) == (0.3, 0.1)
    assert swinzoo.load_model("swin_n_64", depths=[2, 2, 2, 2]).config.depths == (2, 2, 2, 2)  # its own
    backbone = swinzoo.load_model("swin_n_64", features_only=True, drop_path_rate=0.0)
    assert backbone.config.drop_path_rate == 0.0
    with pytest.raises(SwinzooError, match="gives a backbone a new window with window=6, not window_size"):
        swinzoo.load_model("swin_n_64", features_only=True, window_size=6)
    assert swinzoo.load_simmim("swin_n_64", drop_path_rate=0.2).config.drop_path_rate == 0.2
    with pytest.raises(SwinzooError, match="load_simmim loads the weights at their own geometry"):
        swinzoo.load_simmim("swin_n_64", img_size=128)
    with pytest.raises(SwinzooError, match=r"create_model\(pretrained=True\) loads the weights at their own geometry"):
        swinzoo.create_model("swinv2_n_64_w4", pretrained=True, pretrained_window_sizes=(8, 8, 8, 8))
