"""`hf-hub:` sources from a temporary Hugging Face cache built by the test (no network: HF_HUB_OFFLINE=1)."""

import json

import pytest
import torch

from swinzoo import SwinConfig, SwinTransformer
from swinzoo.converters import hf
from swinzoo.converters import timm as timm_format
from swinzoo.hub import parse_ref, zoo_repo
from swinzoo.sources import read_checkpoint

from .conftest import run_cli
from .formats_helpers import SMALL, assert_logits_close, randomize

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cached_repo(home, repo: str, revision: str = "main"):
    """The snapshot folder huggingface_hub looks up offline: hub/models--ORG--NAME/{refs/REV, snapshots/SHA/}."""
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / revision).write_text(COMMIT)
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def small_model(version: int, **cfg_kwargs):
    cfg = SwinConfig(version=version, img_size=128, window_size=4, num_classes=5, **SMALL, **cfg_kwargs)
    return cfg, randomize(SwinTransformer(cfg)).double().eval()


def test_timm_repo_through_hf_hub(hub_home, tmp_path, capsys):
    cfg, model = small_model(2, pretrained_window_sizes=(8, 8, 8, 2))
    timm_format.write_timm_folder(model.state_dict(), cfg, tmp_path / "staged")
    snapshot = cached_repo(hub_home, "someone/tiny-swinv2")
    for f in (tmp_path / "staged").iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    source = read_checkpoint("hf-hub:someone/tiny-swinv2")
    assert source.config == cfg
    assert source.provenance["hub_repo"] == "someone/tiny-swinv2" and source.provenance["format"] == "timm"
    ours = SwinTransformer(source.config).double().eval()
    ours.load_state_dict(source.state_dict, strict=True)
    x = torch.randn(1, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        assert_logits_close(ours(x), model(x))
    code, out, err = run_cli(["info", "hf-hub:someone/tiny-swinv2@main", "--json"], capsys)  # info takes it too
    assert code == 0, err
    assert json.loads(out)["config"]["pretrained_window_sizes"] == [8, 8, 8, 2]


def test_hf_repo_through_hf_hub_with_revision(hub_home, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    theirs = transformers.SwinForImageClassification(transformers.SwinConfig(
        image_size=128, patch_size=4, embed_dim=24, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=4,
        num_labels=5))
    randomize(theirs).double().eval()
    theirs.save_pretrained(cached_repo(hub_home, "someone/tiny-swin", revision="v1.0"))
    source = read_checkpoint("hf-hub:someone/tiny-swin@v1.0")
    assert source.provenance["format"] == "hf" and source.provenance["revision"] == "v1.0"
    ours = SwinTransformer(source.config).double().eval()
    ours.load_state_dict(source.state_dict, strict=True)
    x = torch.randn(1, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        assert_logits_close(ours(x), theirs(x).logits)
    out = tmp_path / "c.safetensors"
    code, _, err = run_cli(["convert", f"hf-hub:someone/tiny-swin@{COMMIT}", "-o", out], capsys)
    assert code == 0, err
    converted = read_checkpoint(str(out))  # the weights at that commit, as read through the Hub above
    assert converted.config == source.config and converted.state_dict.keys() == source.state_dict.keys()
    assert all(torch.equal(converted.state_dict[k], v) for k, v in source.state_dict.items())
    code, stdout, err = run_cli(["download", "hf-hub:someone/tiny-swin@v1.0", "--check"], capsys)
    assert code == 0, err
    assert COMMIT in stdout and "window 4" in stdout


def test_uncached_repo_offline_is_one_clear_line(hub_home, tmp_path, capsys):
    out = tmp_path / "o.safetensors"
    code, _, err = run_cli(["convert", "hf-hub:someone/not-here", "-o", out], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "someone/not-here" in err and "HF_HUB_OFFLINE" in err and "swinzoo download" in err
    assert not out.exists()


def test_zoo_name_resolves_to_its_timm_repo(hub_home, capsys):
    assert zoo_repo("swin_b_224") == "hf-hub:timm/swin_base_patch4_window7_224.ms_in22k_ft_in1k"
    assert zoo_repo("swinv2_b_384_w24") == "hf-hub:timm/swinv2_base_window12to24_192to384.ms_in22k_ft_in1k"
    code, _, err = run_cli(["info", "swin_t_224", "--json"], capsys)  # a zoo name alone needs no weights
    assert code == 0, err
    code, _, err = run_cli(["download", "swin_t_224"], capsys)
    assert code == 2 and "timm/swin_tiny_patch4_window7_224.ms_in1k" in err and "HF_HUB_OFFLINE" in err
    code, _, err = run_cli(["export", "swin_s_224.in22k", "--to", "timm", "-o", "x"], capsys)
    assert code == 2 and "timm/swin_small_patch4_window7_224.ms_in22k" in err
    code, out, err = run_cli(["download", "swin_n_64.simmim"], capsys)  # shipped in the package, even offline
    assert code == 0 and "ships inside swinzoo" in out and "nothing to download" in out, err


def test_bad_references():
    from swinzoo.errors import SwinzooError

    assert parse_ref("hf-hub:a/b@rev") == ("a/b", "rev") and parse_ref("hf_hub:a/b") == ("a/b", None)
    with pytest.raises(SwinzooError, match="hf-hub:ORG/NAME"):
        parse_ref("hf-hub:just-a-name")


def test_hf_export_also_loads_through_the_hub(hub_home, tmp_path):
    cfg, model = small_model(1)
    hf.write_hf_folder(model.state_dict(), cfg, cached_repo(hub_home, "someone/exported").parent / "tmp-export")
    snapshot = cached_repo(hub_home, "someone/exported")
    for f in (snapshot.parent / "tmp-export").iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    assert read_checkpoint("hf-hub:someone/exported").config == cfg
