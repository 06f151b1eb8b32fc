"""The dense-prediction backbone against the official detection backbone (fixtures/detection, float64 to 1e-6),
its geometry rules, `frozen_stages`, classifier -> backbone loading, and the one-line errors."""

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import swinzoo
from swinzoo import SwinConfig, SwinzooError
from swinzoo.models import SwinBackbone
from swinzoo.models.windows import PAD_MASK_VALUE, WindowPlan

from .conftest import V1, fixture_pth, run_cli

DET = Path(__file__).parent / "fixtures" / "detection" / "det_swin_tiny_w7"
DETECTOR = DET.with_suffix(".pth")
INPUTS = ("input0", "input1")  # 2x3x224x224 and 1x3x250x190 (multiples of neither patch nor window)


def expected() -> dict[str, torch.Tensor]:
    return load_file(f"{DET}.expected.safetensors")


def max_errors(model: torch.nn.Module, exp: dict[str, torch.Tensor], dtype=torch.float64) -> dict[str, float]:
    model = model.to(dtype).eval()
    errors = {}
    with torch.no_grad():
        for name in INPUTS:
            outs = model(exp[name].to(dtype))
            assert len(outs) == 4
            for i, out in enumerate(outs):
                ref = exp[f"{name}_out{i}"]
                assert out.shape == ref.shape, (name, i)
                errors[f"{name}_out{i}"] = (out.double() - ref).abs().max().item()
    return errors


def test_eight_maps_match_the_official_detection_backbone_float64():
    model = swinzoo.load_model(DETECTOR)  # an mmdet 2.x detector checkpoint, detected automatically
    assert isinstance(model, SwinBackbone) and model.config.out_indices == (0, 1, 2, 3)
    errors = max_errors(model, expected())
    assert len(errors) == 8 and max(errors.values()) < 1e-6, errors


def test_strides_and_nchw_for_any_input_size():
    model = swinzoo.create_model("swin_n_64", features_only=True, out_indices=(1, 3)).eval()
    assert model.num_features == [32, 64, 128, 256]
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 61, 130))
    # patch embedding pads to a multiple of 4, merging rounds odd sides up: ceil at every stride
    assert [tuple(o.shape) for o in outs] == [(1, 64, 8, 17), (1, 256, 2, 5)]
    assert all(o.is_contiguous() for o in outs)


def test_dense_plan_does_not_mask_padding_and_always_shifts():
    plan = WindowPlan(5, 9, 7, 3, dense=True)  # padded to 7 x 14: one window high
    assert (plan.shift_h, plan.shift_w) == (3, 3)
    assert not (plan.group_masks == PAD_MASK_VALUE).any() and set(plan.group_masks.unique().tolist()) == {0.0, -100.0}
    classifier = WindowPlan(5, 9, 7, 3)
    assert classifier.shift_h == 0 and (classifier.group_masks <= PAD_MASK_VALUE).any()


def test_detector_parts_are_dropped_and_reported(tmp_path, capsys):
    model = swinzoo.load_model(DETECTOR)
    assert model.provenance["format"] == "mmdet"
    assert model.provenance["dropped"] == ["neck.lateral_convs.0.conv.weight", "neck.lateral_convs.0.conv.bias",
                                           "rpn_head.rpn_conv.weight"]
    out = tmp_path / "det.safetensors"
    code, stdout, _ = run_cli(["convert", DETECTOR, "-o", out], capsys)
    assert code == 0
    assert "dropped 3 other keys: neck (2), rpn_head (1)" in stdout and "detection backbone" in stdout
    reloaded = swinzoo.load_model(out)  # the config (out_indices) travels in the file
    assert isinstance(reloaded, SwinBackbone) and reloaded.provenance["dropped"] == model.provenance["dropped"]
    assert reloaded.config == model.config
    assert all(torch.equal(v, reloaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_classifier_becomes_a_backbone_with_the_same_early_stages():
    """At 224/w7 stages 0-2 have the classification geometry (maps are multiples of the window, no padding), so the
    backbone's maps before its (fresh, identity) output norms are the classifier's stage outputs."""
    classifier = swinzoo.load_model(fixture_pth(V1)).double().eval()
    backbone = swinzoo.load_model(fixture_pth(V1), features_only=True).double().eval()
    notes = backbone.provenance["backbone"]
    assert any("head.weight" in n and "norm.weight" in n for n in notes)
    assert any("norm0, norm1, norm2, norm3" in n for n in notes)
    seen = []
    for stage in classifier.layers[:3]:
        stage.fast_path = False
        stage.blocks[-1].register_forward_hook(lambda m, i, o: seen.append(o))
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        classifier(x)
        outs = backbone(x)
    for i in range(3):
        ref = torch.nn.functional.layer_norm(seen[i], seen[i].shape[-1:]).permute(0, 3, 1, 2)
        torch.testing.assert_close(outs[i], ref, rtol=0, atol=1e-10)


def test_frozen_stages_as_the_official_backbone():
    model = swinzoo.load_model(DETECTOR, frozen_stages=1)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.patch_embed.named_parameters(prefix="patch_embed")}  # no stage at 1
    model.frozen_stages = 3
    model.train()
    frozen = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("layers") else "")
              for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"patch_embed", "layers.0", "layers.1"}
    assert not model.patch_embed.training and not model.layers[1].training and model.layers[2].training
    assert model.norm0.weight.requires_grad  # output norms are never frozen


def test_v2_backbone_runs_with_the_same_geometry():
    model = swinzoo.load_model("swinv2_n_64_w4", features_only=True).eval()
    assert model.config.version == 2 and model.config.pretrained_window_sizes[3] == 2  # the classifier's clamp
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 50, 70))
    assert [tuple(o.shape[2:]) for o in outs] == [(13, 18), (7, 9), (4, 5), (2, 3)]


def test_config_stays_backwards_compatible():
    cfg = SwinConfig()
    assert "out_indices" not in cfg.to_dict()  # classifier files are written as before
    assert SwinConfig.from_dict(cfg.to_dict()) == cfg
    det = cfg.replace(out_indices=[3, 1], num_classes=0)
    assert det.out_indices == (1, 3) and SwinConfig.from_json(det.to_json()) == det
    assert det.stage_window(3) == 7 and det.stage_shift(3) == 3


@pytest.mark.parametrize("call, message", [
    (lambda: swinzoo.load_model(DETECTOR, out_indices=(0, 4)), "out_indices [0, 4] out of range: this model has 4"),
    (lambda: swinzoo.load_model(DETECTOR, features_only=False), "is a detection backbone"),
    (lambda: swinzoo.load_model(fixture_pth(V1), out_indices=(1,), features_only=False), "features_only=True"),
    (lambda: swinzoo.load_model(fixture_pth(V1), frozen_stages=2), "frozen_stages applies to backbones only"),
    (lambda: swinzoo.load_model(DETECTOR, frozen_stages=7), "frozen_stages 7 out of range"),
    (lambda: swinzoo.create_model("swin_t_224", features_only=True, num_classes=10), "num_classes does not apply"),
    (lambda: swinzoo.convert(str(DETECTOR), "x.safetensors", res=384), "--res cannot be applied to a detection"),
])
def test_bad_inputs_are_one_line_errors(call, message):
    with pytest.raises(SwinzooError, match=re.escape(message)) as info:
        call()
    assert "\n" not in str(info.value)


def test_predict_on_a_backbone_says_it_is_one(tmp_path, capsys):
    from PIL import Image

    from tests.conftest import run_cli

    bb = tmp_path / "bb.safetensors"
    assert run_cli(["convert", "swin_n_64", "--features", "-o", bb], capsys)[0] == 0
    Image.new("RGB", (64, 64)).save(tmp_path / "x.png")
    code, _, err = run_cli(["predict", bb, tmp_path / "x.png"], capsys)
    assert code == 2 and "is a detection backbone" in err and "SimMIM" not in err, err
