"""The typed library under the CLI: each verb's function called from Python gives what the CLI gives, and the
format registry is the one place formats are looked up (a new format is one module-like object and one row)."""

import json
import platform

import pytest
import torch

import swinzoo
from swinzoo import converters
from swinzoo.converters import Checkpoint, Format

from .conftest import V1, expected, fixture_pth, one_error_line, run_cli


def test_convert_and_export_from_python_match_the_cli(tmp_path, capsys):
    done = swinzoo.convert(fixture_pth(V1), tmp_path / "py.safetensors", res=384)
    assert done.config.img_size == 384 and done.config.window_size == 12 and done.report.interpolated
    assert run_cli(["convert", fixture_pth(V1), "--res", 384, "-o", tmp_path / "cli.safetensors"], capsys)[0] == 0
    py, cli = swinzoo.read_checkpoint(done.output), swinzoo.read_checkpoint(tmp_path / "cli.safetensors")
    assert py.config == cli.config and all(torch.equal(py.state_dict[k], cli.state_dict[k]) for k in py.state_dict)

    exported = swinzoo.export(done.output, "official", tmp_path / "back.pth")
    assert "load_state_dict" in exported.how_to_load
    assert swinzoo.read_checkpoint(tmp_path / "back.pth").config == done.config


def test_load_model_reproduces_the_official_logits():
    model = swinzoo.load_model(fixture_pth(V1)).double().eval()
    exp = expected(V1)
    with torch.no_grad():
        torch.testing.assert_close(model(exp["input"].double()), exp["logits"].double(), rtol=0, atol=1e-6)


def test_create_model_pretrained_and_fresh():
    fresh = swinzoo.create_model("swin_n_64", num_classes=3)
    assert fresh.config.num_classes == 3 and fresh.provenance["weights"] == "initialised"
    shipped = swinzoo.create_model("swin_n_64", pretrained=True)
    assert torch.equal(shipped.state_dict()["head.weight"], swinzoo.load_model("swin_n_64").state_dict()["head.weight"])


def test_evaluate_predict_and_push_dry_run_from_python(tmp_path):
    from PIL import Image

    from swinzoo.train.shapes import ShapesDataset, render

    result = swinzoo.evaluate("swin_n_64", batch_size=50)
    assert result["data"] == "shapes" and result["n"] == 1000
    # what the model scores on the shapes validation split, computed here without evaluate's loader and metric
    model, val = swinzoo.load_model("swin_n_64").eval(), ShapesDataset("val", 64)
    transform = swinzoo.create_transform(model)
    images = torch.stack([transform(val[i][0]) for i in range(len(val))])
    labels = torch.tensor([val[i][1] for i in range(len(val))])
    with torch.no_grad():
        assert result["top1"] == pytest.approx((model(images).argmax(-1) == labels).double().mean().item())
    image = tmp_path / "x.png"
    Image.fromarray(render(0, 64, seed=1).permute(1, 2, 0).numpy()).save(image)
    (row,) = swinzoo.predict("swin_n_64", [image], topk=2)
    with torch.no_grad():
        probs, best = model(transform(Image.open(image))[None]).softmax(-1)[0].topk(2)
    assert row["image"] == str(image) and [c for c, _ in row["predictions"]] == [model.config.class_names[i]
                                                                                 for i in best]
    assert [p for _, p in row["predictions"]] == pytest.approx(probs.tolist(), abs=1e-6)
    model_file = swinzoo.convert("swin_n_64", tmp_path / "n.safetensors").output
    out = swinzoo.push(model_file, "acme/n64", dry_run=tmp_path / "preview")
    assert json.loads((tmp_path / "preview" / "config.json").read_text())["architecture"]
    assert out == str(tmp_path / "preview")


def test_a_format_is_one_row_in_the_registry(tmp_path, monkeypatch):
    """A toy format registered in FORMATS is written by `export` and read back by `read_checkpoint`."""

    def write(checkpoint: Checkpoint, out, **options) -> str:
        torch.save({"toy": checkpoint.state_dict, "config": checkpoint.config.to_dict()}, out)
        return "torch.load(OUT)"

    def read(path, arch, arch_name, trust_checkpoint, raw) -> Checkpoint:
        data = torch.load(path, weights_only=True)
        return Checkpoint(data["toy"], swinzoo.SwinConfig.from_dict(data["config"]))

    toy = Format("toy", "a test format", read, write, claims_keys=lambda sd: "toy" in sd)
    monkeypatch.setitem(converters.FORMATS, "toy", toy)
    swinzoo.export("swin_n_64", "toy", tmp_path / "m.toy")
    back = swinzoo.read_checkpoint(tmp_path / "m.toy", from_format="toy")
    assert back.provenance == {"source": str(tmp_path / "m.toy"), "format": "toy"}
    assert back.config == swinzoo.read_checkpoint("swin_n_64").config
    with pytest.raises(swinzoo.SwinzooError, match="unknown format 'nope'"):
        swinzoo.export("swin_n_64", "nope", tmp_path / "x")


def test_zero_shot_sweep_and_plot(tmp_path, capsys):
    """`eval MODEL... --res R...`: each model moved to each resolution by the transfer alone, a table, a plot."""
    code, out, err = run_cli(["eval", "swin_n_64", "--res", 64, 96, "--batch-size", 500, "--num-workers", 0,
                              "--json", "--plot", tmp_path / "zs.png"], capsys)
    assert code == 0, err
    if platform.libc_ver()[0] == "glibc":  # the run-log line once a sweep, not once per evaluation
        assert err.count("glibc keeps freed memory") == 1
    rows = json.loads(out)
    assert [(r["res"], r["window"]) for r in rows] == [(64, 4), (96, 6)]
    assert rows[0]["top1"] > rows[1]["top1"] > 0.1  # the nano model loses accuracy off its training resolution
    single = swinzoo.evaluate("swin_n_64", res=96, batch_size=500, num_workers=0)
    assert single["top1"] == rows[1]["top1"]
    assert (tmp_path / "zs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a plot that cannot be written: one error line, before anything is evaluated (the output's folder is checked
    # when the command starts)
    (tmp_path / "file").write_text("x")
    code, out, err = run_cli(["eval", "swin_n_64", "--res", 64, "--batch-size", 500, "--num-workers", 0,
                              "--plot", tmp_path / "file" / "zs.png"], capsys)
    assert code == 2 and out == ""
    one_error_line(err.strip().splitlines()[-1], f"{tmp_path / 'file'} is a file, not a folder")  # after evaluate's log
