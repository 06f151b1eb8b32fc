"""OpenMMLab checkpoints: the OpenMMLab 3.x key layout (stages / w_msa / ffn, nn.Unfold merge order) built from the
detection fixture reproduces the official maps; V2 and mmpretrain classifiers convert; the format is detected."""

from pathlib import Path

import torch
from safetensors.torch import load_file

import swinzoo
from swinzoo import converters
from swinzoo.converters.mmdet import to_openmmlab
from swinzoo.models import SwinBackbone
from swinzoo.models.layers import PatchMerging

DET = Path(__file__).parent / "fixtures" / "detection" / "det_swin_tiny_w7"


def openmmlab_detector(path: Path) -> Path:
    """The fixture detector re-saved as mmdet 3.x saves it (buffers included, renamed like the parameters)."""
    raw = torch.load(DET.with_suffix(".pth"), weights_only=True)
    backbone = {k[len("backbone."):]: v for k, v in raw["state_dict"].items() if k.startswith("backbone.")}
    rest = {k: v for k, v in raw["state_dict"].items() if not k.startswith("backbone.")}
    sd = {**{f"backbone.{k}": v for k, v in to_openmmlab(backbone).items()}, **rest}
    assert "backbone.stages.0.blocks.0.attn.w_msa.relative_position_index" in sd
    assert "backbone.stages.3.blocks.1.ffn.layers.0.0.weight" in sd and "backbone.stages.2.downsample.norm.bias" in sd
    torch.save({"meta": {"mmdet_version": "3.3.0"}, "state_dict": sd}, path)
    return path


def test_openmmlab3_layout_reproduces_the_eight_maps(tmp_path):
    model = swinzoo.load_model(openmmlab_detector(tmp_path / "mmdet3.pth")).double().eval()
    assert isinstance(model, SwinBackbone) and model.provenance["layout"] == "OpenMMLab 3.x"
    assert len(model.provenance["dropped"]) == 3
    exp = load_file(f"{DET}.expected.safetensors")
    with torch.no_grad():
        for name in ("input0", "input1"):
            for i, out in enumerate(model(exp[name].double())):
                torch.testing.assert_close(out, exp[f"{name}_out{i}"], rtol=0, atol=1e-6)


def test_unfold_merge_order_is_undone():
    """An Unfold-based merge (mmcv's PatchMerging) with the 3.x weights equals the official merge with the
    converted ones: the permutation is checked against the operation, not only against its own inverse."""
    c = 5
    official = PatchMerging(c, post_norm=False).double()
    for p in official.parameters():
        torch.nn.init.normal_(p)
    mm = to_openmmlab({f"layers.0.downsample.{k}": v for k, v in official.state_dict().items()})
    x = torch.randn(2, 6, 8, c, dtype=torch.float64)
    cols = torch.nn.Unfold(kernel_size=2, stride=2)(x.permute(0, 3, 1, 2)).transpose(1, 2)  # (B, L, 4C) channel-major
    norm = torch.nn.functional.layer_norm(cols, (4 * c,), mm["stages.0.downsample.norm.weight"],
                                          mm["stages.0.downsample.norm.bias"])
    expected = (norm @ mm["stages.0.downsample.reduction.weight"].t()).view(2, 3, 4, 2 * c)
    torch.testing.assert_close(official(x), expected)


def test_v2_backbone_round_trips_through_the_openmmlab_layout(tmp_path):
    model = swinzoo.load_model("swinv2_n_64_w4", features_only=True).eval()
    buffers = {k: v for k, v in model.named_buffers() if k.endswith(("relative_coords_table", "position_index"))}
    sd = to_openmmlab({**model.state_dict(), **buffers}, version=2)  # mmpretrain persists both buffers
    assert "stages.1.downsample.reduction.weight" in sd and "stages.0.downsample.norm.weight" not in sd
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in sd.items()}}, tmp_path / "v2.pth")
    loaded = swinzoo.load_model(tmp_path / "v2.pth", features_only=True).eval()
    assert loaded.config.version == 2
    x = torch.randn(1, 3, 40, 52)
    with torch.no_grad():
        for a, b in zip(model(x), loaded(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_mmpretrain_classifier_keeps_its_backbone(tmp_path):
    """An mmpretrain ImageClassifier: `backbone.*` with `norm3` (version >= 2) or `norm` (older), `head.fc.*`."""
    model = swinzoo.load_model("swin_n_64", features_only=True, out_indices=(3,)).eval()
    sd = {f"backbone.{k}": v for k, v in to_openmmlab(model.state_dict()).items()}
    for p in ("weight", "bias"):  # mmpretrain before version 2 kept the classifier's name
        sd[f"backbone.norm.{p}"] = sd.pop(f"backbone.norm3.{p}")
    sd["head.fc.weight"], sd["head.fc.bias"] = torch.zeros(10, 256), torch.zeros(10)
    torch.save({"state_dict": sd}, tmp_path / "cls.pth")
    fmt, _ = converters.detect(tmp_path / "cls.pth")
    assert fmt.name == "mmdet"
    loaded = swinzoo.load_model(tmp_path / "cls.pth")
    assert loaded.config.out_indices == (3,) and loaded.provenance["dropped"] == ["head.fc.weight", "head.fc.bias"]
    assert torch.equal(loaded.norm3.weight, model.norm3.weight)
