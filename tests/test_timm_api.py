"""timm's model API on swinzoo's models, as a training script written for timm uses it, held against timm's own
Swin (same geometry, same weights through the timm key map, float64): head attributes and `reset_classifier`,
the optimizer groups `timm.optim.create_optimizer_v2` builds (weight decay and layer decay), `resolve_data_config`,
`feature_info`, and `forward_intermediates`."""

import pytest
import torch

import swinzoo
from swinzoo import SwinConfig, SwinTransformer, SwinzooError
from swinzoo.converters import timm as timm_format
from swinzoo.models import SwinBackbone

from .formats_helpers import SMALL, randomize

timm = pytest.importorskip("timm")
optim = pytest.importorskip("timm.optim")
timm_data = pytest.importorskip("timm.data")

ARCHS = {1: "swin_tiny_patch4_window7_224", 2: "swinv2_tiny_window8_256"}
GEOMETRY = dict(img_size=64, window_size=4, **SMALL)


def pair(version: int, num_classes: int = 5) -> tuple[SwinTransformer, torch.nn.Module]:
    """A random swinzoo model and timm's model of the same architecture holding the same weights, float64, eval."""
    ours = randomize(SwinTransformer(SwinConfig(version=version, num_classes=num_classes, **GEOMETRY)))
    theirs = timm.create_model(ARCHS[version], pretrained=False, num_classes=num_classes, **GEOMETRY)
    theirs.load_state_dict(timm_format.from_canonical(ours.state_dict()), strict=True)
    return ours.double().eval(), theirs.double().eval()


def timm_name(name: str) -> str:
    return next(iter(timm_format.from_canonical({name: torch.zeros(1)})))


def group_of_each_parameter(model: torch.nn.Module, **kwargs) -> dict[str, tuple[float, float]]:
    """Parameter name -> (weight decay, lr scale) of the AdamW timm's `create_optimizer_v2` builds for `model`."""
    names = {id(p): n for n, p in model.named_parameters()}
    opt = optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, **kwargs)
    return {names[id(p)]: (g["weight_decay"], g.get("lr_scale", 1.0)) for g in opt.param_groups for p in g["params"]}


# ---------------------------------------------------------------------------------------------- head
@pytest.mark.parametrize("version", [1, 2])
def test_head_attributes_are_timms(version):
    ours, theirs = pair(version)
    for attr in ("num_classes", "num_features", "head_hidden_size"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    head = ours.get_classifier()
    assert head is ours.head and (head.in_features, head.out_features) == (theirs.num_features, 5)


@pytest.mark.parametrize("version", [1, 2])
def test_reset_classifier_zero_gives_timms_pooled_features(version):
    ours, theirs = pair(version)
    ours.reset_classifier(0)
    theirs.reset_classifier(0)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        pooled = ours(x)
        torch.testing.assert_close(pooled, theirs(x), rtol=0, atol=1e-10)
    assert pooled.shape == (2, ours.num_features) and pooled.abs().max() > 1e-2
    assert ours.num_classes == ours.config.num_classes == 0 and isinstance(ours.get_classifier(), torch.nn.Identity)


def test_reset_classifier_travels_with_the_config(tmp_path):
    model = swinzoo.create_model("swin_n_64", pretrained=True)  # the 10 `shapes` classes, named
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    model.reset_classifier(7, global_pool="avg")  # timm's signature; "avg" is the pooling Swin has
    head = model.get_classifier()
    assert (head.out_features, head.weight.dtype) == (7, torch.float32) and torch.count_nonzero(head.bias) == 0
    assert model.config.num_classes == 7 and model.config.class_names is None  # the old names name nothing now
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    assert "reset_classifier(7)" in model.provenance["head_reset"]
    swinzoo.save_model(model, tmp_path / "m.safetensors")
    loaded = swinzoo.load_model(tmp_path / "m.safetensors")
    assert loaded.config.num_classes == 7 and torch.equal(loaded.state_dict()["head.weight"], head.weight)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in before.items())


def test_reset_classifier_keeps_device_and_dtype():
    model = swinzoo.create_model("swin_n_64").double()
    model.reset_classifier(3)
    assert model.get_classifier().weight.dtype == torch.float64


@pytest.mark.parametrize("pool", ["max", "avgmax", "token"])
def test_reset_classifier_refuses_other_pooling(pool):
    model = swinzoo.create_model("swin_n_64")
    with pytest.raises(SwinzooError, match="forward_features"):
        model.reset_classifier(3, global_pool=pool)
    assert model.num_classes == model.config.num_classes == 10  # nothing half-changed
    with pytest.raises(SwinzooError, match="num_classes"):
        model.reset_classifier(-1)


# ---------------------------------------------------------------------------------------------- optimizer
@pytest.mark.parametrize("version", [1, 2])
def test_create_optimizer_v2_splits_weight_decay_as_for_timms_model(version):
    ours, theirs = pair(version)
    mine, timms = group_of_each_parameter(ours), group_of_each_parameter(theirs)
    assert {timm_name(n): g for n, g in mine.items()} == timms
    no_decay = {n for n, (wd, _) in mine.items() if wd == 0}
    table = "layers.0.blocks.0.attn." + ("relative_position_bias_table" if version == 1 else "cpb_mlp.0.weight")
    assert table in no_decay and "layers.0.blocks.0.attn.qkv.weight" not in no_decay


def test_no_weight_decay_is_the_official_split_with_an_absolute_position_embedding():
    """timm's Swin has no `ape`; the official recipe leaves it undecayed, as swinzoo's own trainer does."""
    from swinzoo.train.optim import param_groups

    model = SwinTransformer(SwinConfig(ape=True, num_classes=3, **GEOMETRY))
    assert "absolute_pos_embed" in model.no_weight_decay()
    official = {n for g in param_groups(model, 1e-3, 0.05) if g["weight_decay"] == 0 for n in g["names"]}
    assert {n for n, (wd, _) in group_of_each_parameter(model).items() if wd == 0} == official


@pytest.mark.parametrize("version", [1, 2])
def test_layer_decay_gives_each_parameter_timms_lr_scale(version):
    """timm puts patch merging at the start of the next stage (swinzoo: the end of its own): `group_matcher` puts
    it in the same layer as timm does, so every parameter gets the lr scale it gets in timm's model."""
    ours, theirs = pair(version)
    mine, timms = group_of_each_parameter(ours, layer_decay=0.9), group_of_each_parameter(theirs, layer_decay=0.9)
    assert {timm_name(n): g for n, g in mine.items()} == timms
    scales = sorted({s for _, s in mine.values()})
    assert len(scales) == sum(SMALL["depths"]) + 2  # stem, one per block (merging and final norm share), head


@pytest.mark.parametrize("coarse", [False, True])
def test_group_matcher_groups_as_timms(coarse):
    from timm.models import group_parameters

    ours, theirs = pair(2)
    mine = group_parameters(ours, ours.group_matcher(coarse=coarse), reverse=True)
    timms = group_parameters(theirs, theirs.group_matcher(coarse=coarse), reverse=True)
    assert {timm_name(n): g for n, g in mine.items()} == timms


# ---------------------------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("config", [
    SwinConfig(num_classes=3, **GEOMETRY),  # center crop 0.875
    SwinConfig(version=2, num_classes=3, **{**GEOMETRY, "img_size": 256, "window_size": 8}),
    SwinConfig(num_classes=3, **{**GEOMETRY, "img_size": 384, "window_size": 12}),  # official: squash, no crop
    SwinConfig(num_classes=3, preprocess={"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear"},
               **GEOMETRY),
])
def test_resolve_data_config_is_swinzoos_eval_preprocessing(config):
    model = SwinTransformer(config)
    assert timm_data.resolve_data_config({}, model=model) == swinzoo.data_config(model)
    assert timm_data.resolve_model_data_config(model) == swinzoo.data_config(model)
    assert model.default_cfg == model.pretrained_cfg and model.pretrained_cfg["num_classes"] == 3


def test_backbone_data_config_and_optimizer():
    backbone = swinzoo.create_model("swinv2_n_64_w4", features_only=True)
    assert timm_data.resolve_model_data_config(backbone) == swinzoo.data_config(backbone)
    no_decay = {n for n, (wd, _) in group_of_each_parameter(backbone).items() if wd == 0}
    assert "layers.0.blocks.0.attn.cpb_mlp.0.weight" in no_decay and "norm0.weight" in no_decay


# ---------------------------------------------------------------------------------------------- features
@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3), (1, 3)])
def test_backbone_feature_info_matches_timms_features_only(out_indices):
    backbone = SwinBackbone(SwinConfig(num_classes=0, out_indices=out_indices, **GEOMETRY)).eval()
    theirs = timm.create_model(ARCHS[1], pretrained=False, features_only=True, out_indices=out_indices, **GEOMETRY)
    info = backbone.feature_info
    assert info.channels() == theirs.feature_info.channels()
    assert info.reduction() == theirs.feature_info.reduction()
    assert len(info) == len(theirs.feature_info) == 4 and info.out_indices == out_indices
    assert info.channels(2) == 96 and info.reduction([0, 1]) == [4, 8] and info[1]["num_chs"] == 48
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 64, 96))
    assert [m.shape[1] for m in maps] == info.channels()
    assert [96 // m.shape[3] for m in maps] == info.reduction()
    modules = dict(backbone.named_modules())
    assert all(name in modules for name in info.module_name())


# ---------------------------------------------------------------------------------------------- intermediates
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("kwargs", [{}, {"indices": 2}, {"indices": [0, -1], "norm": True},
                                    {"indices": [1], "stop_early": True}, {"intermediates_only": True, "norm": True}])
def test_forward_intermediates_are_timms(version, kwargs):
    ours, theirs = pair(version)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        mine, timms = ours.forward_intermediates(x, **kwargs), theirs.forward_intermediates(x, **kwargs)
    if not kwargs.get("intermediates_only"):
        (final, mine), (timm_final, timms) = mine, timms
        torch.testing.assert_close(final, timm_final, rtol=0, atol=1e-10)
    assert len(mine) == len(timms) > 0
    for a, b in zip(mine, timms):
        assert a.shape == b.shape and a.is_contiguous()
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
        assert b.abs().max() > 1e-2


def test_forward_intermediates_are_the_stage_outputs_at_any_size():
    """Each intermediate is its stage's last block output (`feature_info` names it), masked-padding numerics
    at a size that is not the configured one; the final one is `forward_features`; grad checkpointing changes
    nothing; NHWC skips the permute."""
    model = randomize(SwinTransformer(SwinConfig(num_classes=3, **GEOMETRY))).double().eval()
    assert [d["num_chs"] for d in model.feature_info] == [24, 48, 96, 192]
    assert [d["reduction"] for d in model.feature_info] == [4, 8, 16, 32]
    seen = []
    modules = dict(model.named_modules())
    hooks = [modules[d["module"]].register_forward_hook(lambda m, i, o: seen.append(o)) for d in model.feature_info]
    x = torch.randn(2, 3, 61, 90, dtype=torch.float64)
    with torch.no_grad():
        features = model.forward_features(x)
        for h in hooks:
            h.remove()
        final, maps = model.forward_intermediates(x, norm=True)
        model.set_grad_checkpointing(True)
        nhwc = model.forward_intermediates(x, output_fmt="NHWC", intermediates_only=True)
    assert [m.shape for m in maps] == [(2, 24, 16, 23), (2, 48, 8, 12), (2, 96, 4, 6), (2, 192, 2, 3)]
    torch.testing.assert_close(final, features, rtol=0, atol=0)
    torch.testing.assert_close(maps[-1], features.permute(0, 3, 1, 2), rtol=0, atol=0)
    for m, hooked, n in zip(maps[:-1], seen, nhwc):
        torch.testing.assert_close(m, hooked.permute(0, 3, 1, 2), rtol=0, atol=1e-12)
        torch.testing.assert_close(n, hooked, rtol=0, atol=1e-12)
    with pytest.raises(SwinzooError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NLC")
    with pytest.raises(SwinzooError, match="out of range"):
        model.forward_intermediates(x, indices=[4])
