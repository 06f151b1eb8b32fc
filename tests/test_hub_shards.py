"""`hf-hub:` repos that hold a sharded model (transformers' `push_to_hub(max_shard_size=...)`): the index json and the
shards it names are fetched into the Hugging Face cache, as `from_pretrained` does, from the loopback Hub only."""

from __future__ import annotations

import json

import pytest
import torch

import swinzoo
from swinzoo.hub import in_cache
from tests.bad_inputs.harness import fails_cleanly
from tests.bad_inputs.test_network import loopback_only  # noqa: F401 (a fixture: nothing beyond 127.0.0.1)
from tests.hub_emulator import HubEmulator

from .conftest import run_cli

REPO = "acme/sharded"


def tiny_swin(seed: int):
    transformers = pytest.importorskip("transformers")  # the Hub pass of CI runs without it: see the timm layout test
    torch.manual_seed(seed)
    model = transformers.SwinForImageClassification(transformers.SwinConfig(
        image_size=64, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, num_labels=3))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model.eval()


def saved(model, folder, safe: bool = True) -> dict[str, bytes]:
    """The files `save_pretrained` writes above a small max_shard_size: an index and several shards."""
    model.save_pretrained(folder, max_shard_size="20KB", safe_serialization=safe)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert len([n for n in files if n.startswith(("model-0", "pytorch_model-0"))]) > 2, sorted(files)
    return files


def logits(model, x):
    with torch.no_grad():
        out = model(x)
    return getattr(out, "logits", out)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The loopback Hub, online, with an empty Hugging Face home; the cwd is tmp_path."""
    import huggingface_hub.constants as constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("SWINZOO_HUB_TIMEOUT", "5")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for name in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN", "SWINZOO_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with HubEmulator(token=None) as emulator:
        monkeypatch.setenv("HF_ENDPOINT", emulator.url)
        yield emulator


def snapshot_files(tmp_path) -> set[str]:
    snapshots = tmp_path / "hf_home" / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots"
    return {p.name for p in snapshots.glob("*/*")}


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_a_sharded_repo_downloads_and_loads_then_works_offline(safe, hub, tmp_path, monkeypatch, capsys):
    theirs = tiny_swin(0)
    files = saved(theirs, tmp_path / "saved", safe)
    stray = "model-00009-of-00009.safetensors" if safe else "pytorch_model-00009-of-00009.bin"
    hub.add(REPO, {**files, stray: b"an older upload's shard, in no index"})
    assert not in_cache(REPO)
    code, out, err = run_cli(["download", f"hf-hub:{REPO}"], capsys)
    assert code == 0, err
    assert snapshot_files(tmp_path) == set(files)  # the index and the shards it names: not the stray one
    assert in_cache(REPO)

    x = torch.randn(2, 3, 64, 64)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = len(hub.calls)
    ours = swinzoo.load_model(f"hf-hub:{REPO}").eval()
    torch.testing.assert_close(logits(ours, x), logits(theirs, x), rtol=0, atol=1e-5)
    code, out, err = run_cli(["info", f"hf-hub:{REPO}", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["config"]["num_classes"] == 3
    code, _, err = run_cli(["convert", f"hf-hub:{REPO}", "-o", tmp_path / "c.safetensors"], capsys)
    assert code == 0, err
    assert len(hub.calls) == calls  # offline: the cache only


def test_a_timm_layout_sharded_repo_without_transformers(hub, tmp_path, monkeypatch, capsys):
    """timm's layout (its config.json) sharded by huggingface_hub's own `save_torch_state_dict`: no transformers
    needed, so CI's Hub pass checks the fetch on the newest huggingface_hub too."""
    from huggingface_hub import save_torch_state_dict
    from safetensors.torch import load_file

    ours = swinzoo.load_model("swin_n_64").eval()
    swinzoo.export(ours, "timm", tmp_path / "timm")
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_bytes((tmp_path / "timm" / "config.json").read_bytes())
    save_torch_state_dict(load_file(str(tmp_path / "timm" / "model.safetensors")), folder, max_shard_size="100KB")
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert "model.safetensors.index.json" in files and "model.safetensors" not in files and len(files) > 3
    hub.add(REPO, files)
    code, _, err = run_cli(["download", f"hf-hub:{REPO}"], capsys)
    assert code == 0, err
    assert snapshot_files(tmp_path) == set(files) and in_cache(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(logits(swinzoo.load_model(f"hf-hub:{REPO}").eval(), x), logits(ours, x), rtol=0,
                               atol=0)


def test_the_revision_names_whose_index_and_shards(hub, tmp_path):
    main, v1 = tiny_swin(0), tiny_swin(1)
    hub.add(REPO, saved(main, tmp_path / "main"))
    sha = hub.add(REPO, saved(v1, tmp_path / "v1"), branch="v1")
    x = torch.randn(1, 3, 64, 64)
    for ref, theirs in ((f"hf-hub:{REPO}@v1", v1), (f"hf-hub:{REPO}@{sha}", v1), (f"hf-hub:{REPO}", main)):
        ours = swinzoo.load_model(ref).eval()
        torch.testing.assert_close(logits(ours, x), logits(theirs, x), rtol=0, atol=1e-5, msg=ref)


@pytest.mark.parametrize("between, single", [("config.json", True), ("config.json", False), (".index.json", False)],
                         ids=["config-single-file", "config-sharded", "index-shards"])
def test_the_files_come_from_one_commit(between, single, hub, tmp_path):
    """A push landing on the branch between config.json and the weights, or between the index and its shards:
    every file still comes from the commit of the first (the folder read holds them all)."""
    before, after = tiny_swin(0), tiny_swin(1)
    for model, folder in ((before, tmp_path / "before"), (after, tmp_path / "after")):
        if single:
            model.save_pretrained(folder)
        else:
            saved(model, folder)
    hub.add(REPO, {p.name: p.read_bytes() for p in (tmp_path / "before").iterdir()})
    newer = {p.name: p.read_bytes() for p in (tmp_path / "after").iterdir()}

    def push_meanwhile(repo_id: str, filename: str) -> None:
        if filename.endswith(between) and hub.files(REPO) != newer:
            hub.add(REPO, newer)

    hub.after_download = push_meanwhile
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(logits(swinzoo.load_model(f"hf-hub:{REPO}").eval(), x), logits(before, x), rtol=0,
                               atol=1e-5)


def test_finetune_from_a_sharded_repo(hub, tmp_path, capsys):
    from .test_finetune import FAST, image_folder

    hub.add(REPO, saved(tiny_swin(0), tmp_path / "saved"))
    data = image_folder(tmp_path / "data")
    code, _, err = run_cli(["finetune", "--from", f"hf-hub:{REPO}", "--data", data, "--recipe", "nano_finetune",
                            "--res", "32", "--max-steps", "1", "--out", tmp_path / "run", *FAST], capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "model.safetensors").is_file()


def index_with(files: dict[str, bytes], shard: str) -> dict[str, bytes]:
    """`files` with the index's first tensor mapped to `shard` instead."""
    index = json.loads(files["model.safetensors.index.json"])
    index["weight_map"][next(iter(index["weight_map"]))] = shard
    return {**files, "model.safetensors.index.json": json.dumps(index).encode()}


@pytest.mark.parametrize("case, expect", [
    ("traversal", ["../outside.safetensors", "not a file name", "hf-hub:acme/sharded"]),
    ("absolute", ["/etc/passwd", "not a file name"]),
    ("subfolder", ["sub/model.safetensors", "not a file name"]),
    ("missing-shard", ["model-00002-of-00005.safetensors", "missing", "hf-hub:acme/sharded"]),
    ("no-weight-map", ["weight_map", "hf-hub:acme/sharded"]),
    ("not-json", ["model.safetensors.index.json", "hf-hub:acme/sharded"]),
])
def test_a_bad_index_is_one_line(case, expect, hub, tmp_path, capsys):
    files = saved(tiny_swin(0), tmp_path / "saved")
    if case == "traversal":
        files = index_with(files, "../outside.safetensors")
    elif case == "absolute":
        files = index_with(files, "/etc/passwd")
    elif case == "subfolder":
        files = index_with(files, "sub/model.safetensors")
    elif case == "missing-shard":
        del files["model-00002-of-00005.safetensors"]
    elif case == "no-weight-map":
        files["model.safetensors.index.json"] = b'{"metadata": {}}'
    else:
        files["model.safetensors.index.json"] = b"<html>not json"
    hub.add(REPO, files)
    (tmp_path / "out").mkdir()
    fails_cleanly(["convert", f"hf-hub:{REPO}", "-o", tmp_path / "out" / "c.safetensors"], capsys, tmp_path / "out",
                  *expect)
    fails_cleanly(["download", f"hf-hub:{REPO}"], capsys, tmp_path / "out", *expect)


def test_offline_with_a_shard_not_cached_is_one_line(hub, tmp_path, monkeypatch, capsys):
    files = saved(tiny_swin(0), tmp_path / "saved")
    hub.add(REPO, files)
    assert run_cli(["download", f"hf-hub:{REPO}"], capsys)[0] == 0
    shard = next(p for p in (tmp_path / "hf_home" / "hub").rglob("model-00003-of-00005.safetensors"))
    shard.unlink()  # as a cache cleaned by hand, or a download cut short
    assert not in_cache(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "out").mkdir()
    fails_cleanly(["info", f"hf-hub:{REPO}"], capsys, tmp_path / "out", "acme/sharded", "not in the Hugging Face cache",
                  "HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert run_cli(["download", f"hf-hub:{REPO}"], capsys)[0] == 0  # online again: the missing shard comes back
    assert in_cache(REPO)


def test_an_unreachable_hub_falls_back_to_the_cached_shards(hub, tmp_path, monkeypatch, capsys):
    from tests.bad_inputs.test_network import closed_port

    theirs = tiny_swin(0)
    hub.add(REPO, saved(theirs, tmp_path / "saved"))
    assert run_cli(["download", f"hf-hub:{REPO}"], capsys)[0] == 0
    monkeypatch.setenv("HF_ENDPOINT", closed_port())
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(logits(swinzoo.load_model(f"hf-hub:{REPO}").eval(), x), logits(theirs, x), rtol=0,
                               atol=1e-5)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_home"))
    (tmp_path / "out").mkdir()
    fails_cleanly(["download", f"hf-hub:{REPO}"], capsys, tmp_path / "out", "could not reach", "not in the Hugging "
                  "Face cache", code=1)


def test_a_push_replaces_a_sharded_model(hub, tmp_path, monkeypatch):
    """`swinzoo push` onto a repo holding a sharded model removes the index and every shard (STALE_PATTERNS): a
    loader would read them beside, or instead of, the pushed model.safetensors."""
    from .test_push import _cli, _env

    hub.token = "hf_test"
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    files = saved(tiny_swin(0), tmp_path / "saved")
    hub.add(REPO, {**files, "README.md": b"---\nlicense: mit\n---\nmine", "notes.txt": b"mine"})
    swinzoo.convert(f"hf-hub:{REPO}", tmp_path / "m.safetensors")  # through the sharded repo: republished as timm's
    pushed = _cli(["push", tmp_path / "m.safetensors", "--repo", REPO], _env(hub, tmp_path))
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert sorted(hub.files(REPO)) == ["README.md", "config.json", "model.safetensors", "notes.txt"]
    assert "model.safetensors.index.json" in " ".join(pushed.stdout.split())  # the removed files are named


def test_a_push_keeps_weights_in_subfolders(hub, tmp_path, monkeypatch):
    """Only the top-level files are what timm and transformers load: an `original/` checkpoint or a Trainer's
    `checkpoint-500/` in the repo is the owner's, and stays."""
    from .test_push import _cli, _env

    hub.token = "hf_test"
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    kept = {"original/swin_base.pth": b"official", "checkpoint-500/model.safetensors": b"trainer",
            "checkpoint-500/pytorch_model.bin": b"trainer", "onnx/model.safetensors.index.json": b"{}"}
    hub.add(REPO, {**saved(tiny_swin(0), tmp_path / "saved"), **kept})
    swinzoo.convert(f"hf-hub:{REPO}", tmp_path / "m.safetensors")
    pushed = _cli(["push", tmp_path / "m.safetensors", "--repo", REPO], _env(hub, tmp_path))
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert sorted(hub.files(REPO)) == sorted(["README.md", "config.json", "model.safetensors", *kept])
    assert "original/" not in pushed.stdout and "checkpoint-500" not in pushed.stdout
