"""timm's model-changing API on swinzoo's classifier: `set_input_size` (held to `transfer`, the official move that
`convert --res --window` makes, and to timm where timm's own move computes the same), `prune_intermediate_layers`,
and the attributes timm's Swin carries (`embed_dim`, `num_layers`, `in_chans`, `global_pool`, `output_fmt`,
`dynamic_img_size`)."""

import pytest
import torch

from swinzoo import SwinConfig, SwinTransformer, SwinzooError, load_model, save_model, transfer
from swinzoo.conversion import target_config
from swinzoo.converters import timm as timm_format

from .formats_helpers import SMALL, randomize

timm = pytest.importorskip("timm")

ARCHS = {1: "swin_tiny_patch4_window7_224", 2: "swinv2_tiny_window8_256"}
GEOMETRY = dict(img_size=64, window_size=4, **SMALL)


def model_of(version: int, **changes) -> SwinTransformer:
    return randomize(SwinTransformer(SwinConfig(version=version, num_classes=5, **{**GEOMETRY, **changes}))).double()


def converted(model: SwinTransformer, res: int, window: int | None = None) -> SwinTransformer:
    """What `convert --res --window` makes of `model`'s weights: the official transfer, then a fresh model."""
    src = model.config
    state_dict, dst, _ = transfer(model.state_dict(), src, target_config(src, res, window))
    out = SwinTransformer(dst).double()
    out.load_state_dict(state_dict, strict=True)
    return out.eval()


def logits(model: SwinTransformer, x: torch.Tensor, fast: bool = True) -> torch.Tensor:
    model.set_fast_path(fast)
    with torch.no_grad():
        return model.eval()(x)


# ---------------------------------------------------------------------------------------------- set_input_size
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("kwargs, res, window", [
    ({"img_size": 128}, 128, None),  # the window scales with the image, as timm's (and convert's) default
    ({"img_size": (96, 96), "window_size": 6}, 96, 6),
    ({"img_size": 128, "window_ratio": 4}, 128, 8),  # timm's ratio: the patch grid (32) over it
    ({"window_size": 8}, 64, 8),
])
def test_set_input_size_is_the_official_transfer(version, kwargs, res, window):
    """In place, the model becomes what `convert --res --window` writes: the same config, the same tensors, the same
    logits (fast path on and off, float64), also after a forward at the old size filled the caches."""
    model = model_of(version)
    expected = converted(model, res, window)
    logits(model, torch.randn(2, 3, 64, 64, dtype=torch.float64))  # plans and attention terms cached
    model.set_input_size(**kwargs)
    assert model.config == expected.config
    mine, theirs = model.state_dict(), expected.state_dict()
    assert mine.keys() == theirs.keys()
    for key in mine:
        torch.testing.assert_close(mine[key], theirs[key], rtol=0, atol=0, msg=key)
    for name, buffer in expected.named_buffers():
        torch.testing.assert_close(dict(model.named_buffers())[name], buffer, rtol=0, atol=0, msg=name)
    x = torch.randn(2, 3, res, res, dtype=torch.float64)
    reference = logits(expected, x, fast=False)
    torch.testing.assert_close(logits(model, x, fast=True), reference, rtol=0, atol=1e-10)
    torch.testing.assert_close(logits(model, x, fast=False), reference, rtol=0, atol=1e-10)
    torch.manual_seed(0)  # training: the same drop paths
    trained = model.train()(x)
    torch.manual_seed(0)
    torch.testing.assert_close(trained, expected.train()(x), rtol=0, atol=1e-10)


def test_set_input_size_records_the_move_and_saves_the_new_geometry(tmp_path):
    model = model_of(1).float()
    model.provenance = {"zoo": "test"}
    model.set_input_size(img_size=128)
    assert model.provenance["transfer"]["from"]["img_size"] == 64
    assert model.provenance["transfer"]["interpolated"]
    assert model.pretrained_cfg["input_size"] == (3, 128, 128)
    save_model(model, tmp_path / "m.safetensors")
    back = load_model(tmp_path / "m.safetensors")
    assert back.config == model.config
    x = torch.randn(1, 3, 128, 128)
    torch.testing.assert_close(logits(back, x), logits(model, x), rtol=0, atol=0)


def test_set_input_size_v2_matches_timms_in_place_move():
    """timm keeps a V2 model's pretrained windows through its move; given the source's windows (what swinzoo records),
    its model computes swinzoo's logits. (V1: timm resizes the bias tables by a geometric-progression linear
    interpolation in float32, not the official bicubic, so its logits differ; see `set_input_size`.)"""
    model = model_of(2)
    windows = tuple(model.config.stage_window(i) for i in range(4))
    theirs = timm.create_model(ARCHS[2], pretrained=False, num_classes=5, pretrained_window_sizes=windows,
                               **GEOMETRY).double()
    theirs.load_state_dict(timm_format.from_canonical(model.state_dict()), strict=True)
    model.set_input_size(img_size=128, window_size=8)
    theirs.set_input_size(img_size=(128, 128), window_size=8)
    x = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(logits(model, x), theirs.eval()(x), rtol=0, atol=1e-10)


def test_set_input_size_v1_differs_from_timm_only_in_the_bias_tables():
    model = model_of(1)
    theirs = timm.create_model(ARCHS[1], pretrained=False, num_classes=5, **GEOMETRY).double()
    theirs.load_state_dict(timm_format.from_canonical(model.state_dict()), strict=True)
    model.set_input_size(img_size=128, window_size=8)
    theirs.set_input_size(img_size=(128, 128), window_size=8)
    x = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        assert (logits(model, x) - theirs.eval()(x)).abs().max() > 1e-4  # timm's own table resize
        theirs.load_state_dict(timm_format.from_canonical(model.state_dict()), strict=True)
        torch.testing.assert_close(logits(model, x), theirs(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("kwargs, message", [
    ({"img_size": (64, 96)}, "square"),
    ({"img_size": 100}, "patch merging cannot halve"),
    ({"img_size": 64, "window_size": 5}, "window 5"),
    ({"window_size": [4, 4, 8, 8]}, "one window"),
    ({"window_ratio": (2, 4, 4, 4)}, "one window"),
    ({"patch_size": 2}, "patch"),
    ({"always_partition": True}, "always_partition"),
])
def test_set_input_size_refuses_what_a_config_cannot_hold_and_changes_nothing(kwargs, message):
    model = model_of(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = model.config
    with pytest.raises(SwinzooError, match=message):
        model.set_input_size(**kwargs)
    assert model.config == config
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_set_input_size_accepts_timms_spellings_of_the_current_geometry():
    model = model_of(1)
    config = model.config
    model.set_input_size(img_size=(64, 64), patch_size=(4, 4), window_size=[(4, 4)] * 4, always_partition=False)
    model.set_input_size()
    assert model.config == config


# ---------------------------------------------------------------------------------------------- attributes
@pytest.mark.parametrize("version", [1, 2])
def test_timms_model_attributes(version):
    ours = model_of(version)
    theirs = timm.create_model(ARCHS[version], pretrained=False, num_classes=5, **GEOMETRY)
    for attr in ("embed_dim", "num_layers", "in_chans", "global_pool", "output_fmt"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert ours.dynamic_img_size is True  # any input size runs (masked padding)
    assert model_of(1, ape=True).dynamic_img_size is False


@pytest.mark.parametrize("num_classes", [0, 3])
def test_reset_classifier_without_pooling_is_timms(num_classes):
    """timm's global_pool="": the head (if any) scores each token, (B, H, W, classes); "avg" pools again."""
    ours = model_of(1).eval()
    theirs = timm.create_model(ARCHS[1], pretrained=False, num_classes=5, **GEOMETRY).double().eval()
    theirs.load_state_dict(timm_format.from_canonical(ours.state_dict()), strict=True)
    ours.reset_classifier(num_classes, global_pool="")
    theirs.reset_classifier(num_classes, global_pool="")
    theirs.load_state_dict(timm_format.from_canonical(ours.state_dict()), strict=True)  # the same fresh head
    assert ours.global_pool == theirs.global_pool == ""
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert ours(x).shape == (2, 2, 2, num_classes or 192)
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-10)
        ours.reset_classifier(num_classes)  # None keeps the pooling, as timm's
        assert ours.global_pool == ""
        ours.reset_classifier(num_classes, global_pool="avg")
        assert ours(x).shape == (2, num_classes or 192)


def test_save_model_refuses_what_a_file_cannot_record(tmp_path):
    """A swinzoo file records average pooling and the final norm: a model without them would reload as another."""
    for change in (lambda m: m.reset_classifier(0, ""), lambda m: m.prune_intermediate_layers(4, prune_norm=True,
                                                                                              prune_head=False)):
        model = model_of(1)
        change(model)
        with pytest.raises(SwinzooError, match="prune_intermediate_layers"):
            save_model(model, tmp_path / "m.safetensors")
        assert not (tmp_path / "m.safetensors").exists()


# ---------------------------------------------------------------------------------------------- pruning
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("indices, prune_norm", [(1, False), ([0, 2], False), ([1], True), (4, False)])
def test_prune_intermediate_layers_is_timms(version, indices, prune_norm):
    ours = model_of(version).eval()
    theirs = timm.create_model(ARCHS[version], pretrained=False, num_classes=5, **GEOMETRY).double().eval()
    theirs.load_state_dict(timm_format.from_canonical(ours.state_dict()), strict=True)
    kept = ours.prune_intermediate_layers(indices, prune_norm=prune_norm)
    assert kept == theirs.prune_intermediate_layers(indices, prune_norm=prune_norm)
    for attr in ("num_classes", "num_features", "head_hidden_size"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        mine = ours.forward_intermediates(x, indices=indices, intermediates_only=True)
        timms = theirs.forward_intermediates(x, indices=indices, intermediates_only=True)
        assert len(mine) == len(timms)
        for a, b in zip(mine, timms):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
        for fast in (True, False):
            ours.set_fast_path(fast)
            torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-10)
            torch.testing.assert_close(ours.forward_features(x), theirs.forward_features(x), rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------- create_model
def test_create_model_takes_timms_feature_map_idiom():
    """timm's `create_model(name, num_classes=0, global_pool="")`: the token map `forward_features` returns; with a
    head, per-token logits; `dynamic_img_size=True` / `strict_img_size=False` ask for what swinzoo models always do."""
    from swinzoo import create_model

    x = torch.randn(2, 3, 80, 80)
    plain = create_model("swin_n_64", pretrained=True).eval()
    with torch.no_grad():
        tokens = plain.forward_features(x)
        maps = create_model("swin_n_64", pretrained=True, num_classes=0, global_pool="").eval()(x)
        torch.testing.assert_close(maps, tokens, rtol=0, atol=0)
        per_token = create_model("swin_n_64", pretrained=True, global_pool="", dynamic_img_size=True).eval()
        torch.testing.assert_close(per_token(x), plain.head(tokens), rtol=0, atol=0)
    assert create_model("swin_n_64", strict_img_size=False, global_pool="avg").global_pool == "avg"
    for bad, message in (({"global_pool": "max"}, "global_pool"), ({"strict_img_size": True}, "any input size"),
                         ({"dynamic_img_size": True, "ape": True}, "absolute position"),
                         ({"global_pool": "", "features_only": True}, "backbone")):
        with pytest.raises(SwinzooError, match=message):
            create_model("swin_n_64", **bad)


@pytest.mark.parametrize("out_indices, norm", [((1, 2), False), ((0, 3), True)])
def test_timms_feature_getter_wraps_a_swinzoo_model(out_indices, norm):
    """timm's `FeatureGetterNet` (its features_only wrapper for models with forward_intermediates) prunes and calls
    a swinzoo model as it does timm's: the same maps and channels."""
    from timm.models._features import FeatureGetterNet

    ours = model_of(2).eval()
    theirs = timm.create_model(ARCHS[2], pretrained=False, num_classes=5, **GEOMETRY).double().eval()
    theirs.load_state_dict(timm_format.from_canonical(ours.state_dict()), strict=True)
    mine, timms = FeatureGetterNet(ours, out_indices, norm=norm), FeatureGetterNet(theirs, out_indices, norm=norm)
    assert mine.feature_info.channels() == timms.feature_info.channels()
    assert mine.feature_info.reduction() == timms.feature_info.reduction()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(mine(x), timms(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
