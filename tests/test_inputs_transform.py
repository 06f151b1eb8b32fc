"""What `create_transform(model)` takes: PIL images of any mode (read as RGB, as `predict` reads files), uint8 numpy
arrays (H, W[, C]) as timm users feed them, tensors; an RGB PIL image gives exactly what the plain ops give."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

import swinzoo
from swinzoo.errors import SwinzooError

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (90, 70, 4), dtype=np.uint8)


@pytest.fixture(scope="module")
def transform():
    return swinzoo.create_transform(swinzoo.create_model("swin_n_64"))


def test_an_rgb_image_gives_what_the_plain_ops_give(transform):
    image = Image.fromarray(PIXELS[..., :3])
    assert torch.equal(transform(image), v2.Compose(transform.transforms)(image))


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "CMYK", "LA"])
def test_a_pil_image_of_any_mode_is_read_as_rgb(transform, mode):
    image = Image.fromarray(PIXELS).convert(mode)
    out = transform(image)
    assert out.shape == (3, 64, 64) and torch.equal(out, transform(image.convert("RGB")))


@pytest.mark.parametrize("pixels", [PIXELS[..., :3], PIXELS, PIXELS[..., 0], PIXELS[..., :1], PIXELS[:, ::-1, :3]],
                         ids=["rgb", "rgba", "gray", "one channel", "strided"])
def test_a_uint8_array_is_the_image_it_holds(transform, pixels):
    image = Image.fromarray(np.ascontiguousarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1
                                                 else pixels))
    out = transform(pixels)
    assert out.shape == (3, 64, 64) and torch.equal(out, transform(image.convert("RGB")))


@pytest.mark.parametrize("pixels", [PIXELS[..., :3] / 255.0, PIXELS[..., :3].transpose(2, 0, 1), PIXELS[..., :2],
                                    PIXELS[None]], ids=["float", "channels first", "two channels", "4-d"])
def test_an_array_that_is_not_an_image_is_one_line(transform, pixels):
    with pytest.raises(SwinzooError, match=r"numpy image of shape .*: give uint8 \(H, W, C\)") as e:
        transform(pixels)
    assert "\n" not in str(e.value)


def test_a_tensor_passes_as_before(transform):
    tensor = torch.from_numpy(PIXELS[..., :3].copy()).permute(2, 0, 1)
    assert torch.equal(transform(tensor), v2.Compose(transform.transforms)(tensor))


def test_the_transform_unpickles_in_a_fresh_process(transform):
    """DataLoader workers started by spawn unpickle it before anything made the class."""
    code = ("import pickle, sys, numpy as np; t = pickle.loads(sys.stdin.buffer.read()); "
            "print(tuple(t(np.zeros((50, 60, 3), np.uint8)).shape))")
    done = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(transform), capture_output=True,
                          check=True)
    assert done.stdout.decode().strip() == "(3, 64, 64)"
