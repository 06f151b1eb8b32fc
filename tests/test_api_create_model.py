"""`create_model`: fresh and pretrained weights agree on geometry, timm's idioms work, bad arguments give one line."""

import pytest
import torch

import swinzoo
from swinzoo import SwinzooError


@pytest.mark.parametrize("name, img_size, window", [("swin_n_64", 128, 8), ("swin_t_224", 384, 12),
                                                     ("swinv2_n_64_w4", 128, 8)])
def test_fresh_weights_scale_the_window_as_pretrained_ones_do(name, img_size, window):
    model = swinzoo.create_model(name, img_size=img_size)
    assert (model.config.img_size, model.config.window_size) == (img_size, window)


def test_fresh_and_pretrained_nano_models_share_the_geometry():
    fresh = swinzoo.create_model("swin_n_64", img_size=128)
    released = swinzoo.create_model("swin_n_64", pretrained=True, img_size=128)
    assert fresh.config.window_size == released.config.window_size == 8
    assert swinzoo.create_model("swin_n_64", img_size=128, window_size=4).config.window_size == 4  # as given
    backbone = swinzoo.create_model("swin_n_64", img_size=128, features_only=True)
    assert backbone.config.window_size == 8


def test_pretrained_with_num_classes_0_drops_the_head_as_timm_does():
    full = swinzoo.create_model("swin_n_64", pretrained=True).eval()
    headless = swinzoo.create_model("swin_n_64", pretrained=True, num_classes=0).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(headless(x), full.forward_head(full.forward_features(x), pre_logits=True))
    assert headless.config.num_classes == 0 and headless.config.class_names is None
    assert "10-class head" in headless.provenance["head_dropped"]
    moved = swinzoo.create_model("swin_n_64", pretrained=True, num_classes=0, img_size=128)
    assert (moved.config.window_size, moved.config.num_classes) == (8, 0) and "transfer" in moved.provenance


@pytest.mark.parametrize("kwargs, message", [
    ({"foo": 1}, "create_model has no argument 'foo'; it takes pretrained,"),
    ({"drop_path": 0.2}, "did you mean drop_path_rate?"),
    ({"window": 8}, "did you mean window_size?"),
    ({"num_classes": "5"}, "num_classes must be a whole number of classes (0: no head, the pooled features), got '5'"),
    ({"num_classes": 2.0}, "num_classes must be a whole number of classes"),
    ({"num_classes": -1}, "num_classes must be a whole number of classes"),
    ({"num_classes": 5, "pretrained": True, "img_size": "128"}, "img_size must be a positive integer, got '128'"),
    ({"window_size": True}, "window must be a positive integer, got True"),
])
def test_bad_arguments_give_one_line(kwargs, message):
    with pytest.raises(SwinzooError) as e:
        swinzoo.create_model("swin_n_64", **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)
