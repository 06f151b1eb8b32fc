"""SimMIM pretraining against the official `models/simmim.py` outputs on the fixtures (loss and reconstruction in
float64 to 1e-6), the official mask algorithm, and the official SimMIM checkpoint layout both ways."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import swinzoo
from swinzoo import MaskGenerator, SwinzooError, converters
from swinzoo.models.simmim import normalized_targets

from .conftest import FIXTURES, V1, fixture_pth

SIMMIM = FIXTURES / "simmim"
NAMES = ["simmim_swin_tiny_w6_192", "simmim_swinv2_tiny_w12_192"]


def pth(name: str) -> Path:
    return SIMMIM / f"{name}.pth"


def expected(name: str) -> dict[str, torch.Tensor]:
    return load_file(SIMMIM / f"{name}.expected.safetensors")


def run(model, exp: dict, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    model = model.to(dtype).eval()
    with torch.no_grad():
        return model(exp["input"].to(dtype), exp["mask"])


def assert_official(model, name: str, atol: float = 1e-6, dtype=torch.float64) -> None:
    exp = expected(name)
    loss, reconstruction = run(model, exp, dtype)
    torch.testing.assert_close(loss.double(), exp["loss"][0], rtol=0, atol=atol)
    torch.testing.assert_close(reconstruction.double(), exp["reconstruction"], rtol=0, atol=atol)


@pytest.mark.parametrize("name", NAMES)
def test_loss_and_reconstruction_match_the_official(name):
    model = swinzoo.load_simmim(pth(name))
    meta = json.loads((SIMMIM / f"{name}.manifest.json").read_text())["meta"]
    cfg = model.config
    assert (cfg.version, cfg.img_size, cfg.window_size, cfg.num_classes) == (meta["version"], meta["img_size"],
                                                                              meta["window"], 0)
    assert (cfg.embed_dim, list(cfg.depths), list(cfg.num_heads)) == tuple(meta["arch"].values())
    assert model.encoder_stride == meta["encoder_stride"] and model.provenance["format"] == "simmim"
    assert_official(model, name)


@pytest.mark.parametrize("name", NAMES)
def test_float32_and_the_reference_path(name):
    assert_official(swinzoo.load_simmim(pth(name)), name, atol=1e-4, dtype=torch.float32)
    model = swinzoo.load_simmim(pth(name)).double().eval()
    model.set_fast_path(False)
    exp = expected(name)
    loss, reconstruction = model(exp["input"].double(), exp["mask"])  # autograd on: the training path
    torch.testing.assert_close(loss, exp["loss"][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(reconstruction.detach(), exp["reconstruction"], rtol=0, atol=1e-6)
    loss.backward()
    assert model.encoder.mask_token.grad.abs().sum() > 0 and model.decoder[0].weight.grad.isfinite().all()


def test_mask_generator_follows_the_official_algorithm():
    gen = MaskGenerator(192, 32, 4, 0.6, seed=0)
    mask = gen()
    assert mask.shape == (48, 48) and mask.dtype == torch.int64
    units = mask.view(6, 8, 6, 8)  # (unit row, row in unit, unit col, col in unit)
    assert (units == units[:, :1, :, :1]).all()  # every unit is an 8x8 block of one value
    assert int(units[:, 0, :, 0].sum()) == 22  # ceil(36 * 0.6) of 36 units
    # the official draws have the same structure
    for official in expected(NAMES[0])["mask"]:
        blocks = official.view(6, 8, 6, 8)
        assert (blocks == blocks[:, :1, :, :1]).all() and int(blocks[:, 0, :, 0].sum()) == 22
    again = MaskGenerator(192, 32, 4, 0.6, seed=0)
    assert torch.equal(again(), mask) and torch.equal(again(), gen())
    assert not torch.equal(MaskGenerator(192, seed=1)(), MaskGenerator(192, seed=0)())
    batch = MaskGenerator((192, 256), seed=0)(batch_size=3)  # 6 x 8 units: ceil(48 * 0.6) = 29 masked
    assert batch.shape == (3, 48, 64) and batch.sum(dim=(1, 2)).tolist() == [29 * 64] * 3


def test_round_trip_official_native_official(tmp_path):
    name = NAMES[1]
    assert converters.detect(pth(name))[0].name == "simmim"
    checkpoint = converters.read(pth(name))
    converters.write(checkpoint, "swinzoo", tmp_path / "s.safetensors")
    native = converters.read(tmp_path / "s.safetensors")
    assert native.config == checkpoint.config and native.provenance["format"] == "simmim"
    assert_official(swinzoo.load_simmim(tmp_path / "s.safetensors"), name)
    converters.write(native, "simmim", tmp_path / "back.pth")
    original = torch.load(pth(name), weights_only=True)["model"]
    back = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
    assert list(back) == list(original)  # the official keys, buffers included, in the official order
    for key, value in original.items():
        assert torch.equal(back[key].to(value.dtype), value), key
    assert_official(swinzoo.load_simmim(tmp_path / "back.pth"), name)


def test_v1_written_back_keeps_the_official_layout(tmp_path):
    name = NAMES[0]
    converters.write(converters.read(pth(name)), "simmim", tmp_path / "back.pth")
    original = torch.load(pth(name), weights_only=True)["model"]
    back = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
    assert list(back) == list(original)
    assert all(torch.equal(back[k].to(v.dtype), v) for k, v in original.items())


def test_released_v2_files_name_the_cpb_mlp_rpe_mlp(tmp_path):
    name = NAMES[1]
    ckpt = torch.load(pth(name), weights_only=True)
    ckpt["model"] = {k.replace(".cpb_mlp.", ".rpe_mlp."): v for k, v in ckpt["model"].items()}
    assert any(".rpe_mlp." in k for k in ckpt["model"])
    torch.save(ckpt, tmp_path / "released.pth")
    model = swinzoo.load_simmim(tmp_path / "released.pth")
    assert "rpe_mlp -> cpb_mlp" in model.provenance["renamed"]
    assert_official(model, name)


def reference_norm_targets(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """From the facts, by box sums over integral images (not pooling): each pixel standardised by the mean and
    unbiased variance of the in-image pixels of its kernel x kernel window, variance clamped at 0, eps 1e-6."""
    h, w = x.shape[-2:]
    r = kernel // 2

    def box(t):  # sum over each pixel's window, clipped to the image
        s = F.pad(t, (1, 0, 1, 0)).cumsum(-1).cumsum(-2)
        i0, i1 = (torch.arange(h) - r).clamp(0, h), (torch.arange(h) + r + 1).clamp(0, h)
        j0, j1 = (torch.arange(w) - r).clamp(0, w), (torch.arange(w) + r + 1).clamp(0, w)
        return s[..., i1[:, None], j1] - s[..., i0[:, None], j1] - s[..., i1[:, None], j0] + s[..., i0[:, None], j0]

    n = box(torch.ones_like(x))
    total, squares = box(x), box(x * x)
    var = ((squares - total**2 / n) / (n - 1)).clamp(min=0)
    return (x - total / n) / (var + 1e-6).sqrt()


@pytest.mark.parametrize("kernel,size", [(47, (40, 72)), (5, (24, 20)), (47, (192, 192))])
def test_norm_targets_match_an_independent_reference(kernel, size):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    torch.testing.assert_close(normalized_targets(x, kernel), reference_norm_targets(x, kernel), rtol=0, atol=1e-9)


def test_norm_targets_loss():
    """The official loss with NORM_TARGET on: L1 of the normalised images against the official reconstruction."""
    name = NAMES[1]
    exp = expected(name)
    loss, reconstruction = run(swinzoo.load_simmim(pth(name), norm_targets=True), exp)
    torch.testing.assert_close(reconstruction, exp["reconstruction"], rtol=0, atol=1e-6)
    pixels = exp["mask"].repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1).double()
    l1 = (reference_norm_targets(exp["input"].double(), 47) - exp["reconstruction"]).abs()
    want = (l1 * pixels).sum() / pixels.sum() / 3
    torch.testing.assert_close(loss, want, rtol=0, atol=1e-6)
    assert abs(float(loss) - float(exp["loss"][0])) > 1e-2  # the option changes the loss


def one_line_error(fn, match: str) -> None:
    with pytest.raises(SwinzooError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


def test_bad_inputs_are_one_line_errors():
    one_line_error(lambda: MaskGenerator(200), "mask patch 32 does not divide the input 200x200")
    one_line_error(lambda: MaskGenerator(192, 30, 4), "mask patch 30 is not a multiple of the model patch 4")
    one_line_error(lambda: MaskGenerator(16), "smaller than one mask patch")
    one_line_error(lambda: MaskGenerator(192, mask_ratio=1.5), "mask_ratio")
    model = swinzoo.load_simmim(pth(NAMES[0])).eval()
    images = torch.zeros(2, 3, 192, 192)
    one_line_error(lambda: model(images, torch.zeros(2, 40, 48)), r"expected \(2, 48, 48\)")
    one_line_error(lambda: model(images, torch.zeros(1, 48, 48)), "does not match")
    one_line_error(lambda: model(torch.zeros(1, 3, 100, 96), torch.zeros(1, 25, 24)), "multiples of its encoder")
    one_line_error(lambda: model(torch.zeros(1, 3, 16, 16), torch.zeros(1, 4, 4)), "multiples of its encoder")
    one_line_error(lambda: swinzoo.load_simmim(pth(NAMES[0]), norm_target_kernel=4), "odd")


def test_non_square_images():
    model = swinzoo.load_simmim(pth(NAMES[1])).eval()
    mask = model.mask_generator((192, 256), seed=0)(batch_size=2)
    with torch.no_grad():
        loss, reconstruction = model(torch.randn(2, 3, 192, 256), mask)
    assert reconstruction.shape == (2, 3, 192, 256) and torch.isfinite(loss)


def test_simmim_from_a_classifier_and_what_is_refused(tmp_path):
    classifier = swinzoo.read_checkpoint(fixture_pth(V1))
    model = swinzoo.load_simmim(fixture_pth(V1))
    assert model.config == classifier.config.replace(num_classes=0)
    assert model.provenance["simmim"]["dropped"] == ["head.weight", "head.bias"]
    encoder = model.encoder.state_dict()
    assert all(torch.equal(encoder[k], v) for k, v in classifier.state_dict.items() if not k.startswith("head."))
    assert 0.01 < float(model.encoder.mask_token.detach().std()) < 0.03
    one_line_error(lambda: swinzoo.load_model(pth(NAMES[0])), "SimMIM pretraining checkpoint: load it with "
                                                               "swinzoo.load_simmim")
    one_line_error(lambda: swinzoo.load_simmim(FIXTURES / "detection" / "det_swin_tiny_w7.pth"),
                   "detection backbone")
    simmim = converters.read(pth(NAMES[0]))
    one_line_error(lambda: converters.write(simmim, "official", tmp_path / "x.pth"),
                   "write it as simmim, hf or swinzoo")
    one_line_error(lambda: converters.write(classifier, "simmim", tmp_path / "x.pth"), "not a SimMIM model")


def test_a_half_precision_loss_is_summed_in_float32():
    """Pure fp16 (Lightning's 16-true): the masked L1 summed in fp16 overflows past 65504 (here ~3 x 64 x 64 x 16 x
    0.6 pixels at ~1); the sum runs in fp32, as autocast's l1_loss does in the official AMP recipe."""
    model = swinzoo.load_simmim("swin_n_64.simmim").eval()
    images = torch.randn(16, 3, 64, 64) * 2
    mask = MaskGenerator(64, model.mask_patch_size, model.config.patch_size, model.mask_ratio, seed=0)
    masks = torch.stack([mask() for _ in range(16)])
    with torch.no_grad():
        full, _ = model(images, masks)
        half, _ = model.half()(images.half(), masks)
    assert torch.isfinite(half) and half.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=2e-2, atol=0)
