"""What `predict` and `evaluate` take from Python: a single image path, model objects of every kind, any dtype."""

from pathlib import Path

import pytest
import torch
from PIL import Image

import swinzoo
from swinzoo.errors import SwinzooError


@pytest.fixture
def image(tmp_path) -> Path:
    from swinzoo.train.shapes import render

    path = tmp_path / "x.png"
    Image.fromarray(render(0, 64, seed=1).permute(1, 2, 0).numpy()).save(path)
    return path


@pytest.mark.parametrize("as_type", [str, Path])
def test_predict_takes_one_path_as_one_image(image, as_type):
    model = swinzoo.create_model("swin_n_64")
    (row,) = swinzoo.predict(model, as_type(image), topk=2)
    assert row["image"] == str(image) and len(row["predictions"]) == 2
    assert swinzoo.predict(model, [image], topk=2) == [row]


@pytest.mark.parametrize("make, words", [
    (lambda: swinzoo.create_model("swin_n_64", features_only=True), "SwinBackbone object (a detection backbone"),
    (lambda: swinzoo.load_simmim("swin_n_64"), "SimMIM object (a SimMIM pretraining model"),
    (lambda: torch.nn.Linear(2, 2), "Linear object (not a swinzoo classifier"),
])
def test_a_model_object_that_cannot_classify_is_one_line(image, make, words):
    model = make()
    for call in (lambda: swinzoo.predict(model, [image]), lambda: swinzoo.evaluate(model, "shapes")):
        with pytest.raises(SwinzooError, match="SwinTransformer classifier") as e:
            call()
        assert words in str(e.value) and "\n" not in str(e.value)


def test_predict_on_a_headless_model_object_is_one_line(image):
    with pytest.raises(SwinzooError, match="no classifier head"):
        swinzoo.predict(swinzoo.create_model("swin_n_64", num_classes=0), [image])


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_predict_and_evaluate_feed_the_model_its_own_dtype(image, dtype):
    model = swinzoo.create_model("swin_n_64", pretrained=True)
    ((want, p),) = swinzoo.predict(model, [image], topk=1)[0]["predictions"]
    model = model.to(dtype)
    ((got, q),) = swinzoo.predict(model, [image], topk=1)[0]["predictions"]
    assert got == want
    if dtype == torch.float64:  # the model's own float64 forward of the image, to predict's 6 printed decimals
        with torch.no_grad():
            x = swinzoo.create_transform(model)(Image.open(image))[None].to(dtype)
            exact = model.eval()(x).softmax(-1).max().item()
        assert q == pytest.approx(exact, abs=1e-6)
    else:  # bf16 weights and activations: about 3 significant digits of the fp32 probability
        assert q == pytest.approx(p, abs=0.02)
    assert swinzoo.evaluate(model, "shapes", num_workers=0, batch_size=200)["n"] > 0


def test_predict_and_evaluate_leave_the_callers_model_in_its_mode(image):
    model = swinzoo.create_model("swin_n_64").train()
    model.layers[0].eval()  # a part frozen in eval by the caller stays so
    modes = [m.training for m in model.modules()]
    swinzoo.predict(model, [image])
    assert [m.training for m in model.modules()] == modes
    swinzoo.evaluate(model, "shapes", num_workers=0, batch_size=200)
    assert [m.training for m in model.modules()] == modes


@pytest.mark.parametrize("call, words", [
    (lambda i: swinzoo.evaluate("swin_n_64", "shapes", batch_size=0), "batch_size=0: must be a whole number >= 1"),
    (lambda i: swinzoo.evaluate("swin_n_64", "shapes", batch_size=2.0), "batch_size=2.0: must be a whole number"),
    (lambda i: swinzoo.evaluate("swin_n_64", "shapes", num_workers=-1), "num_workers=-1: must be a whole number in"),
    (lambda i: swinzoo.evaluate("swin_n_64", "shapes", num_workers="2"), "num_workers='2': must be a whole number"),
    (lambda i: swinzoo.predict("swin_n_64", i, topk="3"), "topk='3': must be a whole number >= 1 (a str was"),
    (lambda i: swinzoo.predict("swin_n_64", i, topk=0), "topk=0: must be a whole number >= 1"),
    (lambda i: swinzoo.predict("swin_n_64", i, batch_size="2"), "batch_size='2': must be a whole number"),
    (lambda i: swinzoo.predict("swin_n_64", i, batch_size=True), "batch_size=True: must be a whole number"),
])
def test_counts_of_the_wrong_type_or_range_are_one_line(image, call, words):
    with pytest.raises(SwinzooError) as e:
        call(image)
    assert words in str(e.value) and "\n" not in str(e.value)
