"""Bad files, paths and numbers against convert / export / eval / predict / info / bench, and process faults
(SIGTERM, SIGKILL, a full disk) mid-write. Every case: exit 2 (1 for a full disk), one line on stderr naming the
problem and the fix, nothing created, changed or removed outside what the command owns."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from swinzoo.converters.native import CONFIG_KEY, PROVENANCE_KEY
from tests.bad_inputs.harness import fails_cleanly, snapshot
from tests.conftest import V1, fixture_pth

NANO = Path(__file__).resolve().parents[2] / "swinzoo" / "data" / "swin_n_64.safetensors"
SIMMIM = Path(__file__).resolve().parents[1] / "fixtures" / "simmim" / "simmim_swin_tiny_w6_192.pth"
ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------- input builders
def nano_copy(tmp: Path, name: str = "m.safetensors", edit=None, meta_edit=None) -> Path:
    """The shipped nano model, optionally with its tensors or metadata edited."""
    from safetensors import safe_open

    with safe_open(str(NANO), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(NANO)
    if edit:
        edit(tensors)
    if meta_edit:
        meta_edit(meta)
    path = tmp / name
    save_file(tensors, str(path), metadata=meta)
    return path


def set_nan(tensors):
    tensors["layers.1.blocks.0.mlp.fc1.weight"][3, 5] = float("nan")


def set_inf(tensors):
    tensors["norm.weight"][0] = float("inf")


def to_int(tensors):
    tensors["head.bias"] = tensors["head.bias"].to(torch.int64)


def scrambled(tmp: Path) -> Path:
    """A safetensors file whose data bytes were overwritten with random bytes (header intact)."""
    path = nano_copy(tmp)
    raw = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")
    g = torch.Generator().manual_seed(0)
    raw[header:] = bytes(torch.randint(0, 256, (len(raw) - header,), generator=g, dtype=torch.uint8).tolist())
    path.write_bytes(bytes(raw))
    return path


def malicious_pickle(tmp: Path) -> Path:
    """A .pth whose unpickling would create `pwned` (it must never run without --trust-checkpoint)."""

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'pwned'}",))

    path = tmp / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "config": Payload()}, path)
    return path


def png_file(tmp: Path) -> Path:
    from PIL import Image

    path = tmp / "x.png"
    Image.new("RGB", (8, 8)).save(path)
    return path


def write(tmp: Path, name: str, data: bytes | str) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def truncated(tmp: Path, src: Path, name: str, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    return write(tmp, name, data[: int(len(data) * keep)])


def folder_with(tmp: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        write(tmp / "d", name, text)
    return tmp / "d"


# name -> (builder(tmp) -> (args, owned), fragments the line must contain)
CASES = {
    # --- files that are not what they claim to be
    "missing file": (lambda t: ["convert", t / "nope.pth", "-o", t / "o.safetensors"], ["does not exist"]),
    "folder without config": (lambda t: ["convert", folder_with(t, {"x.bin": "x"}), "-o", t / "o.safetensors"],
                              ["has no config.json"]),
    "empty .safetensors": (lambda t: ["info", write(t, "e.safetensors", "")],
                           ["e.safetensors is not a readable safetensors file", "download or write it again"]),
    "text file": (lambda t: ["convert", write(t, "a.pth", "hello"), "-o", t / "o.safetensors"],
                  ["not a PyTorch checkpoint"]),
    # ... said for what they are, with what to give instead
    "an image as the model": (lambda t: ["convert", png_file(t), "-o", t / "o.safetensors"],
                              ["x.png is not a PyTorch checkpoint (it is a PNG image); give a model file",
                               "a zoo name or hf-hub:ORG/NAME"]),
    "a recipe as the model": (lambda t: ["info", write(t, "r.yaml", "base_lr: 1e-3\n")],
                              ["(it is a text file); give a model file"]),
    "an empty .pth": (lambda t: ["predict", write(t, "e.pth", b""), png_file(t)], ["(it is empty); give a model file"]),
    "truncated pth": (lambda t: ["convert", truncated(t, fixture_pth(V1), "t.pth"), "-o", t / "o.safetensors"],
                      ["truncated or corrupt"]),
    "truncated safetensors": (lambda t: ["convert", truncated(t, NANO, "t.safetensors"), "-o", t / "o.safetensors"],
                              ["not a readable safetensors"]),
    "metadata contradicting the weights": (
        lambda t: ["convert", nano_copy(t, meta_edit=_config_edit(img_size=128, window_size=8)), "-o", t / "o.st"],
        ["its metadata contradicts its weights", "relative_position_bias_table", "(49, 1)", "(225, 1)"]),
    "a timm file as official": (lambda t: ["convert", timm_file(t), "--from-format", "official", "-o", t / "o.st"],
                                ["is a timm Swin state dict", "--from-format timm"]),
    "a timm folder as hf": (lambda t: ["convert", timm_file(t).parent, "--from-format", "hf", "-o", t / "o.st"],
                            ["has no model_type", "--from-format timm"]),
    "a folder as an official file": (lambda t: ["convert", folder_with(t, {"model.safetensors": "x"}),
                                                "--from-format", "official", "-o", t / "o.st"],
                                     ["is a folder", "--from-format"]),
    "non-swin state dict": (lambda t: ["convert", _saved(t, {"a.weight": torch.zeros(2)}), "-o", t / "o.st"],
                            ["not a Swin checkpoint"]),
    "detector without a Swin backbone": (
        lambda t: ["convert", _saved(t, {"meta": {"epoch": 12}, "state_dict": {
            "backbone.conv1.weight": torch.zeros(2), "backbone.layer1.0.conv1.weight": torch.zeros(2),
            "neck.fpn_convs.0.conv.weight": torch.zeros(2)}}), "-o", t / "o.safetensors"],
        ["backbone is not a Swin", "backbone.conv1.weight", "Swin backbones only"]),
    "out_indices out of range": (lambda t: ["export", "swin_n_64", "--out-indices", "1", "4", "--to", "pt2", "-o",
                                            t / "o.pt2"], ["out_indices [1, 4] out of range"]),
    "classifier exported as SimMIM": (lambda t: ["export", "swin_n_64", "--to", "simmim", "-o", t / "o.pth"],
                                      ["not a SimMIM model", "load_simmim"]),
    "SimMIM model evaluated": (lambda t: ["eval", SIMMIM, "--data", "shapes"], ["no classifier head",
                                                                                "swinzoo finetune --from"]),
    "SimMIM export moved": (lambda t: ["export", SIMMIM, "--to", "simmim", "--res", "224", "-o", t / "o.pth"],
                            ["own geometry", "swinzoo convert"]),
    "pickle via convert": (lambda t: ["convert", malicious_pickle(t), "-o", t / "o.safetensors"],
                           ["Python objects", "--trust-checkpoint"]),
    "pickle via eval": (lambda t: ["eval", malicious_pickle(t), "--data", "shapes"], ["--trust-checkpoint"]),
    "pickle via predict": (lambda t: ["predict", malicious_pickle(t), write(t, "x.png", "x")], ["--trust-checkpoint"]),
    "pickle via info": (lambda t: ["info", malicious_pickle(t)], ["--trust-checkpoint"]),
    "pickle via push": (lambda t: ["push", malicious_pickle(t), "--repo", "acme/x", "--dry-run", t / "p"],
                        ["--trust-checkpoint"]),
    "pickle via export": (lambda t: ["export", malicious_pickle(t), "--to", "timm", "-o", t / "o"],
                          ["--trust-checkpoint"]),
    # --- corrupt weights
    "one NaN": (lambda t: ["convert", nano_copy(t, edit=set_nan), "-o", t / "o.safetensors"],
                ["layers.1.blocks.0.mlp.fc1.weight", "NaN or Inf", "--allow-nonfinite"]),
    "one Inf via eval": (lambda t: ["eval", nano_copy(t, edit=set_inf)], ["norm.weight", "NaN or Inf"]),
    "NaN via predict": (lambda t: ["predict", nano_copy(t, edit=set_nan), write(t, "x.png", "x")], ["NaN or Inf"]),
    "integer weights": (lambda t: ["convert", nano_copy(t, edit=to_int), "-o", t / "o.safetensors"],
                        ["head.bias", "int64", "floating point"]),
    "scrambled data bytes": (lambda t: ["convert", scrambled(t), "-o", t / "o.safetensors"], ["NaN or Inf"]),
    # --- malformed metadata and configs
    "config not JSON": (lambda t: ["info", nano_copy(t, meta_edit=lambda m: m.update({CONFIG_KEY: "{oops"}))],
                        ["not valid JSON"]),
    "config depths null": (lambda t: ["info", nano_copy(t, meta_edit=_config_edit(depths=None))],
                           ["invalid config values"]),
    "config not an object": (lambda t: ["info", nano_copy(t, meta_edit=lambda m: m.update({CONFIG_KEY: "[1]"}))],
                             ["not a JSON object"]),
    "config negative size": (lambda t: ["info", nano_copy(t, meta_edit=_config_edit(img_size=-64))],
                             ["img_size must be a positive integer"]),
    "provenance not JSON": (lambda t: ["convert", nano_copy(t, meta_edit=lambda m: m.update({PROVENANCE_KEY: "{"})),
                                       "-o", t / "o.safetensors"], ["unreadable swinzoo metadata"]),
    "config.json not JSON": (lambda t: ["convert", folder_with(t, {"config.json": "{", "model.safetensors": "x"}),
                                        "-o", t / "o.safetensors"], ["not valid JSON"]),
    "config.json a list": (lambda t: ["convert", folder_with(t, {"config.json": "[1, 2]"}), "--from-format", "hf",
                                      "-o", t / "o.safetensors"], ["holds a JSON list, not the object"]),
    "hf config.json window a word": (lambda t: ["convert", folder_with(t, {
        "config.json": '{"model_type": "swin", "window_size": "eight"}', "model.safetensors": "x"}),
        "-o", t / "o.safetensors"], ["window_size must be whole numbers", "'eight'"]),
    "config.json of nothing known": (lambda t: ["convert", folder_with(t, {"config.json": "{}"}), "-o",
                                                t / "o.safetensors"], ["neither a timm config", "--from-format"]),
    "wrong --from-format": (lambda t: ["convert", fixture_pth(V1), "--from-format", "timm", "-o", t / "o.st"],
                            ["not a timm Swin state dict"]),
    "unknown --arch": (lambda t: ["convert", fixture_pth(V1), "--arch", "swin_q_224", "-o", t / "o.st"],
                       ["unknown model name", "did you mean"]),
    "contradicting --arch": (lambda t: ["convert", fixture_pth(V1), "--arch", "swin_b_224", "-o", t / "o.st"],
                             ["contradicts the checkpoint"]),
    # --- outputs
    "export into a user folder": (lambda t: ["export", "swin_n_64", "--to", "timm", "-o",
                                             folder_with(t, {"important.txt": "x", "sub/keep.txt": "y"})],
                                  ["did not write", "important.txt", "--overwrite"]),
    "convert onto a folder": (lambda t: ["convert", "swin_n_64", "-o", folder_with(t, {"a.txt": "x"})],
                              ["is a folder", "give a file name"]),
    "convert onto the current folder": (lambda t: ["convert", "swin_n_64", "-o", "."], ["is a folder"]),
    "export official onto a folder": (lambda t: ["export", "swin_n_64", "--to", "official", "-o",
                                                 folder_with(t, {"a.txt": "x"})], ["is a folder"]),
    "output below a file": (lambda t: ["convert", "swin_n_64", "-o", write(t, "f", "x") / "o.safetensors"],
                            ["is a file, not a folder"]),
    "export folder format onto a file": (lambda t: ["export", "swin_n_64", "--to", "timm", "-o", write(t, "f", "x")],
                                         ["exists and is not a folder"]),
    # --- numbers
    "res 0": (lambda t: ["convert", "swin_n_64", "--res", "0", "-o", t / "o.st"], ["--res", "positive integer"]),
    "res negative": (lambda t: ["convert", "swin_n_64", "--res", "-64", "-o", t / "o.st"], ["positive integer"]),
    "res not a number": (lambda t: ["convert", "swin_n_64", "--res", "big", "-o", t / "o.st"], ["not an integer"]),
    "res off the grid": (lambda t: ["convert", "swin_n_64", "--res", "70", "-o", t / "o.st"], ["use --res"]),
    "window 0": (lambda t: ["convert", "swin_n_64", "--window", "0", "-o", t / "o.st"], ["positive integer"]),
    "num-classes 0": (lambda t: ["convert", "swin_n_64", "--num-classes", "0", "-o", t / "o.st"],
                      ["positive integer"]),
    "num-classes negative": (lambda t: ["export", "swin_n_64", "--to", "timm", "--num-classes", "-5", "-o",
                                        t / "o"], ["positive integer"]),
    "num-classes for a backbone": (lambda t: ["convert", "swin_n_64", "--features", "--num-classes", "5", "-o",
                                              t / "o.st"], ["--num-classes does not apply to a backbone"]),
    "eval res 0": (lambda t: ["eval", "swin_n_64", "--res", "0"], ["positive integer"]),
    "eval batch 0": (lambda t: ["eval", "swin_n_64", "--batch-size", "0"], ["positive integer"]),
    "eval workers negative": (lambda t: ["eval", "swin_n_64", "--num-workers", "-1"], ["0 or more"]),
    "predict topk 0": (lambda t: ["predict", "swin_n_64", write(t, "x.png", "x"), "--topk", "0"],
                       ["positive integer"]),
    "bench res 0": (lambda t: ["bench", "swin_n_64", "--res", "0"], ["positive integer"]),
    "bench batch 0": (lambda t: ["bench", "swin_n_64", "--batch", "0"], ["positive integer"]),
    "bench unknown model": (lambda t: ["bench", "swin_q_224"], ["unknown model name"]),
    # --- arguments
    "flag typo": (lambda t: ["convert", "swin_n_64", "--outptu", t / "o.st", "-o", t / "o.st"],
                  ["--outptu", "did you mean --output"]),
    "missing output": (lambda t: ["convert", "swin_n_64"], ["required", "--output"]),
    "unknown command": (lambda t: ["convrt", "swin_n_64"], ["unknown command", "did you mean convert?"]),
    "unknown export format": (lambda t: ["export", "swin_n_64", "--to", "keras", "-o", t / "o"], ["invalid choice"]),
    # --- images
    "predict a non-image": (lambda t: ["predict", "swin_n_64", write(t, "x.png", "not a png")],
                            ["not a readable image"]),
    "predict a missing image": (lambda t: ["predict", "swin_n_64", t / "none.png"], ["none.png: no such file"]),
    "eval missing data folder": (lambda t: ["eval", "swin_n_64", "--data", t / "nodata"], ["no such folder"]),
    "eval fp16 on a CPU": (lambda t: ["eval", "swin_n_64", "--precision", "fp16", "--device", "cpu"],
                           ["fp16 needs a GPU", "bf16"]),
    "predict on a device torch lacks here": (lambda t: ["predict", "swin_n_64", write(t, "x.png", "x"), "--device",
                                                        "meta"], ["device meta is not available", "use cpu"]),
    "eval unknown device": (lambda t: ["eval", "swin_n_64", "--device", "gpu7"], ["not a device", "cuda"]),
    "bench unknown device": (lambda t: ["bench", "swin_n_64", "--device", "gpu7"], ["not a device", "cuda"]),
    "bench on a device torch lacks here": (lambda t: ["bench", "swin_n_64", "--device", "meta"],
                                           ["device meta is not available", "use cpu"]),
    "bench below the smallest input": (lambda t: ["bench", "swin_n_64", "--res", 17], ["below 32 px", "--res 32"]),
    "bench a training step without a head": (lambda t: ["bench", "swin_n_64.simmim", "--train"],
                                             ["no classifier head", "drop --train"]),
    "bench checkpointing without training": (lambda t: ["bench", "swin_n_64", "--grad-ckpt"],
                                             ["applies to a training step", "--train"]),
    "bench plot into a folder": (lambda t: ["bench", "swin_n_64", "--plot", t], ["is a folder", "sweep.png"]),
    "eval sweep without --res": (lambda t: ["eval", "swin_n_64", "swinv2_n_64_w4"], ["needs --res"]),
    "predict bad precision": (lambda t: ["predict", "swin_n_64", write(t, "x.png", "x"), "--precision", "fp8"],
                              ["invalid choice"]),
}


def timm_file(tmp: Path) -> Path:
    """model.safetensors of a timm folder of the nano V1 model."""
    from swinzoo.conversion import export

    return export("swin_n_64", "timm", tmp / "timm").output / "model.safetensors"


def _saved(tmp: Path, sd: dict) -> Path:
    path = tmp / "plain.pth"
    torch.save(sd, path)
    return path


def _config_edit(**changes):
    def edit(meta):
        cfg = json.loads(meta[CONFIG_KEY])
        cfg.update(changes)
        meta[CONFIG_KEY] = json.dumps(cfg)
    return edit


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, capsys, monkeypatch):
    build, expect = CASES[name]
    monkeypatch.chdir(tmp_path)
    args = build(tmp_path)
    fails_cleanly(args, capsys, tmp_path, *expect)
    assert not (tmp_path / "pwned").exists()  # no pickle ran


def unreadable(monkeypatch, *paths: Path) -> None:
    """`paths` unreadable: chmod 000, or where root reads them all the same, opening them fails as it would."""
    if os.geteuid() != 0:
        for path in paths:
            path.chmod(0)
        return
    import builtins
    import io

    real_open, names = builtins.open, {str(p) for p in paths}

    def refusing(file, *args, **kwargs):
        if os.fspath(file) in names:
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing)
    monkeypatch.setattr(io, "open", refusing)
    if hasattr(pathlib, "_NormalAccessor"):  # Python 3.10's Path.open: io.open, bound when pathlib was imported
        monkeypatch.setattr(pathlib._NormalAccessor, "open", staticmethod(refusing))


@pytest.mark.parametrize("verb", [["info", "{model}"], ["convert", "{model}", "-o", "{tmp}/o.safetensors"],
                                  ["predict", "{model}", "{image}"], ["recipes", "{recipe}"]])
def test_an_unreadable_input_is_bad_input(verb, tmp_path, capsys, monkeypatch):
    """A file this user may not read is the input's to change, as a wrong path is: exit 2, the file named (it was
    an OS error, exit 1, "check the path, free space and permissions")."""
    files = {"model": nano_copy(tmp_path), "recipe": write(tmp_path, "r.yaml", "base_lr: 0.001\n"),
             "image": png_file(tmp_path)}
    name = next(k for k in files if "{" + k + "}" in " ".join(verb))
    unreadable(monkeypatch, files[name])
    out = tmp_path / "out"  # what the case's snapshot reads: the inputs stay beside it
    out.mkdir()
    args = [a.format(tmp=out, **files) for a in verb]
    try:
        line = fails_cleanly(args, capsys, out, code=2)
    finally:
        files[name].chmod(0o644)
    assert line.startswith(f"error: {files[name]}: permission denied; give a path this user can read"), line


def test_eval_refuses_more_workers_than_the_machine_can_run(tmp_path, capsys, monkeypatch):
    """`--num-workers 100000` forked until the kernel's OOM killer stopped it, minutes later."""
    import swinzoo.train.data

    def started(*args, **kwargs):
        raise AssertionError("a loader was made: the worker count was not refused")

    monkeypatch.setattr(swinzoo.train.data, "eval_loader", started)
    fails_cleanly(["eval", "swin_n_64", "--num-workers", 100000], capsys, tmp_path,
                  "num_workers=100000: must be a whole number in [0, ", "data loader processes", code=2)


def test_predict_on_a_decompression_bomb_is_one_line(tmp_path, capsys, monkeypatch):
    """PIL refuses images past twice its pixel limit (DecompressionBombError, not an OSError); the limit is
    lowered here so an 8x8 image stands for one."""
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    fails_cleanly(["predict", "swin_n_64", tmp_path / "big.png"], capsys, tmp_path, "big.png",
                  "more pixels than PIL's limit", "MAX_IMAGE_PIXELS")


@pytest.mark.parametrize("kind", ["fifo", "link"])
@pytest.mark.parametrize("verb", ["convert", "export"])
def test_an_output_that_is_not_a_regular_file_is_refused(kind, verb, tmp_path, capsys):
    """The rename would replace the FIFO / device / link itself (as root: /dev/null with a 4 MB file)."""
    import stat

    from tests.conftest import run_cli

    out = tmp_path / ("o.safetensors" if verb == "convert" else "o.pth")
    target = tmp_path / "precious.txt"
    target.write_text("mine")
    os.mkfifo(out) if kind == "fifo" else out.symlink_to(target)
    args = ["convert", "swin_n_64", "-o", out] if verb == "convert" else \
        ["export", "swin_n_64", "--to", "official", "-o", out]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: {out} is {'not a regular file' if kind == 'fifo' else 'a link'}; give the path of a regular file to "
        "write"], err
    assert (stat.S_ISFIFO(os.lstat(out).st_mode) if kind == "fifo" else out.is_symlink())
    assert target.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [out.name, "precious.txt"]


# ---------------------------------------------------------------------------------------------- data loss
def test_overwrite_replaces_only_the_exports_own_files(tmp_path, capsys):
    from tests.conftest import run_cli

    out = folder_with(tmp_path, {"important.txt": "x", "sub/keep.txt": "y"})
    before = {k: v for k, v in snapshot(out).items()}
    code, _, err = run_cli(["export", "swin_n_64", "--to", "timm", "-o", out, "--overwrite"], capsys)
    assert code == 0, err
    after = snapshot(out)
    assert all(after[k] == v for k, v in before.items())  # every file that was there is byte-identical
    assert sorted(set(after) - set(before)) == ["config.json", "model.safetensors"]
    code, _, err = run_cli(["export", "swin_n_64", "--to", "timm", "-o", tmp_path / "again"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["export", "swin_n_64", "--to", "timm", "-o", tmp_path / "again"], capsys)
    assert code == 0, err  # an earlier export of the same kind is replaced without --overwrite


@pytest.mark.parametrize("verb", ["convert", "export official", "export onnx"])
def test_an_existing_output_file_is_kept_unless_overwrite(verb, tmp_path, capsys):
    """A command never changes a file it did not write: an existing output file needs --overwrite."""
    from tests.conftest import run_cli

    out = write(tmp_path, {"convert": "notes.safetensors", "export onnx": "notes.onnx"}.get(verb, "notes.pth"),
                "my notes")
    args = {"convert": ["convert", "swin_n_64", "-o", out],
            "export official": ["export", "swin_n_64", "--to", "official", "-o", out],
            "export onnx": ["export", "swin_n_64", "--to", "onnx", "-o", out]}[verb]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.strip().splitlines() == [f"error: {out} exists; pass --overwrite to replace it, or "
                                                      "choose another output"], err
    assert out.read_text() == "my notes"
    if verb == "export onnx":  # replacing (~30 s an ONNX export): test_graph_export.py's onnx_classifier fixture
        return
    code, _, err = run_cli([*args, "--overwrite"], capsys)
    assert code == 0 and out.read_bytes() != b"my notes", err


def test_a_folder_export_of_another_kind_is_kept_unless_overwrite(tmp_path, capsys):
    """A timm folder and a transformers folder hold files of the same names; one does not silently become the
    other."""
    from tests.conftest import run_cli

    out = tmp_path / "t"
    assert run_cli(["export", "swinv2_n_64_w4", "--to", "timm", "-o", out], capsys)[0] == 0
    before = snapshot(out)
    code, _, err = run_cli(["export", "swinv2_n_64_w4", "--to", "hf", "-o", out], capsys)
    assert code == 2 and "holds a timm export" in err and "--overwrite" in err and snapshot(out) == before
    assert run_cli(["export", "swinv2_n_64_w4", "--to", "hf", "-o", out, "--overwrite"], capsys)[0] == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "swinv2"
    # and back: the transformers export's preprocessor_config.json goes with it, not left describing another model
    (out / "notes.txt").write_text("mine")
    assert run_cli(["export", "swinv2_n_64_w4", "--to", "timm", "-o", out, "--overwrite"], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "notes.txt"]
    assert run_cli(["export", "swinv2_n_64_w4", "--to", "hf", "-o", out, "--overwrite"], capsys)[0] == 0
    # a config.json of neither library, and one that is not JSON, are named for what they are
    for text, said in (('{"lr": 0.1}', "holds a config.json that is neither timm's nor transformers'"),
                       ("not json", "holds a config.json that is not JSON")):
        (out / "config.json").write_text(text)
        code, _, err = run_cli(["export", "swinv2_n_64_w4", "--to", "timm", "-o", out], capsys)
        assert code == 2 and said in err and "--overwrite" in err, err


def test_a_file_output_named_as_a_folder_is_refused(tmp_path, capsys):
    from tests.conftest import run_cli

    code, _, err = run_cli(["export", "swin_n_64", "--to", "official", "-o", f"{tmp_path / 'offdir'}/"], capsys)
    assert code == 2 and "names a folder" in err and not (tmp_path / "offdir").exists()


def unwritable_folder(tmp: Path) -> Path:
    """A folder this process cannot create files in (root ignores permissions: /proc refuses everyone)."""
    if os.geteuid() == 0:
        return Path("/proc/swinzoo-no-such-dir")
    ro = tmp / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ro


@pytest.mark.parametrize("verb", [["convert", "swin_n_64", "-o", "{out}/m.safetensors"],
                                  ["export", "swin_n_64", "--to", "onnx", "-o", "{out}/m.onnx"],
                                  ["export", "swin_n_64", "--to", "timm", "-o", "{out}/timm"]])
@pytest.mark.parametrize("where", ["below a file", "unwritable"])
def test_an_output_folder_that_cannot_take_it_is_refused_before_the_source_is_read(where, verb, tmp_path, capsys,
                                                                                    monkeypatch):
    """The folder an output goes in is checked with the output's name, first: an ONNX export spent 17 s tracing
    the model before the write found the folder was a file; a read-only one failed there as an OS error."""
    import swinzoo.conversion

    def read_too_soon(*args, **kwargs):
        raise AssertionError("the source was read before the output was checked")

    monkeypatch.setattr(swinzoo.conversion, "read_transferred", read_too_soon)
    folder = write(tmp_path, "f", "x") if where == "below a file" else unwritable_folder(tmp_path)
    args = [a.replace("{out}", str(folder / "sub")) for a in verb]
    try:
        line = fails_cleanly(args, capsys, tmp_path, code=2)
    finally:
        if (tmp_path / "ro").exists():
            (tmp_path / "ro").chmod(0o755)
    if where == "below a file":
        assert line == f"error: {folder} is a file, not a folder; choose another output path"
    else:
        assert line.startswith(f"error: cannot write in {folder.parent if os.geteuid() == 0 else folder} (")
        assert line.endswith("choose an output path in a folder you can write"), line


def test_outputs_read_like_any_other_file(tmp_path, capsys):
    """Exported folders and their files follow the umask (not mkdtemp's 0700 / mkstemp's 0600)."""
    from tests.conftest import run_cli

    umask = os.umask(0o022)
    try:
        assert run_cli(["export", "swin_n_64", "--to", "timm", "-o", tmp_path / "hf"], capsys)[0] == 0
        assert run_cli(["convert", "swin_n_64", "-o", tmp_path / "m.safetensors"], capsys)[0] == 0
    finally:
        os.umask(umask)
    assert (tmp_path / "hf").stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "hf").iterdir()} == {0o644}
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------------------------------- full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs where this process may mount one (root), else None (the test simulates ENOSPC instead)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if ok.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("verb", [["convert", "swin_n_64", "-o", "{out}/m.safetensors"],
                                  ["export", "swin_n_64", "--to", "official", "-o", "{out}/m.pth"],
                                  ["export", "swin_n_64", "--to", "timm", "-o", "{out}/timm"]])
def test_full_disk_is_one_line_and_leaves_nothing(verb, small_disk, tmp_path, capsys, monkeypatch):
    if small_disk is None:  # no tmpfs here: every write fails as a full disk would
        from safetensors import SafetensorError

        import swinzoo.converters.folders as folders
        import swinzoo.converters.native as native
        import swinzoo.io as io

        def full_safetensors(*args, **kwargs):  # what safetensors raises on ENOSPC: not an OSError
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

        def full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        for module, name in ((native, "save_file"), (folders, "save_file")):
            monkeypatch.setattr(module, name, full_safetensors)
        monkeypatch.setattr(io.torch, "save", full)
        disk = tmp_path / "disk"
    else:
        disk = small_disk
    (disk / "keep.txt").write_text("mine")
    args = [a.replace("{out}", str(disk)) for a in verb]
    # the disk's problem, exit 1 and said as such: not reported as an unexpected error of swinzoo's own
    line = fails_cleanly(args, capsys, disk, "space", "free space", code=1)
    assert "Traceback" not in line and "unexpected" not in line
    assert sorted(p.name for p in disk.iterdir()) == ["keep.txt"]


# ---------------------------------------------------------------------------------------------- kills
SLOW_WRITE = """
import sys, time
import swinzoo.converters.native as native
def slow(tensors, path, metadata=None):
    import os
    # as safetensors does: an anonymous temporary beside the path it is given, renamed when complete
    with open(os.path.join(os.path.dirname(path), ".tmpLIBRARY"), "wb") as f:
        f.write(b"partial" * 1000)
        f.flush()
    time.sleep(60)
native.save_file = slow
import swinzoo.converters.folders as folders
folders.save_file = slow
from swinzoo.cli import main
sys.argv = ["swinzoo", *sys.argv[1:]]
main()
"""


def start_slow_write(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", SLOW_WRITE, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_temp(folder: Path, proc: subprocess.Popen, timeout: float = 60.0) -> list[Path]:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        temps = [p for p in folder.iterdir() if ".swinzoo-tmp-" in p.name]
        if temps and any(p.name == ".tmpLIBRARY" for p in temps[0].rglob("*")):
            return temps
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("the write never started")


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_sigterm_mid_write_leaves_nothing(kind, tmp_path):
    out = tmp_path / ("m.safetensors" if kind == "file" else "timm")
    args = ["convert", "swin_n_64", "-o", str(out)] if kind == "file" else \
        ["export", "swin_n_64", "--to", "timm", "-o", str(out)]
    proc = start_slow_write(args, tmp_path)
    wait_for_temp(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and err.strip().splitlines() == ["error: interrupted"], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_failed_write_removes_the_folders_made_for_it(kind, tmp_path, capsys, monkeypatch):
    """The folders an output's path named but that did not exist are made for the write, and removed when it fails:
    they were left, as the temporary inside them was removed only after them."""
    import swinzoo.converters.folders as folders
    import swinzoo.converters.native as native

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(native, "save_file", full)
    monkeypatch.setattr(folders, "save_file", full)
    out = tmp_path / "new" / "sub" / ("m.safetensors" if kind == "file" else "timm")
    args = ["convert", "swin_n_64", "-o", out] if kind == "file" else ["export", "swin_n_64", "--to", "timm", "-o", out]
    fails_cleanly(args, capsys, tmp_path, "No space left on device", code=1)  # the disk's failure, not the input's
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_an_interrupt_the_moment_the_temporary_is_made_removes_it(kind, tmp_path, capsys, monkeypatch):
    """Ctrl-C or SIGTERM landing just after the temporary folder was made, before the block that removes it on the
    way out had begun: a SIGTERM to a fine-tune's process group left .model.safetensors.swinzoo-tmp-* behind."""
    from tests.conftest import run_cli

    real_mkdir = Path.mkdir

    def made_then_interrupted(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)
        if ".swinzoo-tmp-" in self.name:
            raise KeyboardInterrupt

    monkeypatch.setattr(Path, "mkdir", made_then_interrupted)
    out = tmp_path / "sub" / ("m.safetensors" if kind == "file" else "timm")
    args = ["convert", "swin_n_64", "-o", out] if kind == "file" else ["export", "swin_n_64", "--to", "timm", "-o", out]
    code, _, err = run_cli(args, capsys)
    assert code == 130 and err.strip().splitlines() == ["error: interrupted"], err
    assert list(tmp_path.iterdir()) == []  # nor the folder made for it


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_sigkill_leftovers_are_recognisable_and_the_rerun_removes_them(kind, tmp_path, capsys):
    from tests.conftest import run_cli

    out = tmp_path / ("m.safetensors" if kind == "file" else "timm")
    args = ["convert", "swin_n_64", "-o", str(out)] if kind == "file" else \
        ["export", "swin_n_64", "--to", "timm", "-o", str(out)]
    proc = start_slow_write(args, tmp_path)
    (temp,) = wait_for_temp(tmp_path, proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert temp.exists() and temp.name.startswith(f".{out.name}.swinzoo-tmp-{proc.pid}-")
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # the stale temp is gone


SLOW_CHECK = """
import sys, tempfile, time
import swinzoo.io as io
real = tempfile.mkdtemp
def slow(*args, **kwargs):
    real(*args, **kwargs)
    time.sleep(60)  # killed here: the folder made, its name not yet returned
io.tempfile = type(sys)("slow_tempfile")
io.tempfile.mkdtemp = slow
from swinzoo.cli import main
sys.argv = ["swinzoo", *sys.argv[1:]]
main()
"""


def test_a_kill_while_the_output_folder_is_checked_leaves_what_the_next_write_removes(tmp_path, capsys):
    """The folder made to see that the output's folder is writable is named as a temporary of the output: one a
    kill leaves is recognisable, and the next write there removes it."""
    from tests.conftest import run_cli

    out = tmp_path / "m.safetensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CHECK, "convert", "swin_n_64", "-o", str(out)], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.iterdir()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    (left,) = list(tmp_path.iterdir())
    assert left.name.startswith(f".{out.name}.swinzoo-tmp-{proc.pid}-"), left.name
    code, _, err = run_cli(["convert", "swin_n_64", "-o", out], capsys)
    assert code == 0, err
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_a_live_writers_temp_is_left_alone(tmp_path, capsys):
    """Only temps of dead processes are removed: a concurrent writer's own temp survives another run."""
    from tests.conftest import run_cli

    proc = start_slow_write(["convert", "swin_n_64", "-o", str(tmp_path / "m.safetensors")], tmp_path)
    try:
        (temp,) = wait_for_temp(tmp_path, proc)
        assert run_cli(["convert", "swin_n_64", "-o", tmp_path / "m.safetensors"], capsys)[0] == 0
        assert temp.exists()
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_concurrent_exports_give_one_valid_folder(tmp_path):
    """Two exports to the same new folder at once: both succeed (the later joins the earlier's folder, replacing
    its own files) and the result loads."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "swinzoo", "export", "swin_n_64", "--to", "timm", "-o", str(tmp_path / "d")]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["config.json", "model.safetensors"]
    import swinzoo

    assert swinzoo.read_checkpoint(tmp_path / "d").config.img_size == 64
