"""Files taken for weights that hold something else get one line saying what they are and what to use instead."""

import pytest
import torch

import swinzoo
from swinzoo import SwinzooError

from .conftest import run_cli


def test_a_torch_export_program_is_named_as_such(tmp_path, capsys):
    program = torch.export.export(torch.nn.Linear(4, 2), (torch.randn(1, 4),))
    torch.export.save(program, tmp_path / "n.pt2")
    code, _, err = run_cli(["info", tmp_path / "n.pt2"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "is a torch.export program (a .pt2 graph), not a checkpoint: run it with torch.export.load(path)" in err
    for fmt in ("auto", "official"):
        with pytest.raises(SwinzooError, match="torch.export program"):
            swinzoo.read_checkpoint(tmp_path / "n.pt2", from_format=fmt)


def test_a_lightning_checkpoint_of_the_user_s_module_reads_its_swin(tmp_path, capsys):
    """The layout Lightning saves for a module of the user's holding a swinzoo model as `model` (no swinzoo config in
    its hyper-parameters): the Swin under `model.` is read (its last stage narrower than its window: the clamped
    bias tables tell the resolution)."""
    weights = swinzoo.create_model("swin_n_64").state_dict()
    torch.save({"epoch": 0, "global_step": 3, "pytorch-lightning_version": "2.5.0",
                "state_dict": {f"model.{k}": v for k, v in weights.items()}, "optimizer_states": [],
                "lr_schedulers": []}, tmp_path / "last.ckpt")
    code, out, err = run_cli(["info", tmp_path / "last.ckpt"], capsys)
    assert code == 0, err
    model = swinzoo.load_model(tmp_path / "last.ckpt")
    assert model.config == swinzoo.create_model("swin_n_64").config.replace(class_names=None)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())


def test_an_onnx_graph_is_named_as_such(tmp_path, capsys):
    """`export --to onnx` writes a graph for onnxruntime; given back as weights it was 'neither a zip archive nor a
    pickle', now named, with what runs it."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph, producer_name="pytorch"), tmp_path / "m.onnx")
    for verb in ("info", "eval"):
        code, _, err = run_cli([verb, tmp_path / "m.onnx"], capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert "is not a PyTorch checkpoint (it is an ONNX graph, not weights)" in err
        assert "onnxruntime.InferenceSession" in err
