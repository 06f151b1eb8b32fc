import pytest

from swinzoo import SwinConfig, SwinzooError
from swinzoo.config import geometry_problem, scaled_window


def test_json_roundtrip():
    cfg = SwinConfig(version=2, img_size=384, window_size=24, pretrained_window_sizes=(12, 12, 12, 6), num_classes=2,
                     class_names=["cat", "dog"])
    assert SwinConfig.from_json(cfg.to_json()) == cfg


def test_unknown_key_lists_valid_ones():
    with pytest.raises(SwinzooError, match="valid keys"):
        SwinConfig.from_dict({"img_sz": 224})


def test_official_stage_rules():
    cfg = SwinConfig(version=2, img_size=256, window_size=16)
    assert [cfg.stage_window(i) for i in range(4)] == [16, 16, 16, 8]
    assert [cfg.stage_shift(i) for i in range(4)] == [8, 8, 0, 0]
    cfg = SwinConfig(img_size=224, window_size=7)
    assert [cfg.stage_shift(i) for i in range(4)] == [3, 3, 3, 0]


def test_geometry():
    assert geometry_problem(224, 7) is None and geometry_problem(384, 12) is None
    assert "patch size" in geometry_problem(230, 7)
    assert "window 7" in geometry_problem(384, 7)


@pytest.mark.parametrize("src,res,window", [((224, 7), 384, 12), ((192, 12), 256, 16), ((192, 12), 384, 24),
                                            ((256, 8), 384, 12), ((64, 4), 128, 8)])
def test_default_window_follows_the_official_choices(src, res, window):
    assert scaled_window(SwinConfig(img_size=src[0], window_size=src[1]), res) == window


def test_class_names_must_match_classes():
    with pytest.raises(SwinzooError, match="class names"):
        SwinConfig(num_classes=3, class_names=["a"])
