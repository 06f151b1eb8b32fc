"""A backbone from any classification source at a new window (`load_model(..., features_only=True, window=W)`), as the
official detection loader makes one; and a backbone exported back to the official classification layout or the
mmdet 2.x layout, checked against the official loader's steps and by reading it back."""

import math
import re

import pytest
import torch
import torch.nn.functional as F

import swinzoo
from swinzoo import SwinConfig, SwinzooError, converters
from swinzoo.converters import Checkpoint
from swinzoo.converters.dense import to_backbone
from swinzoo.models import SwinBackbone, SwinTransformer
from swinzoo.sources import read_checkpoint

from .conftest import run_cli

FP16 = dict(rtol=2e-3, atol=1e-5)  # one float16 rounding of the same value
X = torch.randn(2, 3, 45, 37, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def bicubic_table(table: torch.Tensor, window: int) -> torch.Tensor:
    """The official detection loader's resize of a ((2w-1)^2, heads) table: bicubic on the (heads, S, S) grid, here
    in float64 (the nano weights are float16; the backbone holds the float32 result rounded to the source's dtype)."""
    side, heads = math.isqrt(table.shape[0]), table.shape[1]
    grid = table.double().t().reshape(1, heads, side, side)
    size = 2 * window - 1
    return F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False).reshape(heads, -1).t()


def official_index(window: int) -> torch.Tensor:
    """The official relative_position_index buffer, written out with plain loops."""
    n = window * window
    index = torch.empty(n, n, dtype=torch.long)
    for a in range(n):
        for b in range(n):
            dh, dw = a // window - b // window, a % window - b % window
            index[a, b] = (dh + window - 1) * (2 * window - 1) + (dw + window - 1)
    return index


def ape_classifier(tmp_path) -> tuple[Checkpoint, str]:
    """A small V1 classifier with an absolute position embedding (no zoo model has one), as a swinzoo file."""
    cfg = SwinConfig(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, ape=True,
                     pretrained_window_sizes=(0, 0), num_classes=5)
    model = SwinTransformer(cfg)
    sd = {k: v + 0.01 * torch.randn_like(v) for k, v in model.state_dict().items()}  # no ones / zeros left
    checkpoint = Checkpoint(sd, cfg, {"source": "test"})
    path = tmp_path / "ape.safetensors"
    converters.write(checkpoint, "swinzoo", path)
    return checkpoint, str(path)


def outputs(model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model.double().eval()(X)


def assert_same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for x, y in zip(outputs(a), outputs(b), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------- window
def test_v1_window_resizes_every_bias_table_bicubically():
    source = read_checkpoint("swin_n_64").state_dict  # window 4; stage 3 (2x2 map) clamped to 2 by the classifier
    model = swinzoo.load_model("swin_n_64", features_only=True, window=6)
    assert model.config.window_size == 6 and model.config.out_indices == (0, 1, 2, 3)
    tables = {k: v for k, v in model.state_dict().items() if k.endswith("relative_position_bias_table")}
    assert source["layers.3.blocks.0.attn.relative_position_bias_table"].shape == (9, 8)
    assert len(tables) == 8
    for key, table in tables.items():
        torch.testing.assert_close(table.double(), bicubic_table(source[key], 6), **FP16)
    assert [tuple(o.shape[2:]) for o in outputs(model)] == [(12, 10), (6, 5), (3, 3), (2, 2)]
    direct = swinzoo.create_model("swin_n_64", pretrained=True, features_only=True, window_size=6)
    assert all(torch.equal(v, direct.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_backbone_moves_to_a_new_window_too():
    backbone, _ = to_backbone(read_checkpoint("swin_n_64"))
    moved, notes = to_backbone(backbone, window=3)
    key = "layers.2.blocks.1.attn.relative_position_bias_table"
    torch.testing.assert_close(moved.state_dict[key].double(), bicubic_table(backbone.state_dict[key], 3), **FP16)
    assert "window 4 -> 3" in notes and any(key in n and "bicubically" in n for n in notes)


def test_v2_window_keeps_the_cpb_mlp_and_the_source_normalisation():
    source = read_checkpoint("swinv2_n_64_w4").state_dict
    model = swinzoo.load_model("swinv2_n_64_w4", features_only=True, window=6)
    # the classifier's windows: 4, clamped to the 16, 8, 4, 2 token maps
    assert model.config.pretrained_window_sizes == tuple(min(4, 16 // 2**i) for i in range(4))
    sd = model.state_dict()
    kept = [k for k in source if not k.startswith(("head.", "norm."))]
    assert all(torch.equal(sd[k], source[k]) for k in kept)
    assert any("cpb_mlp" in k for k in kept)
    # the official log-spaced coordinates: offset (w-1) of window 6 normalised by the pretrained window 4
    top = model.layers[0].blocks[0].attn.relative_coords_table.max().item()
    assert top == pytest.approx(math.log2(8 * 5 / 3 + 1) / 3, rel=1e-6)
    again, _ = to_backbone(to_backbone(read_checkpoint("swinv2_n_64_w4"), window=6)[0], window=8)
    assert again.config.pretrained_window_sizes == (4, 4, 4, 2)
    assert len(outputs(model)) == 4


def test_output_norms_start_fresh_and_ape_becomes_nchw(tmp_path):
    checkpoint, path = ape_classifier(tmp_path)
    model = swinzoo.load_model(path, features_only=True, window=3)
    for i, width in enumerate((16, 32)):
        assert torch.equal(getattr(model, f"norm{i}").weight, torch.ones(width))
        assert torch.equal(getattr(model, f"norm{i}").bias, torch.zeros(width))
    ape, src = model.absolute_pos_embed, checkpoint.state_dict["absolute_pos_embed"]
    assert ape.shape == (1, 16, 8, 8)
    for h, w, c in ((0, 0, 0), (2, 5, 7), (7, 1, 15), (7, 7, 3)):  # token h * 8 + w of the (1, L, C) grid
        assert ape[0, c, h, w] == src[0, h * 8 + w, c]
    assert len(outputs(model)) == 2


# ---------------------------------------------------------------------------------------------- export
def official_detection_load(obj: dict, target: dict[str, torch.Tensor]) -> tuple[dict, set, set]:
    """The official detection code's load_checkpoint on a classification file, step by step: (what it loads,
    missing keys, unexpected keys) against `target`, the detection backbone's state dict."""
    sd = obj["state_dict"] if "state_dict" in obj else obj.get("model", obj)
    if next(iter(sd)).startswith("module."):
        sd = {k[7:]: v for k, v in sd.items()}
    sd = dict(sd)
    pos = sd.get("absolute_pos_embed")
    if pos is not None:
        n, length, c = pos.size()
        _, c2, h, w = target["absolute_pos_embed"].size()
        if n == 1 and c == c2 and length == h * w:
            sd["absolute_pos_embed"] = pos.view(1, h, w, c).permute(0, 3, 1, 2)
    for key in [k for k in sd if "relative_position_bias_table" in k]:
        if sd[key].shape[0] != target[key].shape[0]:
            sd[key] = bicubic_table(sd[key], (math.isqrt(target[key].shape[0]) + 1) // 2)
    loaded = {k: v for k, v in sd.items() if k in target and v.shape == target[k].shape}
    return loaded, set(target) - set(sd), set(sd) - set(target)


def test_official_export_is_what_the_official_detection_loader_takes(tmp_path, capsys):
    _, path = ape_classifier(tmp_path)
    backbone = swinzoo.load_model(path, features_only=True, window=3)
    src = tmp_path / "det.safetensors"
    converters.write(Checkpoint(backbone.state_dict(), backbone.config), "swinzoo", src)
    out = tmp_path / "backbone.pth"
    code, stdout, _ = run_cli(["export", src, "--to", "official", "-o", out], capsys)
    assert code == 0 and "pretrained=" in stdout
    obj = torch.load(out, weights_only=True)
    assert list(obj) == ["model"]
    sd = obj["model"]
    indices = {f"layers.{i}.blocks.{j}.attn.relative_position_index" for i in range(2) for j in range(2)}
    assert set(sd) == set(backbone.state_dict()) | indices  # the official detection backbone's keys
    assert not any(k.endswith("attn_mask") or k.startswith(("head.", "norm.")) for k in sd)
    assert all(torch.equal(sd[k], official_index(3)) for k in indices)
    assert sd["absolute_pos_embed"].shape == (1, 64, 16)
    params = [k for k in sd if k not in indices]
    assert params == list(backbone.state_dict())  # the official order: patch_embed, ape, layers, norm{i}

    target = {**backbone.state_dict(), **{k: official_index(3) for k in indices}}
    loaded, missing, unexpected = official_detection_load(obj, target)
    assert missing == set() and unexpected == set() and set(loaded) == set(target)
    detector = SwinBackbone(backbone.config)
    detector.load_state_dict({k: v for k, v in loaded.items() if k not in indices})
    assert_same_outputs(detector, backbone)


def test_a_classifier_file_is_what_the_official_loader_resizes_for_a_new_window(tmp_path):
    """The official loader starting a window-6 backbone from the nano classifier gives what window=6 gives."""
    out = tmp_path / "cls.pth"
    converters.write(read_checkpoint("swin_n_64"), "official", out)
    obj = torch.load(out, weights_only=True)
    model = swinzoo.load_model("swin_n_64", features_only=True, window=6)
    target = {**model.state_dict(), **{f"layers.{i}.blocks.{j}.attn.relative_position_index": official_index(6)
                                       for i in range(4) for j in range(2)}}
    loaded, missing, unexpected = official_detection_load(obj, target)
    assert missing == {f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias")}  # fresh in both
    assert unexpected == {"head.weight", "head.bias", "norm.weight", "norm.bias"} | {
        k for k in obj["model"] if k.endswith("attn_mask")}
    for key, value in loaded.items():
        if not key.endswith("index"):
            torch.testing.assert_close(value.double(), model.state_dict()[key].double(), **FP16)


@pytest.mark.parametrize("fmt", ["official", "mmdet"])
@pytest.mark.parametrize("name", ["ape", "swinv2_n_64_w4"])
def test_backbone_round_trips(tmp_path, capsys, fmt, name):
    path = ape_classifier(tmp_path)[1] if name == "ape" else name
    backbone = swinzoo.load_model(path, features_only=True, window=6)
    src = tmp_path / "det.safetensors"
    converters.write(Checkpoint(backbone.state_dict(), backbone.config), "swinzoo", src)
    out = tmp_path / f"{fmt}.pth"
    code, _, _ = run_cli(["export", src, "--to", fmt, "-o", out], capsys)
    assert code == 0
    obj = torch.load(out, weights_only=True)
    if fmt == "mmdet":
        assert obj["meta"]["swinzoo"]["config"]["window_size"] == 6
        assert all(k.startswith("backbone.") for k in obj["state_dict"])
        assert not any(k.endswith("attn_mask") for k in obj["state_dict"])
        if name == "ape":
            assert obj["state_dict"]["backbone.absolute_pos_embed"].shape == (1, 16, 8, 8)
        else:
            assert "backbone.layers.0.blocks.0.attn.relative_coords_table" in obj["state_dict"]
    loaded = swinzoo.load_model(out)
    assert isinstance(loaded, SwinBackbone) and loaded.config.window_size == 6
    assert loaded.config.pretrained_window_sizes == backbone.config.pretrained_window_sizes
    assert_same_outputs(loaded, backbone)
    named = converters.read(out, fmt)  # the format named, not detected
    assert named.config == loaded.config and named.state_dict.keys() == loaded.state_dict().keys()


def test_a_classifier_exported_to_mmdet_becomes_a_backbone(tmp_path):
    out = tmp_path / "cls_mmdet.pth"
    how = converters.write(read_checkpoint("swin_n_64"), "mmdet", out)
    assert "written as a backbone" in how
    # mmdet's own SwinTransformer reads the OpenMMLab layout (stages.*, w_msa): an init_cfg hint would load nothing
    assert "load_from" in how and "Swin-Transformer-Object-Detection" in how and "init_cfg" not in how
    meta = torch.load(out, weights_only=True)["meta"]["swinzoo"]
    assert any("head.weight" in n for n in meta["provenance"]["backbone"])
    assert_same_outputs(swinzoo.load_model(out), swinzoo.load_model("swin_n_64", features_only=True))


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("fmt", ["timm", "hf", "torchvision", "simmim"])
def test_a_backbone_to_a_classifier_format_is_one_line(tmp_path, capsys, fmt):
    """Those formats hold classifiers: the error says so and names the formats that hold a backbone."""
    backbone = swinzoo.load_model("swin_n_64", features_only=True)
    src = tmp_path / "det.safetensors"
    converters.write(Checkpoint(backbone.state_dict(), backbone.config), "swinzoo", src)
    out = tmp_path / "out"
    code, _, err = run_cli(["export", src, "--to", fmt, "-o", out], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"this is a detection backbone (no head), which {fmt} cannot hold: write it as official, mmdet" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["det.safetensors"]


@pytest.mark.parametrize("call, message", [
    (lambda: swinzoo.load_model("swin_n_64", features_only=True, window=0), "window must be a positive integer, got 0"),
    (lambda: swinzoo.load_model("swin_n_64", features_only=True, window=2.5), "window must be a positive integer"),
    (lambda: swinzoo.load_model("swin_n_64", window=6), "window= applies with features_only=True"),
    (lambda: swinzoo.load_model("no_such_file.pth", features_only=False, window=6), "swinzoo.convert(src, out"),
    (lambda: swinzoo.create_model("swin_n_64", pretrained=True, features_only=True, window_size=0),
     "window must be a positive integer"),
])
def test_bad_windows_are_one_line_errors(call, message):
    with pytest.raises(SwinzooError, match=re.escape(message)) as info:
        call()
    assert "\n" not in str(info.value)

