"""One preprocessing truth: the official crop rule, and the same eval pixels from swinzoo, from timm reading swinzoo's
timm export, and from transformers reading its HF export; preprocessing survives export and read-back."""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as v1

import swinzoo
from swinzoo import SwinConfig, SwinTransformer
from swinzoo.config import IMAGENET_MEAN, IMAGENET_STD
from swinzoo.converters import hf
from swinzoo.converters import timm as timm_format
from swinzoo.converters.native import save_state_dict
from swinzoo.errors import SwinzooError
from swinzoo.preprocess import Preprocess, create_transform, data_config
from swinzoo.sources import read_checkpoint
from swinzoo.train.data import eval_transform

from .formats_helpers import SMALL

# (width, height): non-square both ways, up- and down-scaling, and (227, 500) whose crop margin at 224 px is odd
SIZES = [(300, 200), (227, 500), (640, 480), (224, 224), (150, 100), (1000, 999), (513, 384)]
GEOMETRIES = {224: (1, 7), 256: (2, 8), 384: (1, 12)}  # res: (version, window) that tile SMALL
CUSTOM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear"}


def images(seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]


def small_config(res: int, preprocess: dict | None = None) -> SwinConfig:
    version, window = GEOMETRIES.get(res, (1, 12))
    return SwinConfig(version=version, img_size=res, window_size=window, num_classes=5, preprocess=preprocess,
                      **SMALL)


def resize_stage(transform, image: Image.Image) -> np.ndarray:
    """The uint8 pixels after a transform's PIL ops (resize, crop), before tensor conversion and normalisation."""
    for op in transform.transforms:
        if isinstance(op, (v1.ToTensor, v1.Normalize)) or type(op).__name__ in ("MaybeToTensor", "ToImage"):
            break
        image = op(image)
    return np.asarray(image)


# ---------------------------------------------------------------------------------------------- the rule
@pytest.mark.parametrize("res,crop_pct,crop_mode,scale", [
    (224, 0.875, "center", 256), (256, 0.875, "center", 292), (384, 1.0, "squash", 384), (512, 1.0, "squash", 512)])
def test_the_official_crop_rule(res, crop_pct, crop_mode, scale):
    """0.875 and a center crop below 384 px, a plain resize from 384: pixel for pixel the official data/build.py
    (torchvision v1 on PIL: Resize(int((256 / 224) * res)) + CenterCrop(res), or Resize((res, res)))."""
    d = data_config(res)
    assert d == {"input_size": (3, res, res), "interpolation": "bicubic", "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                 "crop_pct": crop_pct, "crop_mode": crop_mode}
    assert Preprocess.official(res).scale_size(res) == scale
    assert all(Preprocess.official(r).scale_size(r) == int((256 / 224) * r) for r in range(16, 384))
    bicubic = v1.InterpolationMode.BICUBIC
    if res < 384:
        resize = [v1.Resize(int((256 / 224) * res), bicubic), v1.CenterCrop(res)]
    else:
        resize = [v1.Resize((res, res), bicubic)]
    official = v1.Compose([*resize, v1.ToTensor(), v1.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    ours = create_transform(res)
    for image in images():
        assert np.array_equal(resize_stage(ours, image), resize_stage(official, image))
        out = ours(image)
        assert out.shape == (3, res, res) and out.dtype == torch.float32
        # bit for bit: the scale to [0, 1] divides by 255 as ToTensor does (v2.ToDtype multiplies by 1/255, 1 ulp off)
        torch.testing.assert_close(out, official(image), rtol=0, atol=0)


def test_test_crop_forces_the_crop_on_or_off():
    assert data_config(224, test_crop=False)["crop_pct"] == 1.0 and data_config(224, test_crop=False)["crop_mode"] \
        == "squash"
    assert (data_config(384, test_crop=True)["crop_pct"], data_config(384, test_crop=True)["crop_mode"]) == \
        (0.875, "center")
    custom = small_config(224, {"crop_pct": 0.95, "crop_mode": "center"})
    assert data_config(custom, test_crop=True)["crop_pct"] == 0.95  # the model's own crop, not the official one
    for res, crop in ((224, None), (224, False), (384, None), (384, True)):
        image = images()[1]
        torch.testing.assert_close(eval_transform(res, crop)(image), create_transform(res, test_crop=crop)(image),
                                   rtol=0, atol=0)


def test_data_config_inputs():
    cfg = small_config(224, {"crop_pct": 0.9, "crop_mode": "center", **CUSTOM})
    model = SwinTransformer(cfg)
    d = data_config(model)
    assert d == data_config(cfg) == data_config(d) and d["crop_pct"] == 0.9 and d["mean"] == (0.5, 0.5, 0.5)
    assert swinzoo.data_config is data_config and swinzoo.create_transform is create_transform
    assert data_config("swin_n_64")["input_size"] == (3, 64, 64)
    image = images()[0]
    torch.testing.assert_close(create_transform(**d)(image), create_transform(model)(image), rtol=0, atol=0)
    assert create_transform(cfg, crop_pct=1.0)(image).shape == (3, 224, 224)  # keywords override the model's
    with pytest.raises(SwinzooError, match="load the file first"):
        data_config("runs/x/model.safetensors")
    with pytest.raises(SwinzooError, match="cannot tell the preprocessing"):
        data_config(3.5)
    with pytest.raises(SwinzooError, match="crop_mode 'border'"):
        data_config(small_config(224, {"crop_mode": "border"}))
    with pytest.raises(SwinzooError, match="unknown preprocess keys"):
        small_config(224, {"crop": 0.9})


# ---------------------------------------------------------------------------------------------- timm
timm = pytest.importorskip("timm")


@pytest.mark.parametrize("res", [224, 256, 384])
def test_timm_reads_the_same_transform_from_our_export(res, tmp_path):
    """timm.create_transform(**resolve_data_config(model)) of the timm model loaded from our export: the same PIL
    pixels after resize and crop, and the same tensors bit for bit."""
    from timm.data import create_transform as timm_transform
    from timm.data import resolve_data_config

    cfg = small_config(res)
    out = timm_format.write_timm_folder(SwinTransformer(cfg).state_dict(), cfg, tmp_path / "timm")
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    resolved = resolve_data_config({}, model=model)
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in resolved.items()} == data_config(cfg)
    theirs, ours = timm_transform(**resolved), create_transform(cfg)
    for image in images(res):
        assert np.array_equal(resize_stage(ours, image), resize_stage(theirs, image))
        torch.testing.assert_close(ours(image), theirs(image), rtol=0, atol=0)


def test_a_timm_folder_keeps_its_own_preprocessing(tmp_path):
    """timm's own Swin configs say crop_pct 0.9: a folder timm saved is read as timm reads it, and moving the model
    to another resolution drops the crop (chosen per resolution) but keeps the rest."""
    from timm.data import resolve_data_config
    from timm.models._hub import save_for_hf

    model = timm.create_model("swin_tiny_patch4_window7_224", img_size=64, window_size=4, num_classes=5, **SMALL)
    save_for_hf(model, tmp_path / "m", safe_serialization=True)
    cfg = read_checkpoint(str(tmp_path / "m")).config
    assert cfg.preprocess == {"crop_pct": 0.9, "crop_mode": "center"}
    resolved = resolve_data_config({}, model=model)  # input_size is timm's 224 default cfg's, the rest applies
    ours = data_config(cfg)
    for key in ("interpolation", "mean", "std", "crop_pct", "crop_mode"):
        assert ours[key] == (tuple(resolved[key]) if isinstance(resolved[key], list) else resolved[key]), key
    assert cfg.replace(img_size=128, window_size=4).preprocess is None
    kept = cfg.replace(preprocess={"crop_pct": 0.9, "crop_mode": "center", **CUSTOM}).replace(img_size=128)
    assert kept.preprocess == CUSTOM


def test_unusable_timm_preprocessing_does_not_stop_a_read():
    assert timm_format.preprocess_from_timm({"crop_mode": "border", "crop_pct": 1.0}, 224) is None
    assert timm_format.preprocess_from_timm({}, 224) is None
    assert timm_format.preprocess_from_timm({"crop_pct": 1.0, "crop_mode": "squash"}, 384) is None  # official


# ---------------------------------------------------------------------------------------------- transformers
def hf_processor(folder, fast: bool):
    transformers = pytest.importorskip("transformers")
    if fast and not hasattr(transformers, "ConvNextImageProcessorFast"):  # before 4.4x, AutoImageProcessor refuses
        pytest.skip(f"transformers {transformers.__version__} has no fast ConvNext processor")
    with warnings.catch_warnings():  # the slow/fast notice
        warnings.simplefilter("ignore")
        proc = transformers.AutoImageProcessor.from_pretrained(folder, use_fast=fast)
    if type(proc).__name__.endswith("Fast") != fast:
        pytest.skip(f"this transformers has no {'fast' if fast else 'slow'} {type(proc).__name__}")
    return proc


def hf_pixels(proc, image: Image.Image) -> torch.Tensor:
    return proc(image, return_tensors="pt")["pixel_values"][0]


def hf_reference(transform, image: Image.Image, res: int) -> tuple[torch.Tensor, bool]:
    """(what transformers should give, whether that is `transform(image)` itself). transformers' center crop rounds
    an odd margin down where torchvision rounds half to even: when they disagree, `transform` with the crop moved."""
    resize, *_, to_image, to_float, normalize = transform.transforms
    resized = np.asarray(resize(image))
    margins = [n - res for n in resized.shape[:2]]
    if all(round(m / 2) == m // 2 for m in margins):
        return transform(image), True
    top, left = (m // 2 for m in margins)
    return normalize(to_float(to_image(resized[top:top + res, left:left + res].copy()))), False


@pytest.mark.parametrize("res", [224, 384])
def test_transformers_reads_the_same_transform_from_our_export(res, tmp_path):
    """AutoImageProcessor on our HF folder (ConvNextImageProcessor, PIL resize): the same pixel_values to 1e-6 (the
    measured worst case is 7.2e-7, one float32 ulp at |x| ~ 2.6, from transformers scaling in float64 first). Where
    the crop margin is odd (227x500 at 224 px) transformers' crop sits 1 px off torchvision's, and only that."""
    cfg = small_config(res)
    out = hf.write_hf_folder(SwinTransformer(cfg).state_dict(), cfg, tmp_path / "hf")
    saved = json.loads((out / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "ConvNextImageProcessor" and saved["size"] == {"shortest_edge": res}
    proc, ours = hf_processor(out, fast=False), create_transform(cfg)
    shifted = []
    for (w, h), image in zip(SIZES, images(res)):
        expected, same = hf_reference(ours, image, res)
        shifted += [] if same else [(w, h)]
        torch.testing.assert_close(hf_pixels(proc, image), expected, rtol=0, atol=1e-6)
    assert shifted == ([(227, 500)] if res < 384 else [])  # so both branches above are exercised
    assert read_checkpoint(str(out)).config == cfg  # the official rule reads back as no override


def test_transformers_fast_processor_is_within_one_level(tmp_path):
    """The fast processor resizes uint8 tensors with torch's bicubic, not PIL's: measured up to one 8-bit level
    apart on downscaled images (1/255/std = 0.0175 after normalising), so it is close but not the official pixels."""
    cfg = small_config(224)
    out = hf.write_hf_folder(SwinTransformer(cfg).state_dict(), cfg, tmp_path / "hf")
    proc, ours = hf_processor(out, fast=True), create_transform(cfg)
    level = 1 / 255 / min(IMAGENET_STD)
    for (w, h), image in zip(SIZES, images()):
        if min(w, h) >= 256:  # downscaling only: upscaling differs more between the two kernels
            torch.testing.assert_close(hf_pixels(proc, image), ours(image), rtol=0, atol=level + 1e-5)


def test_transformers_fast_processor_converts_other_modes_to_rgb(tmp_path):
    """Palette, 16-bit, grey and RGBA images go through the exported processor as their RGB conversion does
    (swinzoo converts every image to RGB first): the fast processor reads them as they are without
    `do_convert_rgb` (a palette image's indices as grey levels, 16-bit values unscaled)."""
    cfg = small_config(224)
    out = hf.write_hf_folder(SwinTransformer(cfg).state_dict(), cfg, tmp_path / "hf")
    proc, ours = hf_processor(out, fast=True), create_transform(cfg)
    rgb = images()[2]
    grey16 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    for image in (rgb.convert("P"), rgb.convert("L"), rgb.convert("RGBA"), grey16):
        torch.testing.assert_close(hf_pixels(proc, image), ours(image.convert("RGB")), rtol=0,
                                   atol=1 / 255 / min(IMAGENET_STD) + 1e-5, msg=image.mode)


# ---------------------------------------------------------------------------------------------- read back
READ_BACK = {  # name: (res, preprocess); the HF processor each needs
    "official_224": (224, None),
    "official_384": (384, None),
    "crop_0.95_bilinear": (224, {"crop_pct": 0.95, "crop_mode": "center", **CUSTOM}),  # ConvNext
    "squash_224": (224, {"crop_pct": 1.0, "crop_mode": "squash"}),  # ViT
    "crop_at_384": (384, {"crop_pct": 0.875, "crop_mode": "center"}),  # Bit, shortest edge
    "squash_crop": (256, {"crop_pct": 0.9, "crop_mode": "squash"}),  # Bit, square resize
}


@pytest.mark.parametrize("case", list(READ_BACK))
def test_exports_read_back_keep_the_preprocessing(case, tmp_path):
    """swinzoo file, timm folder and HF folder each read back with the preprocessing they were written with, and the
    timm and HF libraries build the same transform from them."""
    from timm.data import create_transform as timm_transform
    from timm.data import resolve_data_config

    res, preprocess = READ_BACK[case]
    cfg = small_config(res, preprocess)
    weights = SwinTransformer(cfg).state_dict()
    native = save_state_dict(weights, cfg, tmp_path / "m.safetensors")
    timm_dir = timm_format.write_timm_folder(weights, cfg, tmp_path / "timm")
    hf_dir = hf.write_hf_folder(weights, cfg, tmp_path / "hf")
    for path in (native, timm_dir, hf_dir):
        assert read_checkpoint(str(path)).config.preprocess == cfg.preprocess, path
    image, ours = images()[1], create_transform(cfg)
    pretrained_cfg = json.loads((timm_dir / "config.json").read_text())["pretrained_cfg"]
    theirs = timm_transform(**resolve_data_config({}, pretrained_cfg=pretrained_cfg))
    torch.testing.assert_close(ours(image), theirs(image), rtol=0, atol=0)
    proc = hf_processor(hf_dir, fast=False)
    for other in images()[:3]:
        torch.testing.assert_close(hf_pixels(proc, other), hf_reference(ours, other, res)[0], rtol=0, atol=1e-6)


def test_old_files_and_foreign_hf_configs_load(tmp_path):
    """A config without `preprocess` (every file before it existed) means the official rule, and files of such
    models are written as before; a microsoft/swin-style processor (a plain resize) is kept; a preprocessor config
    swinzoo cannot reproduce or read leaves the official rule instead of failing the read."""
    old = {k: v for k, v in small_config(224).to_dict().items()}
    assert "preprocess" not in old and SwinConfig.from_dict(old).preprocess is None
    assert Preprocess.of(SwinConfig.from_dict(old)) == Preprocess.official(224)
    microsoft = {"feature_extractor_type": "ViTFeatureExtractor", "do_resize": True, "size": 224, "resample": 3,
                 "do_normalize": True, "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}
    assert hf.preprocess_from_hf(microsoft, 224) == {"crop_pct": 1.0, "crop_mode": "squash"}
    assert hf.preprocess_from_hf({**microsoft, "do_resize": False}, 224) is None
    assert hf.preprocess_from_hf({**microsoft, "size": 256}, 224) is None  # another output size
    cfg = small_config(224)
    folder = hf.write_hf_folder(SwinTransformer(cfg).state_dict(), cfg, tmp_path / "hf")
    (folder / "preprocessor_config.json").write_text("{not json")
    assert read_checkpoint(str(folder)).config.preprocess is None
    (folder / "preprocessor_config.json").write_text(json.dumps({**microsoft, "image_mean": "x"}))
    assert read_checkpoint(str(folder)).config.preprocess is None
