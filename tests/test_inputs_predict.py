"""What `predict` and `evaluate` take from Python: a single image path, model objects of every kind, any dtype."""

from pathlib import Path

import numpy as np
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


@pytest.mark.parametrize("item, words", [
    (lambda: Image.new("RGB", (8, 8)), "a PIL.Image"),
    (lambda: np.zeros((8, 8, 3), np.uint8), "a numpy.ndarray"),
    (lambda: torch.zeros(3, 8, 8), "a torch.Tensor"),
])
def test_predict_refuses_an_image_in_memory_saying_how_to_classify_it(image, item, words):
    """predict reads files; an image already in memory raised AttributeError ('Image' object has no attribute
    'read') from deep inside PIL."""
    with pytest.raises(SwinzooError) as e:
        swinzoo.predict("swin_n_64", [image, item()])
    message = str(e.value)
    assert "\n" not in message and words in message and "image file paths" in message, message
    assert "swinzoo.create_transform(model)" in message, message


def bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.jpg"
    if kind == "folder":
        path.mkdir()
    elif kind == "text":
        path.write_text("not an image\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:400])
    return path  # "missing": nothing there


@pytest.mark.parametrize("kind, words", [
    ("missing", ["missing.jpg: no such file", "check the path"]),
    ("folder", ["folder.jpg holds no images", "give image files or a folder of them"]),
    ("text", ["text.jpg is not a readable image (cannot identify image file", "replace it or leave it out"]),
    ("empty", ["empty.jpg is not a readable image (", "replace it or leave it out"]),
    ("truncated", ["truncated.jpg is not a readable image (", "replace it or leave it out"]),
])
def test_a_bad_image_is_one_line_naming_it_and_the_fix(tmp_path, capsys, image, kind, words):
    from .conftest import one_error_line, run_cli

    code, out, err = run_cli(["predict", "swin_n_64", image, bad_file(tmp_path, kind)], capsys)
    assert code == 2 and out == ""
    one_error_line(err, *words)


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_a_missing_image_or_a_folder_late_in_the_list_is_found_before_any_batch_runs(tmp_path, monkeypatch, image,
                                                                                      kind):
    from swinzoo import prediction

    batches = []
    monkeypatch.setattr(prediction, "run_model", lambda *a: batches.append(a) or torch.zeros(1, 10))
    with pytest.raises(SwinzooError, match=kind):
        swinzoo.predict("swin_n_64", [image, bad_file(tmp_path, kind)], batch_size=1)
    assert batches == []


def test_predict_prints_each_batch_as_it_comes(tmp_path, capsys, image):
    """A folder of 50k images on a CPU is an hour of predict: its lines come batch by batch (a pipe or a file sees
    them as they are made), so an unreadable image near the end stops the run without costing the lines before."""
    from .conftest import one_error_line, run_cli

    code, out, err = run_cli(["predict", "swin_n_64", image, image, bad_file(tmp_path, "text"), "--batch-size", "2"],
                             capsys)
    assert code == 2 and out.splitlines() == [line for line in out.splitlines() if line.startswith(f"{image}: ")]
    assert len(out.splitlines()) == 2
    one_error_line(err.splitlines()[-1], "text.jpg is not a readable image")
    code, out, err = run_cli(["predict", "swin_n_64", image, image, bad_file(tmp_path, "text"), "--batch-size", "2",
                              "--json"], capsys)
    assert code == 2 and out == ""  # JSON is one document: all or nothing
