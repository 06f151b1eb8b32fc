"""Bad input to `swinzoo finetune` (issue 13): every case fails with one `error: ` line, before anything is written,
or, for a failure during training, leaving either nothing or a folder that a rerun with the same --out accepts.

Each case builds its inputs (a tiny source model, a 24 px image folder, recipes, run folders) inside `tmp_path`
first; `fails_cleanly` then asserts that nothing below `tmp_path` changed, except `owned` paths shown to be accepted
by a rerun.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

import swinzoo
from swinzoo.config import SwinConfig
from swinzoo.train.module import AtomicCheckpointIO
from tests.bad_inputs.harness import fails_cleanly
from tests.conftest import run_cli
from tests.test_finetune import image_folder

QUIET = ["--trainer", "limit_val_batches=1", "--trainer", "enable_model_summary=false",
         "--trainer", "enable_progress_bar=false"]


class Custom:
    """A class instance inside a checkpoint: what weights_only loading refuses."""

    def __init__(self) -> None:
        self.note = "pickled"


# ---------------------------------------------------------------------------------------------- shared inputs
@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> SimpleNamespace:
    """A tiny source, a small image folder and a finished 1-step run, built once; cases copy them into tmp_path."""
    root = tmp_path_factory.mktemp("shared")
    src = root / "tiny.safetensors"
    cfg = SwinConfig(img_size=32, embed_dim=8, depths=(1, 1), num_heads=(1, 2), window_size=4,
                     pretrained_window_sizes=(0, 0), num_classes=3)
    swinzoo.save_model(swinzoo.SwinTransformer(cfg), src, {"source": "test"})
    data = image_folder(root / "data", per_class=4)
    run = root / "run"
    result = swinzoo.finetune(str(src), data=str(data), recipe="nano_finetune", max_steps=1, batch_size=2,
                              num_workers=0, out=str(run),
                              trainer={"limit_val_batches": 1, "enable_model_summary": False,
                                       "enable_progress_bar": False})
    assert result.metrics["global_step"] == 1 and (run / "last.ckpt").is_file()
    return SimpleNamespace(src=src, data=data, run=run)


@pytest.fixture
def t(shared, tmp_path) -> SimpleNamespace:
    """This case's inputs inside tmp_path: src, data, out (not there yet), and the base finetune arguments."""
    src = tmp_path / "tiny.safetensors"
    shutil.copy(shared.src, src)
    data = tmp_path / "data"
    shutil.copytree(shared.data, data)
    out = tmp_path / "run"
    args = ["finetune", "--from", src, "--data", data, "--recipe", "nano_finetune", "--out", out,
            "--batch-size", "2", "--num-workers", "0", *QUIET]
    return SimpleNamespace(root=tmp_path, src=src, data=data, out=out, args=args, shared=shared)


# what SLURM, torchrun, LSF, MPI and a hand start on every node set
LAUNCHER_VARIABLES = ("MASTER_ADDR", "SLURM_NTASKS", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID", "LSB_JOBID",
                      "LSB_HOSTS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "WORLD_SIZE", "GROUP_RANK")


def steps(t, n: int = 1) -> list:
    return [*t.args, "--max-steps", n]


def no_transformer_engine(monkeypatch) -> None:
    """This machine as one without the transformer_engine package, whether or not it has it."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "transformer_engine" else find_spec(name, *a))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def png_bytes(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d)) for k, d in chunks)
    return b"\x89PNG\r\n\x1a\n" + body


def truncated_png(path: Path) -> None:
    """A PNG whose image data stops halfway, with valid chunk checksums: the header check (verify) passes it, only
    decoding finds it."""
    chunks = png_chunks(path.read_bytes())
    idat = b"".join(d for k, d in chunks if k == b"IDAT")
    out = [c for c in chunks if c[0] not in (b"IDAT", b"IEND")] + [(b"IDAT", idat[: len(idat) // 2]), (b"IEND", b"")]
    path.write_bytes(png_bytes(out))
    with Image.open(path) as im:
        im.verify()  # what the old check did: it passes


def corrupt_jpeg(path: Path) -> None:
    """A JPEG cut short (the end of its entropy-coded data and the EOI marker missing): verify() passes it."""
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    path.with_suffix(".jpg").write_bytes(data[: len(data) - 40])
    path.unlink()


def recipe_file(t, text: str) -> Path:
    path = t.root / "r.yaml"
    path.write_text("data: shapes\nbatch_size: 2\nmax_steps: 1\n" + text)
    return path


def resume_run(t) -> Path:
    """A copy of the finished run inside tmp_path, to damage."""
    run = t.root / "done"
    shutil.copytree(t.shared.run, run)
    return run


def edit_run_json(run: Path, **changes) -> None:
    plan = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**plan, **changes}))


def pickled_ckpt(run: Path) -> None:
    ckpt = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["extra"] = Custom()
    torch.save(ckpt, run / "last.ckpt")


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def unwritable(t) -> Path:
    """A folder where --out cannot be created (root ignores permissions: /proc refuses everyone)."""
    if os.geteuid() == 0:
        return Path("/proc/swinzoo-no-such-dir/run")
    ro = t.root / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ro / "run"


def nothing_started(monkeypatch) -> None:
    """For a value that must be refused before the run starts: were it not, the case fails here instead of starting
    the thousands of processes it asks for."""
    import lightning.pytorch as pl

    def started(*args, **kwargs):
        raise RuntimeError("the run started: the value was not refused")

    monkeypatch.setattr(pl.Trainer, "fit", started)  # where Lightning starts its processes and the loaders theirs


def no_gpu(monkeypatch) -> None:
    from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: False))
    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: False))


# ---------------------------------------------------------------------------------------------- the table
# id -> (build the arguments from the case's inputs (and monkeypatch), fragments the error line must hold)
CASES = {
    # 1. data checks that came too late: decoded up front now
    "truncated_png_in_val": (lambda t, mp: (truncated_png(t.data / "val/b/1.png"), steps(t))[1],
                             ["val/b/1.png", "not a readable image", "remove or replace"]),
    "corrupt_jpeg_in_train": (lambda t, mp: (corrupt_jpeg(t.data / "train/a/2.png"), steps(t))[1],
                              ["train/a/2.jpg", "not a readable image", "truncated"]),
    "png_cut_in_half": (lambda t, mp: (truncate(t.data / "train/b/0.png"), steps(t))[1],
                        ["train/b/0.png", "not a readable image"]),
    "one_class_folder": (lambda t, mp: ([shutil.rmtree(t.data / s / "b") for s in ("train", "val")], steps(t))[1],
                         ["at least 2 class folders in train/", "found 1 (a)", "add a folder"]),
    "bad_images_in_both_splits": (lambda t, mp: (truncate(t.data / "train/b/0.png"),
                                                 truncated_png(t.data / "val/b/1.png"), steps(t))[2],
                                  ["train/b/0.png", "not a readable image", "(1 more unreadable: 1.png)"]),
    # 2. every value, before anything is written
    "batch_size_0": (lambda t, mp: [*steps(t), "--batch-size", "0"], ["--batch-size 0", ">= 1"]),
    "max_steps_0": (lambda t, mp: steps(t, 0), ["--max-steps 0", ">= 1"]),
    "epochs_0": (lambda t, mp: [*t.args, "--epochs", "0"], ["--epochs 0", ">= 1"]),
    "negative_lr": (lambda t, mp: [*steps(t), "--lr", "-0.001"], ["--lr -0.001", "positive"]),
    "lr_read_as_a_flag": (lambda t, mp: [*steps(t), "--lr", "-inf"], ["--lr needs a value", "--lr=VAL"]),
    "flag_without_its_value": (lambda t, mp: [*steps(t), "--seed"], ["--seed needs a value"]),
    "recipe_negative_mixup": (lambda t, mp: [*steps(t), "--recipe", recipe_file(t, "mixup: -0.5\n")],
                              ["r.yaml", "mixup=-0.5", ">= 0"]),
    "recipe_label_smoothing_7": (lambda t, mp: [*steps(t), "--recipe", recipe_file(t, "label_smoothing: 7\n")],
                                 ["label_smoothing=7.0", "[0, 1)"]),
    "recipe_precision": (lambda t, mp: [*steps(t), "--recipe", recipe_file(t, "precision: half\n")],
                         ["precision='half'", "32-true"]),
    "precision_transformer_engine": (lambda t, mp: (no_transformer_engine(mp),
                                                    [*steps(t), "--precision", "transformer-engine"])[1],
                                     ["--precision transformer-engine needs the transformer_engine package",
                                      "pip install transformer-engine", "bf16-mixed"]),
    "recipe_precision_transformer_engine": (lambda t, mp: (no_transformer_engine(mp), [
        *steps(t), "--recipe", recipe_file(t, "precision: transformer-engine-float16\n")])[1],
        ["r.yaml: precision='transformer-engine-float16' needs the transformer_engine package"]),
    "precision_foo": (lambda t, mp: [*steps(t), "--precision", "foo"], ["--precision foo", "bf16-mixed"]),
    "accelerator_gpu_without_gpu": (lambda t, mp: (no_gpu(mp), [*steps(t), "--accelerator", "gpu"])[1],
                                    ["--accelerator gpu", "no such device", "cpu"]),
    "accelerator_unknown": (lambda t, mp: [*steps(t), "--accelerator", "abacus"], ["not an accelerator"]),
    "strategy_unknown": (lambda t, mp: [*steps(t), "--strategy", "ddpp"], ["--strategy ddpp", "ddp_spawn"]),
    "strategy_spawn": (lambda t, mp: [*steps(t), "--strategy", "ddp_spawn"], ["--strategy ddp_spawn: refused",
                                                                              "use --strategy ddp"]),
    "devices_0": (lambda t, mp: [*steps(t), "--devices", "0"], ["--devices 0", "0,"]),
    "devices_word": (lambda t, mp: [*steps(t), "--devices", "two"], ["--devices two"]),
    "num_nodes_0": (lambda t, mp: [*steps(t), "--num-nodes", "0"], ["--num-nodes 0", ">= 1"]),
    "num_nodes_without_a_launcher": (lambda t, mp: ([mp.delenv(k, raising=False) for k in LAUNCHER_VARIABLES],
                                                    [*steps(t), "--num-nodes", "2"])[1],
                                     ["--num-nodes 2: no multi-node launcher", "MASTER_ADDR"]),
    "num_workers_negative": (lambda t, mp: [*steps(t), "--num-workers", "-1"], ["--num-workers -1", "in [0, "]),
    "num_workers_huge": (lambda t, mp: (nothing_started(mp), [*steps(t), "--num-workers", "100000"])[1],
                         ["--num-workers 100000: must be a whole number in [0, ", "data loader processes"]),
    "devices_huge": (lambda t, mp: (nothing_started(mp), [*steps(t), "--accelerator", "cpu", "--devices", "1000"])[1],
                     ["--devices 1000: more processes than this machine can run", "give at most"]),
    "pretrain_num_workers_huge": (lambda t, mp: (nothing_started(mp), [
        "pretrain", "--from", t.src, "--data", t.data, "--out", t.out, "--max-steps", "1",
        "--num-workers", "100000"])[1], ["--num-workers 100000: must be a whole number in [0, "]),
    "data_is_a_file": (lambda t, mp: [*steps(t), "--data", t.src],
                       ["--data", "tiny.safetensors is a file; give a folder with train/<class>/ and val/<class>/"]),
    "ckpt_every_0": (lambda t, mp: [*steps(t), "--ckpt-every", "0"], ["--ckpt-every 0", ">= 1"]),
    "seed_negative": (lambda t, mp: [*steps(t), "--seed", "-1"], ["--seed -1", "[0, 4294967295]"]),
    "res_0": (lambda t, mp: [*steps(t), "--res", "0"], ["--res 0", ">= 1"]),
    "res_negative": (lambda t, mp: [*steps(t), "--res", "-64"], ["--res -64"]),
    "window_0": (lambda t, mp: [*steps(t), "--window", "0"], ["--window 0", ">= 1"]),
    "trainer_logger_string": (lambda t, mp: [*steps(t), "--trainer", "logger=wandb"],
                              ["logger='wandb'", "a Logger", "class_path", "--logger wandb"]),
    "trainer_callback_unknown": (lambda t, mp: [*steps(t), "--trainer.callbacks+=NoSuchCallback"],
                                 ["--trainer.callbacks", "NoSuchCallback"]),
    "trainer_no_checkpointing": (lambda t, mp: [*steps(t), "--trainer", "enable_checkpointing=false"],
                                 ["enable_checkpointing", "last.ckpt"]),
    "trainer_devices": (lambda t, mp: [*steps(t), "--trainer", "devices=2"], ["use --devices"]),
    "trainer_bad_type": (lambda t, mp: [*steps(t), "--trainer", "limit_val_batches=all"],
                         ["limit_val_batches='all'", "a number"]),
    "trainer_lightning_refuses": (lambda t, mp: [*steps(t), "--trainer", "limit_val_batches=-1"],
                                  ["Lightning refused", "limit_val_batches"]),
    "trainer_not_yaml": (lambda t, mp: [*steps(t), "--trainer", "limit_val_batches=[1"],
                         ["limit_val_batches='[1'", "a number"]),
    "config_unknown_key": (lambda t, mp: [*steps(t), "--config", recipe_file(t, "colour: blue\n")],
                           ["unknown config key 'colour'", "valid keys", "max_steps"]),
    "config_bad_value": (lambda t, mp: [*steps(t), "--config", recipe_file(t, "max_steps: many\n")],
                         ["--max-steps='many'", "whole number"]),
    "config_not_yaml": (lambda t, mp: [*steps(t), "--config", recipe_file(t, "res: [1\n")],
                        ["--config", "not valid YAML", "line 5"]),
    "config_missing": (lambda t, mp: [*steps(t), "--config", t.root / "nope.yaml"], ["nope.yaml", "no such file"]),
    "config_trainer_owned": (lambda t, mp: [*steps(t), "--config", recipe_file(t, "trainer:\n  max_epochs: 3\n")],
                             ["max_epochs", "use --epochs"]),
    "keep_unknown": (lambda t, mp: [*steps(t), "--keep", "worst"], ["--keep='worst'", "best, last"]),
    "logger_unknown": (lambda t, mp: [*steps(t), "--logger", "mlflow"], ["--logger='mlflow'", "tensorboard"]),
    # 4. --out
    "out_is_a_file": (lambda t, mp: (t.out.write_text("mine\n"), steps(t))[1], ["is a file", "--out"]),
    "out_inside_a_file": (lambda t, mp: (t.out.write_text("mine\n"), [*steps(t), "--out", t.out / "sub"])[1],
                          ["is a file, not a folder"]),
    "out_not_writable": (lambda t, mp: [*steps(t), "--out", unwritable(t)], ["cannot create folders", "writable"]),
    "out_not_empty": (lambda t, mp: (t.out.mkdir(), (t.out / "notes.txt").write_text("mine\n"), steps(t))[2],
                      ["not empty", "--resume"]),
    # 3./4. --resume on a damaged run
    "resume_truncated_ckpt": (lambda t, mp: (truncate(resume_run(t) / "last.ckpt"),
                                             ["finetune", "--resume", t.root / "done"])[1],
                              ["last.ckpt is truncated or corrupt", "another --out"]),
    "resume_garbage_ckpt": (lambda t, mp: ((resume_run(t) / "last.ckpt").write_bytes(b"\0" * 64),
                                           ["finetune", "--resume", t.root / "done"])[1],
                            ["last.ckpt is not a PyTorch checkpoint"]),
    "resume_pickled_ckpt": (lambda t, mp: (pickled_ckpt(resume_run(t)), ["finetune", "--resume", t.root / "done"])[1],
                            ["holds Python objects", "--trust-checkpoint"]),
    "resume_run_json_unknown_key": (lambda t, mp: (edit_run_json(resume_run(t), colour="blue"),
                                                   ["finetune", "--resume", t.root / "done"])[1],
                                    ["run.json: unknown key 'colour'", "valid keys"]),
    "resume_run_json_not_json": (lambda t, mp: ((resume_run(t) / "run.json").write_text("{not json"),
                                                ["finetune", "--resume", t.root / "done"])[1],
                                 ["run.json is not valid JSON"]),
    "resume_run_json_bad_value": (lambda t, mp: (edit_run_json(resume_run(t), devices=0),
                                                 ["finetune", "--resume", t.root / "done"])[1],
                                  ["run.json: devices=0"]),
    "resume_max_steps_0": (lambda t, mp: (resume_run(t), ["finetune", "--resume", t.root / "done", "--max-steps",
                                                          "0"])[1], ["--max-steps 0"]),
    "resume_a_finished_run": (lambda t, mp: (resume_run(t), ["finetune", "--resume", t.root / "done"])[1],
                              ["the run finished at step", "give --max-steps above"]),
    "resume_with_run_flags": (lambda t, mp: (resume_run(t), ["finetune", "--resume", t.root / "done", "--res", "64",
                                                             "--lr", "0.1", "--max-steps", "9"])[1],
                              ["--res, --lr cannot change a resumed run", "--from"]),
    "resume_changed_accumulation": (lambda t, mp: (resume_run(t), ["finetune", "--resume", t.root / "done",
                                                                    "--max-steps", "3",
                                                                    "--trainer.accumulate_grad_batches", "2"])[1],
                                    ["accumulate_grad_batches 2 cannot change a resumed run", "it ran with 1",
                                     "total batch", "--from", "model.safetensors"]),
    "resume_with_a_source": (lambda t, mp: (resume_run(t), ["finetune", "--resume", t.root / "done", "--from",
                                                            "swin_n_64", "--max-steps", "9"])[1],
                             ["error: --from cannot change a resumed run"]),
    "trainer_accumulate_0": (lambda t, mp: [*steps(t), "--trainer.accumulate_grad_batches", "0"],
                             ["--trainer.accumulate_grad_batches=0", "whole number >= 1"]),
    "trainer_val_check_interval_0": (lambda t, mp: [*steps(t), "--trainer.val_check_interval", "0"],
                                     ["--trainer.val_check_interval=0: give a whole number of batches >= 1",
                                      "fraction of an epoch in (0, 1]"]),
    "trainer_val_check_interval_negative": (lambda t, mp: [*steps(t), "--trainer.val_check_interval", "-2"],
                                            ["--trainer.val_check_interval=-2", "(0, 1]"]),
    "trainer_val_check_interval_above_1": (lambda t, mp: [*steps(t), "--trainer.val_check_interval", "1.5"],
                                           ["--trainer.val_check_interval=1.5", "(0, 1]"]),
    "trainer_limit_train_batches_0": (lambda t, mp: [*steps(t), "--trainer.limit_train_batches", "0"],
                                      ["--trainer.limit_train_batches=0: it would train nothing; drop it"]),
    "trainer_limit_train_batches_0.0": (lambda t, mp: [*steps(t), "--trainer.limit_train_batches", "0.0"],
                                        ["--trainer.limit_train_batches=0.0: it would train nothing", "(0, 1]"]),
    "config_trainer_a_number": (lambda t, mp: [*steps(t), "--config", recipe_file(t, "trainer: 5\n")],
                                ["trainer: give a mapping of Trainer options (NAME: VALUE", "not 5"]),
    "config_trainer_a_list": (lambda t, mp: [*steps(t), "--config", recipe_file(t, "trainer: [1, 2]\n")],
                              ["trainer: give a mapping of Trainer options", "not [1, 2]"]),
    "config_trainer_a_word": (lambda t, mp: [*steps(t), "--config", recipe_file(t, "trainer: foo\n")],
                              ["trainer: give a mapping of Trainer options", "not foo"]),
    "trainer_flag_a_list": (lambda t, mp: [*steps(t), "--trainer", "[1]"],
                            ["trainer: give a mapping of Trainer options", "--trainer.NAME VALUE", "not [1]"]),
    "resume_a_file": (lambda t, mp: ((t.root / "f").write_text("x"), ["finetune", "--resume", t.root / "f"])[1],
                      ["is a file"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_cleanly(case, t, capsys, monkeypatch):
    build, expect = CASES[case]
    args = build(t, monkeypatch)
    try:
        fails_cleanly(args, capsys, t.root, *expect)
    finally:
        if (t.root / "ro").exists():
            (t.root / "ro").chmod(0o755)
    assert not t.out.exists() or case.startswith("out_")


# ---------------------------------------------------------------------------------------------- failures in training
@pytest.mark.parametrize("where", ["new", "nested", "user_folder"])
def test_failure_before_first_checkpoint_leaves_nothing(where, t, capsys, monkeypatch):
    """A data error in the middle of training (a file changed after the check): the run removes what it created;
    an (empty) folder the user made stays, as it was."""
    from swinzoo.train.data import ImageFolderSplit
    from swinzoo.train.folder import RunFolder

    def broken(self, index):
        raise OSError(5, "Input/output error", str(self.samples[index][0]))

    monkeypatch.setattr(ImageFolderSplit, "__getitem__", broken)
    created = []  # the run got as far as creating its folder (then removed it)
    real_create = RunFolder.create
    monkeypatch.setattr(RunFolder, "create",
                        lambda self, plan, config="": (created.append(1), real_create(self, plan, config))[1])
    out = {"new": t.out, "nested": t.root / "a" / "b" / "run", "user_folder": t.out}[where]
    if where == "user_folder":
        out.mkdir()
    fails_cleanly([*steps(t), "--out", out], capsys, t.root, "Input/output error", code=1)  # the disk's, not input
    assert created and out.is_dir() == (where == "user_folder") and not (t.root / "a").exists()


def test_full_disk_keeps_the_previous_checkpoint(t, capsys, monkeypatch):
    """ENOSPC while writing last.ckpt at step 2 (half the bytes written): last.ckpt of step 1 is intact, no temp file
    is left, and `--resume` continues from it."""
    real_save, calls = torch.save, []

    def full_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) < 2:
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    fails_cleanly([*steps(t, 3), "--ckpt-every", "1"], capsys, t.root, "No space left on device", owned=("run",),
                  code=1)
    monkeypatch.setattr(torch, "save", real_save)
    assert len(calls) == 2
    assert torch.load(t.out / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 1
    assert sorted(p.name for p in t.out.iterdir()) == [".swinzoo-run.lock", "config.yaml", "last.ckpt", "logs",
                                                        "run.json"]  # no .tmp left
    code, stdout, err = run_cli(["finetune", "--resume", t.out, "--max-steps", "2"], capsys)
    assert code == 0, err
    assert "at global step 1" in stdout
    assert json.loads((t.out / "metrics.json").read_text())["global_step"] == 2


def test_checkpoint_io_is_atomic(tmp_path, monkeypatch):
    """The plugin alone: a failed save leaves the previous file byte-identical and loadable."""
    io_plugin = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io_plugin.save_checkpoint({"global_step": 1, "state_dict": {"w": torch.ones(4)}}, path)
    before = path.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        io_plugin.save_checkpoint({"global_step": 2, "state_dict": {"w": torch.zeros(4)}}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert io_plugin.load_checkpoint(path)["global_step"] == 1


def test_folder_of_a_run_killed_before_its_first_checkpoint_is_accepted(t, capsys):
    """run.json and logs/ without last.ckpt (a run killed before it checkpointed): a rerun with the same --out
    reuses the folder instead of calling it "not empty"."""
    t.out.mkdir()
    shutil.copy(t.shared.run / "run.json", t.out / "run.json")
    (t.out / "logs").mkdir()
    (t.out / "logs" / "metrics.csv").write_text("epoch,step\n")
    code, _, err = run_cli(steps(t), capsys)
    assert code == 0, err
    assert (t.out / "model.safetensors").is_file() and (t.out / "last.ckpt").is_file()


def test_a_run_killed_after_its_last_step_resumes_to_write_its_outputs(t, capsys):
    """last.ckpt at max_steps but no outputs yet (killed in the final validation): --resume finishes it."""
    run = resume_run(t)
    (run / "metrics.json").unlink()
    (run / "model.safetensors").unlink()
    code, _, err = run_cli(["finetune", "--resume", run], capsys)
    assert code == 0, err
    assert (run / "model.safetensors").exists() and json.loads((run / "metrics.json").read_text())["global_step"] >= 1
