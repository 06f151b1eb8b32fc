"""transformers (whichever is installed: 4.x by the test extra, 5.x in CI's last phase) <-> swinzoo, float64 to 1e-6,
both directions."""

import json

import pytest
import torch

from swinzoo import SwinConfig, SwinTransformer
from swinzoo.converters import hf
from swinzoo.sources import read_checkpoint

from .formats_helpers import SMALL, assert_logits_close, randomize

transformers = pytest.importorskip("transformers")
# 128 px, window 4: every stage (32, 16, 8, 4) is at least one window, which transformers' V1 needs
GEOMETRY = dict(image_size=128, patch_size=4, embed_dim=24, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
                window_size=4, num_labels=5)


def hf_model(version: int, **extra):
    if version == 2:
        model = transformers.Swinv2ForImageClassification(transformers.Swinv2Config(**GEOMETRY, **extra))
    else:
        model = transformers.SwinForImageClassification(transformers.SwinConfig(**GEOMETRY, **extra))
    return randomize(model).double().eval()


@pytest.mark.parametrize("version,extra,safe", [
    (1, {}, True), (1, {"id2label": {i: f"c{i}" for i in range(5)}}, False), (2, {}, True),
    (2, {"pretrained_window_sizes": [6, 6, 6, 3]}, True),
])
def test_hf_folder_to_swinzoo(version, extra, safe, tmp_path):
    model = hf_model(version, **extra)
    model.save_pretrained(tmp_path / "m", safe_serialization=safe)
    source = read_checkpoint(str(tmp_path / "m"))
    assert source.provenance["format"] == "hf"
    cfg = source.config
    assert (cfg.version, cfg.img_size, cfg.window_size, cfg.num_classes) == (version, 128, 4, 5)
    if "id2label" in extra:
        assert cfg.class_names == [f"c{i}" for i in range(5)]
    if "pretrained_window_sizes" in extra:
        assert cfg.pretrained_window_sizes == (6, 6, 6, 3)
    ours = SwinTransformer(cfg).double().eval()
    ours.load_state_dict(source.state_dict, strict=True)
    x = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        assert_logits_close(ours(x), model(x).logits)


@pytest.mark.parametrize("version,pws", [(1, (0, 0, 0, 0)), (2, (0, 0, 0, 0)), (2, (8, 8, 8, 2))])
def test_swinzoo_to_hf_from_pretrained(version, pws, tmp_path):
    """write_hf_folder -> AutoModelForImageClassification.from_pretrained -> same logits (no missing keys)."""
    cfg = SwinConfig(version=version, img_size=128, window_size=4, num_classes=5, pretrained_window_sizes=pws,
                     **SMALL)
    ours = randomize(SwinTransformer(cfg)).double().eval()
    out = hf.write_hf_folder(ours.state_dict(), cfg, tmp_path / "hf")
    theirs, info = transformers.AutoModelForImageClassification.from_pretrained(out, output_loading_info=True)
    # lists in transformers 4.x, sets in 5.x
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    theirs = theirs.double().eval()
    x = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        assert_logits_close(ours(x), theirs(x).logits)
    assert read_checkpoint(str(out)).config == cfg
    processor = json.loads((out / "preprocessor_config.json").read_text())  # the official crop: see test_preprocess
    assert processor["size"] == {"shortest_edge": 128} and processor["crop_pct"] == 0.875


@pytest.mark.parametrize("version", [1, 2])
def test_headless_swin_model(version, tmp_path):
    """A SwinModel / Swinv2Model (no classifier, no `swin.` prefix) reads as a headless canonical state dict whose
    pooled features are transformers' pooler_output."""
    hf_config = (transformers.Swinv2Config if version == 2 else transformers.SwinConfig)(**GEOMETRY)
    model = (transformers.Swinv2Model if version == 2 else transformers.SwinModel)(hf_config)
    model = randomize(model).double().eval()
    model.save_pretrained(tmp_path / "m")
    source = read_checkpoint(str(tmp_path / "m"))
    assert source.config.num_classes == 0 and "head.weight" not in source.state_dict
    ours = SwinTransformer(source.config).double().eval()
    ours.load_state_dict(source.state_dict, strict=True)
    x = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        assert_logits_close(ours(x), model(x).pooler_output)  # no head: the pooled, normed features


def test_v1_stage_smaller_than_window_is_refused():
    from swinzoo.errors import SwinzooError

    cfg = SwinConfig(version=1, img_size=64, window_size=4, **SMALL)  # last stage 2x2 < window 4
    with pytest.raises(SwinzooError, match="smaller than that"):
        hf.config_to_hf(cfg)
