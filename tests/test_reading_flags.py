"""Every verb that reads a model reads it the same way: `--from-format`, `--arch`, `--ema/--no-ema` and
`--trust-checkpoint` on info, eval, predict and push as on convert and export (and as keywords in Python). A
message that tells the user to pass `--arch` must name a flag the verb has."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import swinzoo

from .conftest import one_error_line, run_cli
from .test_formats_training import logits, timm_model, timm_train_checkpoint

NANO_V2 = "swinv2_n_64_w4"


@pytest.fixture(scope="module")
def bare_v2(tmp_path_factory):
    """The nano V2 model as a bare timm state dict: V2 weights do not tell their window, so --arch must."""
    folder = tmp_path_factory.mktemp("bare_v2")
    swinzoo.export(NANO_V2, to="timm", output=folder / "timm")
    path = folder / "weights.pth"
    torch.save(load_file(folder / "timm" / "model.safetensors"), path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        pixels = (torch.rand(80, 72, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize("verb", ["info", "predict", "push"])
def test_a_verb_that_asks_for_arch_has_it(verb, bare_v2, images, tmp_path, capsys):
    extra = {"info": [], "predict": [images], "push": ["--repo", "me/x", "--dry-run", tmp_path / "dry"]}[verb]
    code, _, err = run_cli([verb, bare_v2, *extra], capsys)
    assert code == 2
    one_error_line(err, "--arch")
    code, out, err = run_cli([verb, bare_v2, *extra, "--arch", NANO_V2], capsys)
    assert code == 0, err


def test_predict_and_info_with_arch_read_what_convert_reads(bare_v2, images, capsys):
    code, out, err = run_cli(["predict", bare_v2, images, "--arch", NANO_V2, "--json"], capsys)
    assert code == 0, err
    # bare weights carry no class names (--arch gives the architecture, not the zoo head's labels): indices
    probabilities = [[p for _, p in row["predictions"]] for row in swinzoo.predict(NANO_V2, images)]
    assert [[p for _, p in row["predictions"]] for row in json.loads(out)] == probabilities
    code, out, err = run_cli(["info", bare_v2, "--arch", NANO_V2, "--json"], capsys)
    assert code == 0, err
    config = json.loads(out)["config"]
    assert (config["img_size"], config["window_size"]) == (64, 4)


def test_eval_with_arch(bare_v2, tmp_path, capsys):
    """Classes by index (bare weights have no names): folders 0-9, an image each."""
    g = torch.Generator().manual_seed(1)
    for i in range(10):
        (tmp_path / "val" / str(i)).mkdir(parents=True)
        pixels = (torch.rand(64, 64, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / "val" / str(i) / "a.png")
    code, out, err = run_cli(["eval", bare_v2, "--arch", NANO_V2, "--data", tmp_path, "--json", "--num-workers", "0"],
                             capsys)
    assert code == 0, err
    files = sorted(tmp_path.glob("val/*/a.png"))
    predicted = [row["predictions"][0][0] for row in swinzoo.predict(NANO_V2, files, topk=1)]
    names = swinzoo.load_model(NANO_V2).config.class_names
    expected = sum(names.index(p) == int(f.parent.name) for f, p in zip(files, predicted)) / 10
    assert json.loads(out)["top1"] == pytest.approx(expected) and json.loads(out)["n"] == 10


def test_python_keywords(bare_v2, images):
    assert swinzoo.model_info(bare_v2, arch=NANO_V2)["config"]["window_size"] == 4
    ours, zoo = swinzoo.predict(bare_v2, images, arch=NANO_V2), swinzoo.predict(NANO_V2, images)
    assert [r["predictions"][0][1] for r in ours] == [r["predictions"][0][1] for r in zoo]
    model = swinzoo.load_model(bare_v2, arch=NANO_V2)
    assert model.config.window_size == 4


@pytest.fixture(scope="module")
def timm_ema_checkpoint(tmp_path_factory):
    model, ema = timm_model(seed=0), timm_model(seed=1)
    src = tmp_path_factory.mktemp("ema") / "model_best.pth.tar"
    torch.save(timm_train_checkpoint(model, "swin_tiny_patch4_window7_224", ema=ema), src)
    return src, model, ema


def test_info_says_which_weights_it_read(timm_ema_checkpoint, capsys):
    src, _, _ = timm_ema_checkpoint
    code, out, err = run_cli(["info", src, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["provenance"]["checkpoint_entry"].startswith("state_dict_ema")
    code, out, err = run_cli(["info", src, "--no-ema", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["provenance"]["checkpoint_entry"].startswith("state_dict")
    assert not json.loads(out)["provenance"]["checkpoint_entry"].startswith("state_dict_ema")


def test_predict_and_load_model_take_the_trained_weights_with_no_ema(timm_ema_checkpoint, images, capsys):
    src, model, ema = timm_ema_checkpoint
    assert torch.allclose(logits(swinzoo.load_model(src, ema=False)), logits(model), atol=1e-6, rtol=0)
    assert torch.allclose(logits(swinzoo.load_model(src)), logits(ema), atol=1e-6, rtol=0)
    code, out, err = run_cli(["predict", src, images, "--no-ema", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out) == swinzoo.predict(src, images, ema=False)
    assert json.loads(out) != swinzoo.predict(src, images)


def test_ema_of_a_file_without_one_is_refused_by_every_verb(bare_v2, images, capsys):
    code, _, err = run_cli(["predict", bare_v2, images, "--arch", NANO_V2, "--ema"], capsys)
    assert code == 2
    one_error_line(err, "EMA")


def test_finetune_starts_from_the_weights_asked_for(timm_ema_checkpoint, tmp_path, capsys):
    src, _, _ = timm_ema_checkpoint
    g = torch.Generator().manual_seed(2)
    for split in ("train", "val"):
        for label in range(5):  # the checkpoint's 5 classes, an image each
            (tmp_path / "data" / split / str(label)).mkdir(parents=True)
            pixels = (torch.rand(64, 64, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "data" / split / str(label) / "a.png")
    code, out, err = run_cli(["finetune", "--from", src, "--no-ema", "--data", tmp_path / "data", "--max-steps", "1",
                              "--batch-size", "5", "--num-workers", "0", "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    entry = swinzoo.load_model(tmp_path / "run").provenance["parent"]["checkpoint_entry"]
    assert entry.startswith("state_dict,"), entry  # the trained weights, not state_dict_ema


@pytest.mark.parametrize("verb", ["info", "eval", "predict", "push", "convert", "export", "finetune", "pretrain"])
def test_every_verb_reading_a_model_has_the_reading_flags(verb, capsys):
    code, out, _ = run_cli([verb, "--help"], capsys)
    assert code == 0
    for flag in ("--from-format", "--arch", "--ema", "--no-ema", "--trust-checkpoint"):
        assert flag in out, (verb, flag)


def test_the_lightning_modules_read_their_source_as_every_verb_does(bare_v2, timm_ema_checkpoint):
    from swinzoo.train.module import SwinClassifier
    from swinzoo.train.simmim_module import SimMIMPretrainer

    module = SwinClassifier.from_pretrained(bare_v2, arch=NANO_V2, from_format="timm")
    assert module.model.config.window_size == 4
    assert SimMIMPretrainer.from_pretrained(bare_v2, arch=NANO_V2).model.config.window_size == 4
    src, model, _ = timm_ema_checkpoint
    trained = SwinClassifier.from_pretrained(src, ema=False).model
    assert torch.allclose(logits(trained), logits(model), atol=1e-6, rtol=0)


@pytest.mark.parametrize("source", ["zoo name", "file with its config"])
def test_arch_that_contradicts_what_the_source_says_is_refused(source, tmp_path, capsys):
    """`--arch` was ignored where the source names its own architecture (a zoo name, a file carrying its config):
    the user believed they had read one model and got another."""
    src = "swin_n_64"
    if source != "zoo name":
        src = tmp_path / "n64.safetensors"
        swinzoo.convert("swin_n_64", src)
    code, _, err = run_cli(["info", src, "--arch", "swin_t_224"], capsys)
    assert code == 2
    line = one_error_line(err, "--arch swin_t_224")
    assert "embed_dim" in line and "drop --arch" in line
    code, _, err = run_cli(["info", src, "--arch", "swin_n_64"], capsys)  # agreeing: redundant, not wrong
    assert code == 0, err
    with pytest.raises(swinzoo.SwinzooError, match="--arch swin_t_224 contradicts.*arch="):
        swinzoo.load_model(src, arch="swin_t_224")


def test_non_finite_weights_error_names_a_way_the_verb_has(images, tmp_path, capsys):
    """The NaN / Inf error said "pass --allow-nonfinite", which only convert and export have: info and predict
    answered "unrecognized argument" to the advice."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    good = tmp_path / "good.safetensors"
    swinzoo.convert("swin_n_64", good)
    with safe_open(str(good), "pt") as f:
        metadata = f.metadata()
    weights = load_file(good)
    weights["head.bias"][0] = float("nan")
    bad = tmp_path / "bad.safetensors"
    save_file(weights, bad, metadata=metadata)
    for verb, extra in (("info", []), ("predict", [images])):
        code, _, err = run_cli([verb, bad, *extra], capsys)
        assert code == 2
        line = one_error_line(err, "head.bias holds NaN")
        if "--allow-nonfinite" in line:
            assert "swinzoo convert" in line, line
    code, _, err = run_cli(["convert", bad, "-o", tmp_path / "kept.safetensors"], capsys)
    one_error_line(err, "--allow-nonfinite")
    code, _, err = run_cli(["convert", bad, "-o", tmp_path / "kept.safetensors", "--allow-nonfinite"], capsys)
    assert code == 0, err
