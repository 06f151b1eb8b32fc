"""`--strategy fsdp` (Lightning's FSDPStrategy, torch's FSDP1) end to end on two CPU processes, through
`tests.fsdp_cpu` (Lightning refuses FSDP without a GPU; torch's FSDP runs on the CPU with gloo): each rank holds a
shard of every parameter, so what swinzoo reads or loads of the model after Lightning wrapped it (the exported
weights, the best weights kept, the weight-decay groups, gradient clipping) must go through FSDP."""

import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

import swinzoo
from tests.test_finetune import env

FSDP = ["--devices", "2", "--accelerator", "cpu", "--strategy", "fsdp_cpu", "--num-workers", "0"]


def fsdp(*args, cwd: Path) -> subprocess.CompletedProcess:
    """`swinzoo ARGS` on two CPU processes under FSDP."""
    return subprocess.run([sys.executable, "-m", "tests.fsdp_cpu", *map(str, args), *FSDP], env=env(),
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def assert_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    shapes = [k for k in a if a[k].shape != b[k].shape]
    assert not shapes, f"{shapes[0]}: {tuple(a[shapes[0]].shape)} vs {tuple(b[shapes[0]].shape)}"
    worst = max(((a[k] - b[k]).abs().max().item(), k) for k in a)
    assert worst[0] <= atol, f"{worst[1]} differs by {worst[0]:.3g}"


def test_fsdp_pretrain_exports_the_whole_model(tmp_path):
    out = tmp_path / "mim"
    proc = fsdp("pretrain", "--from", "swin_n_64", "--data", "shapes", "--max-steps", "2", "--batch-size", "4",
                "--out", out, "--trainer.limit_val_batches", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert_close(load_file(out / "model.safetensors"), {k[len("model."):]: v for k, v in last.items()}, 0)
    swinzoo.load_simmim(out)
