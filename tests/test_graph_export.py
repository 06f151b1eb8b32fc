"""`swinzoo export --to onnx|pt2`: graphs with dynamic batch, height and width that give the PyTorch module's
outputs at sizes other than the one they were traced at (square, non-square, multiples of neither the patch nor
the window), for classifiers and detection backbones, V1 and V2. ONNX: the dynamo (torch.export-based) exporter,
opset 18, run with onnxruntime. Each export is made once per module (an ONNX export takes ~1 min on 2 cores)."""

import json

import pytest
import torch

from swinzoo.converters import graph
from swinzoo.converters.native import save_model
from swinzoo.errors import SwinzooError
from swinzoo.models import SwinTransformer
from swinzoo.sources import load_model
from swinzoo.zoo import zoo_config
from tests.conftest import run_cli

# the issue's sizes for a 224 model, and ones around the nano models' 64 px, the smallest the graphs take (97, 75:
# odd, multiples of neither the patch, the window nor 32)
SIZES = [(1, 224, 224), (2, 256, 192), (1, 250, 190), (3, 64, 64), (1, 97, 75), (2, 64, 130)]


def as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


@pytest.fixture(scope="module")
def tiny_v2(tmp_path_factory):
    """A small V2 classifier with random weights (non-zero CPB, logit scales, biases) as a swinzoo file."""
    cfg = zoo_config("swinv2_t_256_w8").replace(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
                                                  num_classes=7, class_names=None, img_size=64)
    torch.manual_seed(0)
    model = SwinTransformer(cfg)
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("v2") / "tiny_v2.safetensors"
    save_model(model, path, {"test": "tiny_v2"})
    return path


def onnx_runner(path):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session, lambda x: tuple(torch.from_numpy(o) for o in session.run(None, {name: x.numpy()}))


def check_sizes(run, model, atol):
    torch.manual_seed(1)
    for batch, h, w in SIZES:
        x = torch.randn(batch, 3, h, w)
        with torch.no_grad():
            expected = as_tuple(model(x))
        got = as_tuple(run(x))
        assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in expected], (h, w)
        for a, b in zip(got, expected):
            assert (a - b).abs().max().item() <= atol, (batch, h, w)


@pytest.fixture(scope="module")
def onnx_classifier(tmp_path_factory):
    """swin_n_64 exported once for the module, over a file of the user's with --overwrite: the replacing half of
    bad_inputs/test_files.py's test_an_existing_output_file_is_kept_unless_overwrite (its refusing half runs there)."""
    pytest.importorskip("onnxscript")
    out = tmp_path_factory.mktemp("onnx") / "swin_n_64.onnx"
    out.write_text("my notes")
    code = _cli(["export", "swin_n_64", "--to", "onnx", "-o", str(out), "--overwrite"])
    assert code == 0
    return out


def _cli(args):
    from swinzoo.cli import cli_main

    return cli_main(args)


def test_onnx_classifier_runs_every_size(onnx_classifier):
    session, run = onnx_runner(onnx_classifier)
    check_sizes(run, load_model("swin_n_64").float().eval(), atol=1e-4)
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    # batch, height and width are symbolic in the file itself, not fixed at the traced 2 x 64 x 64
    assert not any(isinstance(d, int) for d in session.get_inputs()[0].shape[:1] + session.get_inputs()[0].shape[2:])


def test_onnx_file_says_its_opset_and_config(onnx_classifier):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(onnx_classifier))
    assert {o.domain: o.version for o in model.opset_import}[""] == graph.ONNX_OPSET == 18
    meta = json.loads({p.key: p.value for p in model.metadata_props}["swinzoo"])
    assert meta["config"]["window_size"] == 4 and meta["dynamic"] == ["batch", "height", "width"]
    assert meta["outputs"] == ["logits"]
    # the eval preprocessing, resolved: a deployment without swinzoo can still feed the graph what it expects
    assert meta["preprocess"] == {"input_size": [3, 64, 64], "interpolation": "bicubic",
                                  "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "crop_pct": 0.875,
                                  "crop_mode": "center"}


def test_onnx_backbone_v2_runs_every_size(tiny_v2, tmp_path):
    pytest.importorskip("onnxscript")
    out = tmp_path / "backbone.onnx"
    assert _cli(["export", str(tiny_v2), "--features", "--to", "onnx", "-o", str(out)]) == 0
    session, run = onnx_runner(out)
    assert [o.name for o in session.get_outputs()] == ["stage0", "stage1", "stage2", "stage3"]
    check_sizes(run, load_model(tiny_v2, features_only=True).float().eval(), atol=1e-4)


@pytest.mark.parametrize("features", [False, True], ids=["classifier", "backbone"])
def test_pt2_runs_every_size(tiny_v2, tmp_path, capfd, features):
    # the classifier goes to a name without .pt2 (a name the user may choose): torch.export.save logged "Expect
    # archive file to be a file ending in .pt2 ... Instead got {.m.swinzoo-tmp-...}" on stderr for such a name
    out = tmp_path / ("model.pt2" if features else "m")
    src = str(tiny_v2) if features else "swin_n_64"
    assert _cli(["export", src, "--to", "pt2", "-o", str(out)] + (["--out-indices", "1", "3"] if features else [])) == 0
    assert capfd.readouterr().err == ""
    extra = {graph.METADATA_KEY: ""}
    with open(out, "rb") as f:
        program = torch.export.load(f, extra_files=extra)
    model = (load_model(src, features_only=True, out_indices=(1, 3)) if features else load_model(src)).float().eval()
    check_sizes(program.module(), model, atol=1e-5)
    assert json.loads(extra[graph.METADATA_KEY])["outputs"] == (["stage1", "stage3"] if features else ["logits"])


def test_absolute_position_embedding_pins_a_classifiers_size(tmp_path):
    cfg = zoo_config("swin_n_64").replace(ape=True, depths=(1, 1, 1, 1), embed_dim=8, num_heads=(1, 1, 1, 1))
    torch.manual_seed(0)
    model = SwinTransformer(cfg).eval()
    src = tmp_path / "ape.safetensors"
    save_model(model, src)
    out = tmp_path / "ape.pt2"
    assert _cli(["export", str(src), "--to", "pt2", "-o", str(out)]) == 0
    exported = torch.export.load(str(out)).module()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x), rtol=0, atol=1e-5)
    with pytest.raises((AssertionError, RuntimeError)):  # 16 x 16 embedding positions: the graph refuses 96 px
        exported(torch.randn(1, 3, 96, 96))


def test_an_unexportable_model_is_one_line_and_leaves_no_file(tmp_path, monkeypatch, capsys):
    from swinzoo.models import traceable as export_path

    def data_dependent(stage, x, dense):  # Python control flow on a tensor's values cannot be exported
        return x * 2 if x.sum() > 0 else x

    monkeypatch.setattr(export_path, "stage_blocks", data_dependent)
    out = tmp_path / "model.pt2"
    code, stdout, stderr = run_cli(["export", "swin_n_64", "--to", "pt2", "-o", str(out)], capsys)
    assert code == 2  # refused in one line (a SwinzooError), not an unexpected exception (exit 1)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot export this model to pt2"), stderr
    assert list(tmp_path.iterdir()) == []


def test_onnx_without_the_extra_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)
    with pytest.raises(SwinzooError, match=r"pip install 'swinzoo\[onnx\]'"):
        graph.write(load_model_checkpoint(), "onnx", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def load_model_checkpoint():
    from swinzoo.sources import read_checkpoint

    return read_checkpoint("swin_n_64")


def test_a_headless_model_exports_features_not_logits():
    """A SimMIM encoder exported as a graph (0 classes) gives pooled features: named so."""
    cfg = load_model("swin_n_64").config
    assert graph.output_names(cfg) == ["logits"]
    assert graph.output_names(cfg.replace(num_classes=0, class_names=None)) == ["features"]
