"""The zoo's front door: ImageNet-1k class names for zoo models, `list_models(pretrained=...)`, and `swinzoo list`
saying which weights are already on disk. Offline: zoo weights come from a Hugging Face cache the test builds."""

import json
import re

import pytest
import torch
from PIL import Image

import swinzoo
from swinzoo.converters import timm as timm_format
from swinzoo.hub import in_cache
from swinzoo.models import SwinTransformer
from swinzoo.sources import read_checkpoint
from swinzoo.zoo import ENTRIES, IN22K_CLASSES, WEIGHTS, imagenet1k_class_names, list_models, zoo_config

from .conftest import run_cli

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TINY = "swin_t_224"  # default weights .in1k
TINY_REPO = "timm/swin_tiny_patch4_window7_224.ms_in1k"
TABBY = 281


def cache_snapshot(cache, repo: str):
    """The snapshot folder huggingface_hub reads offline: hub/models--ORG--NAME/{refs/main, snapshots/SHA/}."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


@pytest.fixture(scope="module")
def tiny_timm_folder(tmp_path_factory):
    """swin_t_224 as timm publishes it (no label names), zero weights in fp16 whose head favours class 281."""
    cfg = zoo_config(TINY).replace(class_names=None)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in SwinTransformer(cfg).state_dict().items()}
    sd = {k: torch.zeros(s, dtype=torch.float16) for k, s in shapes.items() if "relative_position_index" not in k}
    sd["head.bias"][TABBY] = 10.0
    folder = tmp_path_factory.mktemp("staged")
    timm_format.write_timm_folder(sd, cfg, folder)
    return folder


@pytest.fixture
def hf_cache(hub_home):
    return hub_home / "hub"


@pytest.fixture
def tiny_cached(hf_cache, tiny_timm_folder):
    snapshot = cache_snapshot(hf_cache, TINY_REPO)
    for f in tiny_timm_folder.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    return snapshot


# ---------------------------------------------------------------------------------------------- class names
def test_imagenet_names_are_the_1000_classes_in_index_order():
    names = imagenet1k_class_names()
    assert len(names) == 1000 == len(set(names)) and all(n and n == n.strip() for n in names)
    assert names[0] == "tench" and names[TABBY] == "tabby" and names[-1] == "toilet tissue"
    torchvision = pytest.importorskip("torchvision")
    assert list(names) == torchvision.models.Swin_T_Weights.IMAGENET1K_V1.meta["categories"]


def test_zoo_configs_name_imagenet_1k_and_shapes_heads():
    for entry in ENTRIES:
        for w in entry.weights:
            names = entry.config(w.tag).class_names
            if w.tag in ("in1k", "in22k_ft_in1k"):
                assert names == list(imagenet1k_class_names()), f"{entry.name}.{w.tag}"
            elif w.tag == "shapes":  # the nano models: what `swinzoo info` shows is what their shipped file holds
                assert names == swinzoo.load_model(f"{entry.name}.{w.tag}").config.class_names, entry.name
                assert len(names) == 10 and names[1] == "stripes_0", entry.name
            else:  # 22k heads (21841 classes, no names shipped) and the SimMIM encoder (no head)
                assert names is None, f"{entry.name}.{w.tag}"
    assert zoo_config("swin_b_224.in22k").num_classes == IN22K_CLASSES
    assert zoo_config(TINY, num_classes=10).class_names is None  # a new head: the names no longer apply
    assert swinzoo.create_model(TINY, num_classes=10).config.class_names is None


def test_zoo_weights_from_the_hub_get_the_names(tiny_cached):
    checkpoint = read_checkpoint(TINY)
    assert checkpoint.config.class_names[TABBY] == "tabby"
    assert checkpoint.config == zoo_config(TINY)
    # the same Hub repo spelled out is the same weights
    assert read_checkpoint(f"hf-hub:{TINY_REPO}").config.class_names == list(imagenet1k_class_names())


def test_a_hub_repo_outside_the_zoo_gets_no_names(hf_cache, tiny_timm_folder):
    snapshot = cache_snapshot(hf_cache, "someone/my-swin")
    for f in tiny_timm_folder.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    assert read_checkpoint("hf-hub:someone/my-swin").config.class_names is None


def test_predict_prints_imagenet_names(tiny_cached, tmp_path, capsys):
    image = tmp_path / "cat.png"
    Image.new("RGB", (240, 200), (120, 90, 60)).save(image)
    code, out, err = run_cli(["predict", TINY, image, "--topk", "2", "--device", "cpu"], capsys)
    assert code == 0, err
    # zero weights and a head bias of 10 for class 281: p = e^10 / (e^10 + 999)
    assert out.startswith(f"{image}: tabby 0.957, ")  # the path as given


def test_exports_carry_the_names(tiny_cached, tmp_path):
    swinzoo.export(TINY, "timm", tmp_path / "timm")
    assert json.loads((tmp_path / "timm" / "config.json").read_text())["label_names"][TABBY] == "tabby"
    swinzoo.export(TINY, "hf", tmp_path / "hf")
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["id2label"][str(TABBY)] == "tabby" and hf_config["label2id"]["tench"] == 0


def test_info_shows_the_names(capsys):
    code, out, err = run_cli(["info", TINY], capsys)
    assert code == 0, err
    assert "tench, goldfish" in out and "(1000)" in out
    code, out, err = run_cli(["info", "swin_b_224.in22k", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["config"]["class_names"] is None
    code, out, err = run_cli(["info", TINY, "--json"], capsys)
    assert json.loads(out)["config"]["class_names"][TABBY] == "tabby"



def test_info_shows_a_missing_value_as_a_dash_as_list_does(capsys):
    """The nano model has no paper top-1 and no Hub repo: `-`, as in `swinzoo list`, not Python's `None`."""
    code, out, err = run_cli(["info", "swin_n_64"], capsys)
    assert code == 0, err
    assert "None" not in out
    assert re.search(r"top1\s*│\s*-\s", out) and re.search(r"hub_repo\s*│\s*-\s", out)

def test_info_piped_keeps_every_key_whole_whatever_columns(monkeypatch, capsys):
    """Piped with COLUMNS=40 (a narrow CI log, or a terminal's COLUMNS inherited by `| grep`), the table was cut to
    40 columns: `pretrained_windo…`, so `swinzoo info M | grep pretrained_window_sizes` found nothing. Piped, it
    is as wide as `list`'s, whatever COLUMNS says."""
    monkeypatch.setenv("COLUMNS", "40")
    code, out, err = run_cli(["info", "swin_n_64"], capsys)
    assert code == 0, err
    assert re.search(r"pretrained_window_sizes\s*│\s*\[0, 0, 0, 0\]", out) and "…" not in out, out


# ---------------------------------------------------------------------------------------------- list_models
def test_list_models_pretrained_lists_loadable_weights_by_tag():
    everything = list_models()
    pretrained = list_models(pretrained=True)
    assert "swin_t_224" in everything and "swin_t_224.in1k" in everything
    assert all("." in n for n in pretrained), "as timm: pretrained=True lists name.tag"
    assert set(pretrained) <= set(everything)
    assert "swin_t_c24_256.in1k" in everything and "swin_t_c24_256.in1k" not in pretrained  # only a release URL
    assert {"swin_n_64.shapes", "swinv2_n_64_w4.shapes", "swin_l_384.in22k"} <= set(pretrained)
    assert len(pretrained) == sum(1 for w in WEIGHTS if w.hub_repo or w.package_file)
    assert swinzoo.list_models("swin_t_224", pretrained=True) == [
        "swin_t_224.in1k", "swin_t_224.in22k_ft_in1k", "swin_t_224.in22k"]


def test_list_models_glob_without_a_dot_matches_before_the_tag():
    """As timm's filters: `swin_*_384` finds swin_b_384.in22k too; a glob with a dot matches the whole name."""
    assert list_models("swin_*_384", pretrained=True) == [
        "swin_b_384.in1k", "swin_b_384.in22k_ft_in1k", "swin_b_384.in22k",
        "swin_l_384.in22k_ft_in1k", "swin_l_384.in22k"]
    assert "swin_b_384" in list_models("swin_*_384")
    assert list_models("*.in22k", pretrained=True) == [n for n in list_models(pretrained=True) if n.endswith(".in22k")]
    assert list_models("nothing*") == []


def test_pretrained_names_are_timms_pretrained_names():
    timm = pytest.importorskip("timm")
    theirs = set(timm.list_models("swin*", pretrained=True))
    for w in WEIGHTS:
        if w.timm_name:
            assert w.timm_name in theirs, w.timm_name


# ---------------------------------------------------------------------------------------------- swinzoo list
def test_list_says_which_weights_are_local(hf_cache, tiny_cached, capsys):
    # config.json alone is not enough to load: the weights are missing, so it is not "cached"
    (cache_snapshot(hf_cache, "timm/swin_small_patch4_window7_224.ms_in1k") / "config.json").write_text("{}")
    # a repo cached with the pytorch_model.bin fallback loads offline too
    snapshot = cache_snapshot(hf_cache, "timm/swin_base_patch4_window7_224.ms_in1k")
    for name in ("config.json", "pytorch_model.bin"):
        (snapshot / name).write_text("{}")
    code, out, err = run_cli(["list", "--json"], capsys)
    assert code == 0, err
    local = {row["name"]: row["local"] for row in json.loads(out)}
    assert local["swin_t_224.in1k"] == "cached" and local["swin_b_224.in1k"] == "cached"
    assert local["swin_s_224.in1k"] is None and local["swin_t_224.in22k"] is None
    assert local["swin_n_64.shapes"] == "embedded" and local["swinv2_n_64_w4.shapes"] == "embedded"
    assert local["swin_n_64.simmim"] == "embedded"
    assert sum(v is not None for v in local.values()) == 5
    code, out, err = run_cli(["list", "swin_t_224"], capsys)
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("swin_t_224.")}
    assert rows["swin_t_224.in1k"][-1] == "cached" and rows["swin_t_224.in22k"][-1] == "-"


def test_in_cache_reads_an_empty_or_missing_cache(hf_cache):
    assert not in_cache(TINY_REPO)
    hf_cache.mkdir(parents=True)
    assert not in_cache(TINY_REPO)


@pytest.mark.parametrize("terminal", [True, False])
def test_list_fits_80_columns_in_a_terminal_and_a_pipe(hf_cache, monkeypatch, capsys, terminal):
    if terminal:  # rich then sizes the table to COLUMNS, as in an 80-column terminal
        monkeypatch.setenv("TTY_COMPATIBLE", "1")
        monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run_cli(["list"], capsys)
    assert code == 0, err
    text = re.sub(r"\x1b\[[0-9;]*m", "", out)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in text
    assert any(line.split()[-1] == "embedded" for line in lines if line.startswith("swin_n_64.shapes"))
    assert "228.8" in text and "21841" in text and "swinv2_l_384_w24.in22k_ft_in1k *" in text
