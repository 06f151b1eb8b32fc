"""Weight files that are broken, wrong or hostile, as users come by them (a clone without git-lfs, a saved web page,
an archive, a TorchScript program, float8 or tied tensors, weights nested under a script's own keys), through every
verb that reads weights and the Python API: one line naming what the file is and the fix, exit 2, nothing written,
no pickle run; or, where the file does hold usable weights, a read that works."""

from __future__ import annotations

import gzip
import os
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import swinzoo
from swinzoo import SwinzooError
from tests.bad_inputs.harness import fails_cleanly
from tests.conftest import run_cli

NANO = Path(__file__).resolve().parents[1] / "swinzoo" / "data" / "swin_n_64.safetensors"
LFS = (b"version https://git-lfs.github.com/spec/v1\n"
       b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 113322332\n")
HTML = (b'<!DOCTYPE html>\n<html class="" lang="en">\n<head><meta charset="utf-8" />\n<title>model.safetensors '
        b'\xc2\xb7 timm/swin_tiny_patch4_window7_224.ms_in1k at main</title></head><body></body></html>\n')


def nano_weights() -> dict[str, torch.Tensor]:
    return load_file(NANO)


def saved(path: Path, obj, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path, **kwargs)
    return path


def written(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def image(tmp: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp / "x.png")
    return tmp / "x.png"


# every verb that reads weights, with `{m}` the model and `{o}` an output beside it
VERBS = {
    "info": ["info", "{m}"],
    "convert": ["convert", "{m}", "-o", "{o}/o.safetensors"],
    "export": ["export", "{m}", "--to", "timm", "-o", "{o}/t"],
    "eval": ["eval", "{m}", "--data", "shapes"],
    "predict": ["predict", "{m}", "{o}/x.png"],
    "finetune": ["finetune", "--from", "{m}", "--data", "shapes", "--out", "{o}/run"],
    "push": ["push", "{m}", "--repo", "acme/x", "--dry-run", "{o}/p"],
}


def refused(verb: str, model: Path, tmp: Path, capsys, *expect: str) -> str:
    image(tmp)
    args = [a.format(m=model, o=tmp) for a in VERBS[verb]]
    return fails_cleanly(args, capsys, tmp, *expect)


# ---------------------------------------------------------------------------------------------- Git LFS pointers
@pytest.mark.parametrize("verb", list(VERBS))
def test_a_git_lfs_pointer_is_named_with_its_fix_by_every_verb(verb, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = written(tmp_path / "model.safetensors", LFS)
    refused(verb, model, tmp_path, capsys, "model.safetensors is not", "a Git LFS pointer to a 113.3 MB file",
            "git lfs pull", "swinzoo download hf-hub:ORG/NAME")


@pytest.mark.parametrize("name", ["swin.pth", "pytorch_model.bin", "last.ckpt"])
def test_a_git_lfs_pointer_named_as_a_torch_file(name, tmp_path, capsys):
    refused("info", written(tmp_path / name, LFS), tmp_path, capsys, f"{name} is not", "Git LFS pointer",
            "git lfs pull")


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_a_hub_clone_without_lfs_names_its_repo(weights, tmp_path, capsys):
    """A folder cloned from the Hub: the pointer is found through config.json's folder, and the repo in .git/config."""
    clone = tmp_path / "swin_tiny"
    written(clone / ".git" / "config", b'[remote "origin"]\n\turl = https://huggingface.co/timm/'
                                       b'swin_tiny_patch4_window7_224.ms_in1k\n')
    written(clone / "config.json", b'{"architecture": "swin_tiny_patch4_window7_224", "num_classes": 1000}')
    written(clone / weights, LFS)
    refused("convert", clone, tmp_path, capsys, f"{weights} is not", "Git LFS pointer",
            "swinzoo download hf-hub:timm/swin_tiny_patch4_window7_224.ms_in1k")


def test_the_python_api_names_a_git_lfs_pointer(tmp_path):
    model = written(tmp_path / "model.safetensors", LFS)
    for call in (lambda: swinzoo.load_model(model), lambda: swinzoo.convert(model, tmp_path / "o.safetensors")):
        with pytest.raises(SwinzooError, match="Git LFS pointer.*git lfs pull"):
            call()
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


# ---------------------------------------------------------------------------------------------- other files
@pytest.mark.parametrize("name", ["model.safetensors", "swin.pth", "pytorch_model.bin"])
def test_a_saved_web_page_is_named_with_the_resolve_link(name, tmp_path, capsys):
    refused("convert", written(tmp_path / name, HTML), tmp_path, capsys, f"{name} is not", "an HTML page",
            "/resolve/", "swinzoo download")


def checkpoint_bytes(tmp: Path) -> bytes:
    return saved(tmp / "src" / "swin.pth", nano_weights()).read_bytes()


def tar_of(tmp: Path, name: str, mode: str) -> Path:
    checkpoint_bytes(tmp)
    with tarfile.open(tmp / name, mode) as archive:
        archive.add(tmp / "src" / "swin.pth", "swin.pth")
    return tmp / name


def zip_of(tmp: Path, name: str) -> Path:
    checkpoint_bytes(tmp)
    with zipfile.ZipFile(tmp / name, "w") as archive:
        archive.write(tmp / "src" / "swin.pth", "swin/swin.pth")
        archive.writestr("swin/README.md", "weights")
    return tmp / name


ARCHIVES = {
    "tar": (lambda t: tar_of(t, "swin.tar", "w"), ["is not a PyTorch checkpoint (it is a tar archive)", "tar xf"]),
    "tar.gz": (lambda t: tar_of(t, "swin.tar.gz", "w:gz"), ["(it is a gzip archive)", "tar xzf"]),
    "tar.gz as .pth": (lambda t: tar_of(t, "swin.pth", "w:gz"), ["(it is a gzip archive)", "tar xzf"]),
    "gz": (lambda t: written(t / "swin.pth.gz", gzip.compress(checkpoint_bytes(t))), ["gzip archive", "gunzip"]),
    "xz": (lambda t: written(t / "swin.pth.xz", b"\xfd7zXZ\x00" + bytes(64)), ["an xz archive", "extract it"]),
    "7z": (lambda t: written(t / "swin.7z", b"7z\xbc\xaf\x27\x1c" + bytes(64)), ["a 7-Zip archive", "extract it"]),
    "zip": (lambda t: zip_of(t, "swin.zip"), ["a zip archive holding swin/swin.pth, not a torch.save file",
                                              "unzip it and give the checkpoint inside"]),
    "zip as .pth": (lambda t: zip_of(t, "swin.pth"), ["a zip archive holding swin/swin.pth", "unzip it"]),
}


@pytest.mark.parametrize("kind", list(ARCHIVES))
def test_an_archive_of_a_checkpoint_says_to_extract_it(kind, tmp_path, capsys):
    build, expect = ARCHIVES[kind]
    line = refused("info", build(tmp_path), tmp_path, capsys, *expect)
    assert "truncated" not in line and "text file" not in line


def test_a_numpy_archive_and_a_torchscript_program_are_named(tmp_path, capsys):
    import numpy as np

    np.savez(tmp_path / "w.npz", a=np.zeros(3))
    refused("info", tmp_path / "w.npz", tmp_path, capsys, "a NumPy .npz archive")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), tmp_path / "s.pt")
    for verb in ("info", "convert"):
        line = refused(verb, tmp_path / "s.pt", tmp_path, capsys, "a TorchScript program (torch.jit.save)",
                       "torch.jit.load(PATH).state_dict()")
        assert "truncated" not in line
    assert capsys.readouterr().err == ""  # torch's "dispatching to torch.jit.load" warning is not shown


def test_a_truncated_zip_checkpoint_is_still_called_truncated(tmp_path, capsys):
    data = checkpoint_bytes(tmp_path)
    refused("info", written(tmp_path / "cut.pth", data[: len(data) // 2]), tmp_path, capsys, "truncated or corrupt")


# ---------------------------------------------------------------------------------------------- tensors
def nano_with(tmp: Path, name: str, change) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(NANO), framework="pt") as f:
        metadata = f.metadata()
    tensors = nano_weights()
    change(tensors)
    save_file(tensors, str(tmp / name), metadata=metadata)
    return tmp / name


@pytest.mark.parametrize("verb", ["info", "convert", "predict"])
def test_float8_weights_are_refused_by_name(verb, tmp_path, capsys):
    """float8 is floating point to torch, but holds quantised values (their scales, if any, elsewhere), and torch
    cannot even test it for NaN: it stopped every verb as an unexpected NotImplementedError (exit 1)."""
    model = nano_with(tmp_path, "f8.safetensors", lambda t: t.update({"norm.weight": t["norm.weight"].to(
        torch.float8_e4m3fn)}))
    refused(verb, model, tmp_path, capsys, "norm.weight holds float8_e4m3fn values", "quantised",
            "float32, float16 or bfloat16")
    with pytest.raises(SwinzooError, match="float8_e4m3fn"):
        swinzoo.load_model(model)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_half_and_double_weights_load_and_convert(dtype, tmp_path, capsys):
    official = saved(tmp_path / "swin.pth", {"model": {k: v.to(dtype) for k, v in nano_weights().items()}})
    code, _, err = run_cli(["convert", official, "-o", tmp_path / "o.safetensors"], capsys)
    assert code == 0, err
    assert {t.dtype for t in load_file(tmp_path / "o.safetensors").values()} == {dtype}
    model = swinzoo.load_model(tmp_path / "o.safetensors")
    assert model(torch.zeros(1, 3, 64, 64)).isfinite().all()


def tied(tmp: Path) -> Path:
    """A state dict two of whose keys are one tensor (tied weights: what a model sharing a parameter saves)."""
    weights = nano_weights()
    weights["norm.bias"] = weights["norm.weight"]
    return saved(tmp / "tied.pth", {"model": weights})


@pytest.mark.parametrize("verb", [["convert", "{m}", "-o", "{o}/o.safetensors"],
                                  ["export", "{m}", "--to", "timm", "-o", "{o}/t"],
                                  ["push", "{m}", "--repo", "acme/x", "--dry-run", "{o}/p"]])
def test_tensors_sharing_memory_are_written_each_on_its_own(verb, tmp_path, capsys):
    """safetensors refuses to write tensors that share memory ("Some tensors share memory"), which stopped convert,
    export and push on such a file as an unexpected RuntimeError (exit 1)."""
    model = tied(tmp_path)
    code, _, err = run_cli([a.format(m=model, o=tmp_path) for a in verb], capsys)
    assert code == 0, err
    written_model = swinzoo.load_model(next(p for p in tmp_path.iterdir() if p.name in ("o.safetensors", "t", "p")))
    assert torch.equal(written_model.norm.weight, written_model.norm.bias)


def test_views_of_one_storage_keep_their_own_values(tmp_path):
    """Non-contiguous views and slices of one big storage (what a flat-parameter save leaves) read as the values
    they show, not the storage around them."""
    weights = nano_weights()
    flat = torch.cat([v.flatten() for v in weights.values()])
    views, start = {}, 0
    for key, value in weights.items():
        views[key] = flat[start:start + value.numel()].view(value.shape)
        start += value.numel()
    views["head.weight"] = weights["head.weight"].t().contiguous().t()  # column-major
    swinzoo.convert(saved(tmp_path / "flat.pth", {"model": views}), tmp_path / "o.safetensors")
    back = load_file(tmp_path / "o.safetensors")
    assert all(torch.equal(back[k], v) for k, v in weights.items())


# ---------------------------------------------------------------------------------------------- where the weights sit
@pytest.mark.parametrize("layout", [
    lambda sd: {"epoch": 3, "model_state_dict": sd, "optimizer_state_dict": {"state": {}, "param_groups": []}},
    lambda sd: {"checkpoint": {"net": sd}, "step": 10},
    lambda sd: {"model": {"state_dict": sd}},
    lambda sd: {"ema": {"module": {f"module.{k}": v for k, v in sd.items()}}},
], ids=["pytorch tutorial", "two deep", "model.state_dict", "wrapped"])
def test_weights_nested_under_a_scripts_own_keys_are_found(layout, tmp_path, capsys):
    """The one Swin state dict in a checkpoint, under whatever keys the training script chose (the PyTorch tutorial's
    model_state_dict, say): read, and the report says where it was (it was "holds no state dict of tensors")."""
    src = saved(tmp_path / "ckpt.pth", layout(nano_weights()))
    code, out, err = run_cli(["convert", src, "-o", tmp_path / "o.safetensors"], capsys)
    assert code == 0, err
    assert "the Swin state dict under [" in out
    back = load_file(tmp_path / "o.safetensors")
    assert all(torch.equal(back[k], v) for k, v in nano_weights().items())


def test_two_nested_state_dicts_are_named_not_guessed(tmp_path, capsys):
    sd = nano_weights()
    src = saved(tmp_path / "dino.pth", {"teacher": sd, "student": {k: v + 1 for k, v in sd.items()}, "epoch": 1})
    refused("info", src, tmp_path, capsys, "holds 2 Swin state dicts", "['teacher']", "['student']",
            "torch.save(torch.load('", "weights_only=True)['teacher'], 'model.pth')")


@pytest.mark.parametrize("content, expect", [
    ({"epoch": 3, "optimizer": {"state": {}}, "lr": 0.1}, "a dict of epoch, optimizer, lr"),
    ([torch.zeros(2)], "a list of 1 item"),
    (torch.zeros(2, 3), "a single tensor of shape (2, 3)"),
])
def test_a_checkpoint_without_weights_says_what_it_holds(content, expect, tmp_path, capsys):
    refused("info", saved(tmp_path / "x.pth", content), tmp_path, capsys, "holds no state dict of tensors", expect)


# ---------------------------------------------------------------------------------------------- pickles
class Payload:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_an_old_format_torch_file_reads_and_one_needing_code_names_it(tmp_path, capsys):
    """torch.save's format before 1.6 (no zip): weights alone load; a pickled object is refused, named as for a zip
    checkpoint (it was refused without the names)."""
    legacy = saved(tmp_path / "old.pth", {"model": nano_weights()}, _use_new_zipfile_serialization=False)
    assert swinzoo.load_model(legacy).config.img_size == 64
    evil = saved(tmp_path / "evil.pth", {"model": nano_weights(), "hook": Payload(tmp_path / "pwned")},
                 _use_new_zipfile_serialization=False)
    refused("info", evil, tmp_path, capsys, "holds Python objects", "(posix.system)", "--trust-checkpoint")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_plain_pickle_is_not_taken_for_a_checkpoint_needing_trust(protocol, tmp_path, capsys):
    """pickle.dump of weights is no torch.save file (torch.load reads neither a plain nor a malicious one): said so, in
    one line (torch's protocol warning came first), and no --trust-checkpoint offered for what it could not load."""
    import pickle

    for name, content in (("plain.pkl", {"a": 1}), ("evil.pkl", Payload(tmp_path / "pwned"))):
        written(tmp_path / name, pickle.dumps(content, protocol=protocol))
        line = refused("info", tmp_path / name, tmp_path, capsys, f"{name} is not a PyTorch checkpoint (it is a "
                       "Python pickle, not a torch.save file)", "torch.save(")
        assert "--trust-checkpoint" not in line
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("damage", ["cut", "tensor larger than its data"])
def test_a_damaged_old_format_file_is_called_corrupt(damage, tmp_path, capsys):
    import io
    import pickletools

    if damage == "cut":
        src = saved(tmp_path / "old.pth", {"model": nano_weights()}, _use_new_zipfile_serialization=False)
        src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    else:  # one storage, whose element count (8 bytes after the five pickles) claims far more than follows
        src = saved(tmp_path / "old.pth", {"model": {"a": torch.zeros(6)}}, _use_new_zipfile_serialization=False)
        data = io.BytesIO(src.read_bytes())
        for _ in range(5):  # magic number, protocol, system info, the object, the storage keys
            for _ in pickletools.genops(data):
                pass
        raw = bytearray(data.getvalue())
        raw[data.tell():data.tell() + 8] = (2**31).to_bytes(8, "little")
        src.write_bytes(bytes(raw))
    line = refused("info", src, tmp_path, capsys, "old.pth is truncated or corrupt", "download it again")
    assert "%ld" not in line


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_pickle_protocol_torch_cannot_read_safely_is_named(zip_format, tmp_path, capsys):
    """torch.save(..., pickle_protocol=4) of plain tensors: torch's weights-only loader knows protocol 2 only, so
    it is refused, but for what it is (it was "holds Python objects" under torch's protocol warning)."""
    src = saved(tmp_path / "p4.pth", {"model": nano_weights()}, pickle_protocol=4,
                _use_new_zipfile_serialization=zip_format)
    line = refused("info", src, tmp_path, capsys, "pickle protocol", "weights-only", "--trust-checkpoint",
                   "torch.save's default protocol")
    assert "Python objects" not in line
    code, _, err = run_cli(["convert", src, "-o", tmp_path / "o.safetensors", "--trust-checkpoint"], capsys)
    assert code == 0 and err == "", err


# ---------------------------------------------------------------------------------------------- folders
def test_a_folder_named_as_a_file_says_it_is_a_folder(tmp_path, capsys):
    (tmp_path / "swin.pth").mkdir()
    refused("info", tmp_path / "swin.pth", tmp_path, capsys, "swin.pth is an empty folder, not a checkpoint file")


def test_a_sharded_distributed_checkpoint_says_how_to_consolidate_it(tmp_path, capsys):
    """What FSDP saves with torch.distributed.checkpoint (Lightning's sharded `epoch=N.ckpt/`): a folder of
    .distcp shards, which torch's own tool turns into one file."""
    folder = tmp_path / "epoch=3.ckpt"
    written(folder / ".metadata", b"\x80\x02}q\x00.")
    written(folder / "__0_0.distcp", bytes(16))
    refused("convert", folder, tmp_path, capsys, "is a sharded torch.distributed.checkpoint folder",
            "python -m torch.distributed.checkpoint.format_utils dcp_to_torch")


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_torch_file_named_safetensors_says_to_rename_it(zip_format, tmp_path, capsys):
    """torch.save(model.state_dict(), "model.safetensors"): it was "not a readable safetensors file (header too
    large); it is damaged or incomplete", which sends the user to download it again."""
    src = saved(tmp_path / "model.safetensors", nano_weights(), _use_new_zipfile_serialization=zip_format)
    line = refused("info", src, tmp_path, capsys, "model.safetensors is not a safetensors file (it is a torch.save "
                   "file)", "rename it to .pth")
    assert "damaged" not in line
