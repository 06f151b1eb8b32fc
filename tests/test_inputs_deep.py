"""Images of more than 8 bits a channel (16-bit PNG, TIFF, PGM: PIL modes I;16 and I) are scaled to 8 bits, the
same way wherever an image is read (training folders, hf: rows, pretraining files, eval / predict, create_transform):
PIL's convert("RGB"), which torchvision's ImageFolder uses too, clips them to 255 (almost all white). Float images
(mode F) have no recorded range and are refused, up front. 8-bit images read exactly as before."""

import numpy as np
import pytest
import torch
from PIL import Image

import swinzoo
from swinzoo.errors import SwinzooError
from swinzoo.prediction import read_image
from swinzoo.preprocess import to_rgb
from swinzoo.train.data import ImageFolderSplit, eval_transform
from swinzoo.train.image_check import check_images, image_problem
from swinzoo.train.simmim_data import ImageFiles

# every 16-bit value once (a 256 x 256 ramp), so the scaling is checked over the whole range
DEEP = np.arange(65536, dtype=np.uint16).reshape(256, 256)
EIGHT = np.round(DEEP / 257).astype(np.uint8)  # what each 16-bit value means in 8 bits


def rgb(array: np.ndarray) -> np.ndarray:
    return np.repeat(array[..., None], 3, axis=2)


def test_sixteen_bit_modes_scale_to_eight_bits(tmp_path):
    Image.fromarray(DEEP).save(tmp_path / "a.ppm")  # read back as mode I, as Pillow reads 16-bit PGM / PPM
    for image in (Image.fromarray(DEEP), Image.fromarray(DEEP.astype(">u2")), Image.open(tmp_path / "a.ppm"),
                  Image.fromarray(DEEP.astype(np.int32))):
        assert image.mode in ("I;16", "I;16B", "I"), image.mode
        out = to_rgb(image)
        assert out.mode == "RGB" and np.array_equal(np.asarray(out), rgb(EIGHT)), image.mode
    assert np.asarray(Image.fromarray(DEEP).convert("RGB")).mean() > 254  # what PIL alone gives


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1", "CMYK"])
def test_eight_bit_modes_read_exactly_as_before(mode):
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    assert to_rgb(image).tobytes() == image.convert("RGB").tobytes()


@pytest.mark.parametrize("image, words", [
    (Image.fromarray(np.full((4, 4), 0.5, np.float32)), ["float pixels (PIL mode F)", "0-1 or 0-255",
                                                         "8- or 16-bit"]),
    (Image.fromarray(np.full((4, 4), 70000, np.int32)), ["pixels up to 70000 (PIL mode I)", "8- or 16-bit"]),
    (Image.fromarray(np.full((4, 4), -3, np.int32)), ["pixels down to -3 (PIL mode I)"]),
])
def test_pixels_without_an_eight_bit_meaning_are_one_line(tmp_path, image, words):
    with pytest.raises(SwinzooError) as e:
        to_rgb(image, "x.tif")
    assert "\n" not in str(e.value) and str(e.value).startswith("x.tif has ")
    for word in words:
        assert word in str(e.value), str(e.value)
    path = tmp_path / "x.tif"
    image.save(path)
    assert all(word in image_problem(path) for word in words)  # the up-front check of training data refuses it
    with pytest.raises(SwinzooError, match="x.tif is not a readable image"):
        check_images([path])
    with pytest.raises(SwinzooError, match="x.tif has "):
        read_image(path, eval_transform(64))


def test_every_reader_scales_alike(tmp_path):
    """A 16-bit file reads as its 8-bit twin in training, pretraining, eval / predict and create_transform."""
    for split in ("train", "val"):
        for name, pixels in (("deep", DEEP), ("eight", EIGHT)):
            (tmp_path / split / name).mkdir(parents=True)
            Image.fromarray(pixels).save(tmp_path / split / name / "0.png")
    deep, eight = (tmp_path / "train" / name / "0.png" for name in ("deep", "eight"))
    assert Image.open(deep).mode == "I;16" and Image.open(eight).mode == "L"
    folder = ImageFolderSplit(tmp_path / "train")
    assert folder[0][0].tobytes() == folder[1][0].tobytes() == Image.fromarray(rgb(EIGHT)).tobytes()
    files = ImageFiles([deep, eight], "files")
    assert files[0].tobytes() == files[1].tobytes()
    tf = eval_transform(64)
    assert torch.equal(read_image(deep, tf), read_image(eight, tf))
    model_tf = swinzoo.create_transform(64)
    assert torch.equal(model_tf(Image.open(deep)), model_tf(Image.open(eight)))
    model = swinzoo.create_model("swin_n_64")
    assert [r["predictions"] for r in swinzoo.predict(model, [deep, eight])] == \
        [swinzoo.predict(model, [eight])[0]["predictions"]] * 2

