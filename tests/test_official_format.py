"""converters.official: detection from the file alone, and export back with the official buffers."""

import torch

from swinzoo import SwinConfig, SwinTransformer, load_model, save_model
from swinzoo.converters.native import read as read_checkpoint
from swinzoo.converters.official import detect_config, from_official, read_official, to_official

from .conftest import V1, V2, fixture_pth

TINY = dict(embed_dim=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))


def test_detects_fixture_architectures():
    v1 = detect_config(read_official(fixture_pth(V1)))
    assert v1 == SwinConfig(version=1, img_size=224, window_size=7, num_classes=10, **TINY)
    v2 = detect_config(read_official(fixture_pth(V2)))
    assert v2 == SwinConfig(version=2, img_size=256, window_size=8, num_classes=10, **TINY)


def test_export_reproduces_the_official_file_exactly():
    """Buffers included: our index, shift masks and log-spaced tables equal the official ones bit for bit."""
    for name in (V1, V2):
        original = read_official(fixture_pth(name))
        sd, cfg = from_official(original)
        exported = to_official(sd, cfg)["model"]
        assert list(exported) == list(original)
        for key, value in original.items():
            # the fixtures store the index as float32; released official files (and our export) keep it int64
            if key.endswith("relative_position_index"):
                assert exported[key].dtype == torch.int64
            else:
                assert exported[key].dtype == value.dtype, key
            assert torch.equal(exported[key].to(value.dtype), value), key


def test_detects_v2_pretrained_windows_and_clamped_stages():
    cfg = SwinConfig(version=2, img_size=256, window_size=16, pretrained_window_sizes=(12, 12, 12, 6), **TINY)
    sd = to_official(SwinTransformer(cfg).state_dict(), cfg)["model"]
    assert detect_config(sd) == cfg
    assert "layers.2.blocks.1.attn_mask" not in sd  # stage 2 is one 16x16 window: no shift, no mask


def test_detects_resolution_from_masks_at_384():
    cfg = SwinConfig(version=1, img_size=384, window_size=12, **TINY)
    sd = to_official(SwinTransformer(cfg).state_dict(), cfg)["model"]
    assert detect_config(sd) == cfg


def test_ddp_prefix_and_state_dict_wrapper():
    original = read_official(fixture_pth(V1))
    wrapped = {"state_dict": {f"module.{k}": v for k, v in original.items()}}
    from swinzoo.converters.common import unwrap

    assert list(unwrap(wrapped)) == list(original)


def test_save_load_roundtrip(tmp_path):
    cfg = SwinConfig(version=2, img_size=64, window_size=4, num_classes=3, class_names=["a", "b", "c"], **TINY)
    model = SwinTransformer(cfg).eval()
    path = save_model(model, tmp_path / "m.safetensors", provenance={"source": "test"})
    loaded = load_model(path).eval()
    assert loaded.config == cfg and loaded.provenance == {"source": "test"}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    _, cfg2, _ = read_checkpoint(path)
    assert cfg2.class_names == ["a", "b", "c"]


def test_checkpoint_is_plain_safetensors(tmp_path):
    from safetensors import safe_open

    cfg = SwinConfig(version=1, img_size=64, window_size=4, num_classes=2, **TINY)
    path = save_model(SwinTransformer(cfg), tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert meta["format"] == "pt" and SwinConfig.from_json(meta["swinzoo_config"]) == cfg
        assert "layers.0.blocks.0.attn.relative_position_bias_table" in set(f.keys())
        assert not any(k.endswith(("relative_position_index", "attn_mask")) for k in f.keys())
