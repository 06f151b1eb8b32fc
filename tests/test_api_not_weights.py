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


def test_a_lightning_checkpoint_points_to_the_run_s_weights(tmp_path, capsys):
    """The layout Lightning saves (a swinzoo finetune's last.ckpt): the model's weights under `model.`."""
    run = tmp_path / "run"
    run.mkdir()
    weights = swinzoo.create_model("swin_n_64").state_dict()
    torch.save({"epoch": 0, "global_step": 3, "pytorch-lightning_version": "2.5.0",
                "state_dict": {f"model.{k}": v for k, v in weights.items()}, "optimizer_states": [],
                "lr_schedulers": []}, run / "last.ckpt")
    code, _, err = run_cli(["info", run / "last.ckpt"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"is a Lightning training checkpoint (weights with optimizer and loop state): read the run's weights " \
           f"from {run / 'model.safetensors'}, or continue the run with swinzoo finetune --resume {run}" in err
    # a model trained in the user's own LightningModule: how to write it in a form swinzoo reads
    assert "from your own LightningModule, write its model with swinzoo.save_model(module.model, " in err
