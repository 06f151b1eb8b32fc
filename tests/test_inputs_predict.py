"""What `predict` and `evaluate` take from Python: a single image path, model objects of every kind, any dtype."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import swinzoo


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "x.png"
    Image.fromarray(np.full((70, 80, 3), 120, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("as_type", [str, Path])
def test_predict_takes_one_path_as_one_image(image, as_type):
    model = swinzoo.create_model("swin_n_64")
    (row,) = swinzoo.predict(model, as_type(image), topk=2)
    assert row["image"] == str(image) and len(row["predictions"]) == 2
    assert swinzoo.predict(model, [image], topk=2) == [row]
