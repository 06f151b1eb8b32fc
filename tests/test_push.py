"""swinzoo push: the dry-run folder loads in swinzoo and timm with the same logits; a real push to the loopback Hub
loads back through hf-hub:; bad input fails in one line and changes nothing local."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

import swinzoo
from swinzoo import SwinConfig, SwinTransformer, save_model

from .conftest import run_cli
from .hub_emulator import HubEmulator

TINY = dict(embed_dim=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))


@pytest.fixture
def finetune_dir(tmp_path):
    """What `swinzoo finetune` leaves: model.safetensors (with provenance) and metrics.json."""
    torch.manual_seed(0)
    cfg = SwinConfig(version=2, img_size=128, window_size=8, pretrained_window_sizes=(4, 4, 4, 2), num_classes=3,
                     class_names=["circle", "square", "star"], **TINY)
    model = SwinTransformer(cfg)
    for p in model.parameters():  # non-trivial weights everywhere (V2 post-norms start at zero)
        p.data.normal_(0, 0.05)
    out = tmp_path / "run"
    provenance = {"source": "swinv2_t_256_w8", "dataset": "shapes", "recipe": "nano.yaml",
                  "transfer": {"from": {"img_size": 64, "window_size": 4}, "interpolated": [], "mapped": [],
                               "reinitialized": [], "notes": ["pretrained_window_sizes [4, 4, 4, 2]"]},
                  "finetune": {"top1": 0.91, "top5": 1.0, "command": "swinzoo finetune ..."}}
    save_model(model, out / "model.safetensors", provenance=provenance)
    (out / "metrics.json").write_text(json.dumps({"top1": 0.91, "top5": 1.0}))
    return out


def tree_digest(folder) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def logits(model, x):
    with torch.no_grad():
        return model.double().eval()(x)


def test_dry_run_folder_loads_in_swinzoo_and_timm(finetune_dir, tmp_path, capsys):
    timm = pytest.importorskip("timm")
    out = tmp_path / "D"
    code, _, err = run_cli(["push", finetune_dir, "--repo", "acme/x", "--dry-run", out], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    x = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    expected = logits(swinzoo.load_model(finetune_dir / "model.safetensors"), x)
    ours = swinzoo.load_model(out)
    assert ours.config.class_names == ["circle", "square", "star"]
    assert ours.config.pretrained_window_sizes == (4, 4, 4, 2)
    torch.testing.assert_close(logits(ours, x), expected, rtol=0, atol=1e-6)
    theirs = timm.create_model(f"local-dir:{out}", pretrained=True)
    torch.testing.assert_close(logits(theirs, x), expected, rtol=0, atol=1e-6)

    config = json.loads((out / "config.json").read_text())
    assert config["architecture"].startswith("swinv2") and config["num_classes"] == 3
    assert config["num_features"] == 192 and config["pretrained_cfg"]["input_size"] == [3, 128, 128]
    assert config["pretrained_cfg"]["interpolation"] == "bicubic" and "crop_pct" in config["pretrained_cfg"]
    assert config["model_args"]["pretrained_window_sizes"] == [4, 4, 4, 2]
    assert config["swinzoo"]["config"] == SwinConfig.from_dict(config["swinzoo"]["config"]).to_dict()

    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["library_name"] == "timm" and header["pipeline_tag"] == "image-classification"
    # `datasets:` holds Hub dataset ids only: the built-in `shapes` is not one
    assert header["license"] == "mit" and "swinzoo" in header["tags"] and "datasets" not in header
    assert header["base_model"] == "timm/swinv2_tiny_window8_256.ms_in1k"
    metrics = header["model-index"][0]["results"][0]["metrics"]
    assert [m["value"] for m in metrics] == [0.91, 1.0]
    assert "hf-hub:acme/x" in card and "timm.create_model" in card and "64 px / window 4" in card
    assert "M parameters" in card and "GMACs at 128 px" in card and "Swin Transformer V2: Scaling Up" in card


def test_a_file_beside_a_runs_metrics_is_pushed_without_them(finetune_dir, tmp_path, capsys):
    """metrics.json scores the run's own model.safetensors: another model in that folder (a converted copy) is
    pushed without figures it never earned."""
    moved = tmp_path / "as96.safetensors"
    assert run_cli(["convert", finetune_dir, "--res", "96", "-o", moved], capsys)[0] == 0
    (finetune_dir / moved.name).write_bytes(moved.read_bytes())
    for src in (finetune_dir / moved.name, finetune_dir / "model.safetensors"):
        out = tmp_path / src.stem
        code, _, err = run_cli(["push", src, "--repo", "acme/x", "--dry-run", out], capsys)
        assert code == 0, err
        header = yaml.safe_load((out / "README.md").read_text().split("---")[1])
        config = json.loads((out / "config.json").read_text())
        if src.name == "model.safetensors":
            assert "model-index" in header and config["swinzoo"]["metrics"]["top1"] == 0.91
        else:
            assert "model-index" not in header and config["swinzoo"]["metrics"] is None, header
            # the run's recipe and command describe the weights it trained, which the convert moved since
            card = (out / "README.md").read_text()
            assert "the training of the weights before the transfer" in card and "swinzoo finetune ..." not in card


def test_the_pushed_provenance_holds_no_local_paths(finetune_dir, tmp_path, capsys):
    """Where the weights lay on this machine (the HF cache, the user's folders) is not published."""
    model = swinzoo.load_model(finetune_dir / "model.safetensors")
    src = tmp_path / "m.safetensors"
    save_model(model, src, provenance={"source": "hf-hub:acme/n64", "parent": {
        "loaded_from": "/home/me/.cache/huggingface/hub/models--acme--n64/snapshots/1/model.safetensors",
        "local_path": "/home/me/.cache/huggingface/hub/models--acme--n64/snapshots/1"}})
    out = tmp_path / "D"
    assert run_cli(["push", src, "--repo", "acme/x", "--dry-run", out], capsys)[0] == 0
    text = (out / "config.json").read_text() + (out / "README.md").read_text()
    assert "/home/me" not in text and str(tmp_path) not in text and "hf-hub:acme/n64" in text


def test_card_names_hub_datasets_only():
    from swinzoo.model_card import model_card

    cfg = SwinConfig(img_size=32, embed_dim=8, depths=(1, 1), num_heads=(1, 2), window_size=4,
                     pretrained_window_sizes=(0, 0), num_classes=2)
    for data, expected in (("hf:org/pets", ["org/pets"]), ("/data/pets", None), ("shapes", None)):
        card = model_card("acme/x", cfg, {"dataset": data}, {"top1": 0.5, "top5": 1.0})
        header = yaml.safe_load(card.split("---")[1])
        assert header.get("datasets") == expected, data
        assert header["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.5


def test_the_card_loads_from_the_pushed_branch_and_claims_no_empty_transfer(finetune_dir, tmp_path, capsys):
    out = tmp_path / "D"
    code, _, err = run_cli(["push", finetune_dir, "--repo", "acme/x", "--revision", "dev", "--dry-run", out], capsys)
    assert code == 0, err
    card = (out / "README.md").read_text()
    assert 'load_model("hf-hub:acme/x@dev")' in card and 'create_model("hf-hub:acme/x@dev"' in card
    from swinzoo.model_card import model_card

    cfg = swinzoo.load_model(finetune_dir).config
    same = {"transfer": {"from": {"img_size": 128, "window_size": 8}, "interpolated": [], "mapped": [],
                         "reinitialized": [], "notes": []}}
    card = model_card("acme/x", cfg, same, None)
    assert "transferred" not in card and "; \n" not in card and 'load_model("hf-hub:acme/x")' in card


def test_dry_run_refuses_a_non_empty_folder(finetune_dir, tmp_path, capsys):
    out = tmp_path / "D"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(["push", finetune_dir, "--repo", "acme/x", "--dry-run", out], capsys)
    assert code == 2 and "not empty" in err and (out / "keep.txt").read_text() == "mine"
    image = tmp_path / "rgb.png"
    image.write_bytes(b"mine")
    code, _, err = run_cli(["push", finetune_dir, "--repo", "acme/x", "--dry-run", image], capsys)
    assert code == 2 and err.startswith(f"error: --dry-run {image} is a file") and image.read_bytes() == b"mine"


def _cli(args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "swinzoo", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _env(hub, tmp_path, token="hf_test"):
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1")
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    return env


def test_push_to_loopback_hub_and_load_back(finetune_dir, tmp_path):
    with HubEmulator(token="hf_test") as hub:
        env = _env(hub, tmp_path)
        run = _cli(["push", finetune_dir, "--repo", "acme/x", "--commit-message", "first"], env)
        assert run.returncode == 0, run.stderr[-3000:]
        assert hub.calls.count("commit") == 1  # one commit
        # another model's weights and preprocessing in the repo go with the next push: loaders would find them
        files = hub.files("acme/x")
        files.update({"pytorch_model.bin": b"old", "preprocessor_config.json": b"{}", "notes.txt": b"mine"})
        again = _cli(["push", finetune_dir, "--repo", "acme/x", "--commit-message", "second"], env)
        assert again.returncode == 0, again.stderr[-2000:]
        assert sorted(hub.files("acme/x")) == ["README.md", "config.json", "model.safetensors", "notes.txt"]
        assert "removed preprocessor_config.json, pytorch_model.bin from acme/x" in " ".join(again.stdout.split())
        # the repo exists and is public now: --private cannot make it private, and says so before uploading
        again = _cli(["push", finetune_dir, "--repo", "acme/x", "--private"], env)
        assert again.returncode == 2 and "acme/x exists and is public" in again.stderr, again.stderr[-2000:]
        assert hub.calls.count("commit") == 2
        # load back through hf-hub: from the same server, into a fresh cache
        code = ("import sys, torch, swinzoo; m = swinzoo.load_model('hf-hub:acme/x'); "
                "torch.save(m.state_dict(), sys.argv[1])")
        dump = tmp_path / "back.pt"
        back = subprocess.run([sys.executable, "-c", code, str(dump)], env=env, capture_output=True, text=True,
                              timeout=300)
        assert back.returncode == 0, back.stderr[-3000:]
        original = swinzoo.load_model(finetune_dir / "model.safetensors").state_dict()
        loaded = torch.load(dump, weights_only=True)
        assert loaded.keys() == original.keys()
        assert all(torch.equal(loaded[k], original[k]) for k in original)

        # a second push keeps the card on the Hub unless asked, and can go to a branch
        hub.repos["acme/x"].commits[hub.repos["acme/x"].branches["main"]]["README.md"] = b"---\nlicense: mit\n---\nmine"
        run = _cli(["push", finetune_dir, "--repo", "acme/x", "--revision", "v2"], env)
        assert run.returncode == 0, run.stderr[-3000:]
        assert hub.files("acme/x", "v2")["README.md"].endswith(b"mine")
        run = _cli(["push", finetune_dir, "--repo", "acme/x", "--overwrite-card"], env)
        assert run.returncode == 0 and b"hf-hub:acme/x" in hub.files("acme/x")["README.md"]


@pytest.mark.parametrize("case", ["no_token", "bad_repo_id", "refused", "not_a_model", "backbone", "simmim"])
def test_bad_input_fails_cleanly(case, finetune_dir, tmp_path):
    before = tree_digest(finetune_dir)
    src, repo, token = finetune_dir, "acme/x", "hf_test"
    with HubEmulator(token="hf_test") as hub:
        if case == "no_token":
            token = None
        elif case == "bad_repo_id":
            repo = "just-a-name"
        elif case == "refused":
            hub.refuse["commit"] = 403
        elif case == "not_a_model":
            src = tmp_path / "notes.txt"
            src.write_text("not a model")
        elif case == "backbone":  # the timm layout holds classifiers only
            src = tmp_path / "det.safetensors"
            swinzoo.convert("swin_n_64", src, features=True)
        else:
            src = tmp_path / "simmim.pth"
            swinzoo.export("swin_n_64.simmim", to="simmim", output=src)
        run = _cli(["push", src, "--repo", repo], _env(hub, tmp_path, token))
        lines = run.stderr.strip().splitlines()
        # exit 2, the token's refusal (403) included: not 1, an unexpected exception's one line
        assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), run.stderr[-2000:]
        expected = {"no_token": "login", "bad_repo_id": "not ORG/NAME", "refused": "403",
                    "not_a_model": "not a model", "backbone": "detection backbone (no head), which the pushed timm",
                    "simmim": "SimMIM pretraining model (encoder + decoder), which the pushed timm"}[case]
        assert expected in lines[0]
        if case == "refused":
            assert "acme/x" in lines[0]
        assert "commit" not in hub.calls or case == "refused"
    assert tree_digest(finetune_dir) == before


def test_finetune_push_to(tmp_path):
    """`swinzoo finetune ... --push-to ORG/NAME` pushes OUT when training ends (one commit)."""
    from .test_finetune import FAST, image_folder

    src = tmp_path / "tiny.safetensors"
    cfg = SwinConfig(img_size=32, embed_dim=8, depths=(1, 1), num_heads=(1, 2), window_size=4,
                     pretrained_window_sizes=(0, 0), num_classes=2)
    save_model(SwinTransformer(cfg), src, {"source": "test"})
    data = image_folder(tmp_path / "data")
    with HubEmulator(token="hf_test") as hub:
        env = _env(hub, tmp_path)
        env["OMP_NUM_THREADS"] = "1"
        args = ["finetune", "--from", src, "--data", data, "--recipe", "nano_finetune", "--max-steps", "2",
                "--out", tmp_path / "run", "--push-to", "acme/tiny", *FAST]
        run = _cli(args, env)
        assert run.returncode == 0, run.stderr[-3000:]
        assert hub.calls.count("commit") == 1
        files = hub.files("acme/tiny")
        assert {"README.md", "config.json", "model.safetensors"} <= set(files)
        card = files["README.md"].decode()
        assert "top-1 accuracy" in card and "recipe: `nano_finetune`" in card
        # a token the Hub refuses: said before training, not after it
        run = _cli([*args[:-len(FAST) - 2], "--out", tmp_path / "run3", "--push-to", "acme/tiny", *FAST],
                   {**env, "HF_TOKEN": "hf_bad"})
        assert run.returncode == 2 and "refused the token" in run.stderr and not (tmp_path / "run3").exists(), (
            run.stderr[-2000:])
        # no token: refused before any training output exists
        env.pop("HF_TOKEN")
        run = _cli([*args[:-len(FAST) - 2], "--out", tmp_path / "run2", "--push-to", "acme/tiny", *FAST], env)
        assert run.returncode == 2 and "--push-to needs a Hugging Face token" in run.stderr, run.stderr[-2000:]
        assert not (tmp_path / "run2").exists()


def test_a_runs_training_curves_go_with_its_push(finetune_dir, tmp_path, capsys):
    """The run's curves.png is what a reader of the model card would rather see than read: it is uploaded beside
    the weights and shown under the results, when the figures are the run's (not for a copied or converted file)."""
    from PIL import Image

    Image.new("RGB", (90, 60), "white").save(finetune_dir / "curves.png")
    out = tmp_path / "D"
    code, _, err = run_cli(["push", finetune_dir, "--repo", "acme/x", "--dry-run", out], capsys)
    assert code == 0, err
    assert (out / "curves.png").read_bytes() == (finetune_dir / "curves.png").read_bytes()
    card = (out / "README.md").read_text()
    assert card.index("## Results") < card.index("![training curves](curves.png)") < card.index("## How to use")
    swinzoo.save_model(swinzoo.load_model(finetune_dir), tmp_path / "copy" / "model.safetensors")
    (tmp_path / "copy" / "curves.png").write_bytes((finetune_dir / "curves.png").read_bytes())
    code, _, err = run_cli(["push", tmp_path / "copy", "--repo", "acme/x", "--dry-run", tmp_path / "E"], capsys)
    assert code == 0, err
    assert not (tmp_path / "E" / "curves.png").exists()
    assert "curves.png" not in (tmp_path / "E" / "README.md").read_text()
