"""torchvision <-> swinzoo: real torchvision models (random weights), float64 to 1e-6, both directions."""

import pytest
import torch

from swinzoo import SwinConfig, SwinTransformer, SwinzooError
from swinzoo.converters import torchvision as tv_format
from swinzoo.sources import read_checkpoint
from swinzoo.zoo import zoo_config

from .formats_helpers import SMALL, assert_logits_close, randomize

tv = pytest.importorskip("torchvision.models.swin_transformer")


def tv_model(version: int):
    """swin_t / swin_v2_t style with small widths: window 4 at 128 px, so every stage is whole windows."""
    extra = dict(block=tv.SwinTransformerBlockV2, downsample_layer=tv.PatchMergingV2) if version == 2 else {}
    model = tv.SwinTransformer(patch_size=[4, 4], embed_dim=24, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
                               window_size=[4, 4], num_classes=5, **extra)
    return randomize(model).double().eval()


@pytest.mark.parametrize("version", [1, 2])
def test_torchvision_to_swinzoo(version, tmp_path):
    model = tv_model(version)
    torch.save(model.state_dict(), tmp_path / "tv.pth")
    source = read_checkpoint(str(tmp_path / "tv.pth"))
    assert source.provenance["format"] == "torchvision"
    cfg = source.config
    assert (cfg.version, cfg.img_size, cfg.window_size, cfg.num_classes) == (version, 128, 4, 5)
    assert cfg.pretrained_window_sizes == (0, 0, 0, 0)
    ours = SwinTransformer(cfg).double().eval()
    ours.load_state_dict(source.state_dict, strict=True)
    x = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        assert_logits_close(ours(x), model(x))


@pytest.mark.parametrize("version", [1, 2])
def test_swinzoo_to_torchvision_strict(version):
    cfg = SwinConfig(version=version, img_size=128, window_size=4, num_classes=5, **SMALL)
    ours = randomize(SwinTransformer(cfg)).double().eval()
    theirs = tv_format.build_model(cfg)
    theirs.load_state_dict(tv_format.from_canonical(ours.state_dict(), cfg), strict=True)
    theirs = theirs.double().eval()
    x = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        assert_logits_close(ours(x), theirs(x))


@pytest.mark.parametrize("name,builder", [("swin_t_224", "swin_t"), ("swinv2_t_256_w8", "swin_v2_t")])
def test_zoo_export_loads_into_the_torchvision_builder(name, builder):
    """The real builders (no weights downloaded) take the export strictly, buffers included."""
    import torchvision

    cfg = zoo_config(name)
    with torch.device("meta"):
        sd = SwinTransformer(cfg).state_dict()
    exported = tv_format.from_canonical({k: torch.zeros(v.shape) for k, v in sd.items()}, cfg)
    model = getattr(torchvision.models, builder)(num_classes=1000)
    model.load_state_dict(exported, strict=True)
    assert torch.equal(model.state_dict()["features.1.0.attn.relative_position_index"],
                       exported["features.1.0.attn.relative_position_index"])
    if cfg.version == 2:
        torch.testing.assert_close(model.state_dict()["features.1.0.attn.relative_coords_table"],
                                   exported["features.1.0.attn.relative_coords_table"], rtol=0, atol=0)


def test_v2_pretrained_windows_change_numerics():
    """torchvision has no pretrained window: exact export refused, --allow-numeric-change warns."""
    cfg = SwinConfig(version=2, img_size=128, window_size=4, pretrained_window_sizes=(8, 8, 8, 8), **SMALL)
    sd = SwinTransformer(cfg).state_dict()
    with pytest.raises(SwinzooError, match="pretrained_window_sizes.*--allow-numeric-change"):
        tv_format.from_canonical(sd, cfg)
    with pytest.warns(UserWarning, match="changes this model's numerics"):
        tv_format.from_canonical(sd, cfg, allow_numeric_change=True)


def test_padding_geometry_is_refused():
    cfg = SwinConfig(version=1, img_size=64, window_size=4, **SMALL)  # last stage 2x2: torchvision would pad
    with pytest.raises(SwinzooError, match="not a whole number of 4-windows"):
        tv_format.from_canonical(SwinTransformer(cfg).state_dict(), cfg)


@pytest.mark.parametrize("version", [1, 2])
def test_printed_call_builds_the_model_as_printed(version, tmp_path):
    """`export --to torchvision` prints the constructor call; pasted after `import torchvision` it must build the
    model that takes the file strictly (V2's block and merging classes qualified like the constructor)."""
    import torchvision  # noqa: F401  (the namespace the printed call is evaluated in)

    from swinzoo.converters import Checkpoint

    cfg = SwinConfig(version=version, img_size=128, window_size=4, num_classes=5, **SMALL)
    ours = randomize(SwinTransformer(cfg)).double().eval()
    call = tv_format.write(Checkpoint(ours.state_dict(), cfg, {}), tmp_path / "tv.pth")
    theirs = eval(call, {"torchvision": torchvision})
    theirs.load_state_dict(torch.load(tmp_path / "tv.pth", weights_only=True), strict=True)
    x = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        assert_logits_close(ours(x), theirs.double().eval()(x))


@pytest.mark.parametrize("version", [1, 2])
def test_a_model_without_qkv_bias_exports_with_zero_biases(version):
    """torchvision's attention always has a qkv bias; zeros compute exactly what no bias does, so V1 exports as V2
    already did instead of being refused."""
    cfg = SwinConfig(version=version, img_size=128, window_size=4, num_classes=5, qkv_bias=False, **SMALL)
    ours = randomize(SwinTransformer(cfg)).double().eval()
    theirs = tv_format.build_model(cfg)
    theirs.load_state_dict(tv_format.from_canonical(ours.state_dict(), cfg), strict=True)
    x = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        assert_logits_close(ours(x), theirs.double().eval()(x))
