"""Files earlier swinzoo versions wrote (tests/fixtures/old_versions, README.md there says which commit and command
wrote each) still load with the logits those versions computed, and their run folders resume at their step with
the settings they trained with."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import swinzoo

from .conftest import FIXTURES, one_error_line, run_cli

OLD = FIXTURES / "old_versions"
V_2026_11_29 = OLD / "9074496"  # before --keep (its runs kept the last weights) and bf16 'auto' precision on CPUs
V_2026_12_02 = OLD / "fe79df5"  # SimMIM runs before the official weight-decay groups (ddf2fba)
V_2026_12_04 = OLD / "9a87026"


def expected(version: Path) -> dict[str, torch.Tensor]:
    return load_file(version / "expected_logits.safetensors")


CLASSIFIERS = [(v, name) for v in (V_2026_11_29, V_2026_12_04) for name in sorted(expected(v))
               if name != "input" and not name.startswith("pretrain")]


@pytest.mark.parametrize(("version", "name"), CLASSIFIERS, ids=[f"{v.name}-{n}" for v, n in CLASSIFIERS])
def test_an_old_weight_file_loads_with_the_logits_its_version_computed(version, name):
    want = expected(version)
    path = version / name / "last.ckpt" if name == "run_killed" else version / name
    model = swinzoo.load_model(path).eval()
    with torch.no_grad():
        got = model(want["input"])
    torch.testing.assert_close(got, want[name], rtol=1e-5, atol=1e-5)


def test_an_old_simmim_run_reconstructs_as_its_version_did():
    want = expected(V_2026_12_04)
    model = swinzoo.load_simmim(V_2026_12_04 / "pretrain_done").eval()
    mask = (torch.arange(64).reshape(1, 8, 8) % 3 == 0).expand(2, 8, 8).float()
    with torch.no_grad():
        _, reconstruction = model(want["input"], mask)
    torch.testing.assert_close(reconstruction, want["pretrain_done"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["convert_v1.safetensors", "official_v2.pth", "timm_v2", "hf_v1", "push_v2",
                                  "run_done", "run_killed/last.ckpt"])
def test_info_reads_an_old_file(name, capsys):
    code, out, err = run_cli(["info", V_2026_11_29 / name, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["config"] == swinzoo.load_model(V_2026_11_29 / name).config.to_dict()


def resumed(tmp_path: Path, version: Path, capsys, monkeypatch) -> tuple[dict, dict]:
    """Resume a copy of `version`'s killed run on a CPU with native bf16 matmul; its run.json and metrics.json."""
    import swinzoo.hardware

    monkeypatch.setattr(swinzoo.hardware, "native_bf16_matmul", lambda: "AMX")
    out = tmp_path / "run"
    shutil.copytree(version / "run_killed", out)
    code, _, err = run_cli(["finetune", "--resume", out, "--trainer.limit_val_batches", "1"], capsys)
    assert code == 0, err
    return json.loads((out / "run.json").read_text()), json.loads((out / "metrics.json").read_text())


def test_a_run_from_before_keep_resumes_at_its_step_in_fp32_keeping_the_last_weights(tmp_path, capsys,
                                                                                        monkeypatch):
    """Runs before --keep wrote the last weights, and their 'auto' precision was fp32 on every CPU: a resume
    on a CPU where 'auto' now means bf16 continued in bf16 and kept the best validation's weights."""
    plan, metrics = resumed(tmp_path, V_2026_11_29, capsys, monkeypatch)
    assert [r["step"] for r in plan["provenance"]["resumed"]] == [2] and metrics["global_step"] == 4
    assert plan["provenance"]["resumed"][0]["environment"]["precision"] == "32-true"
    assert plan["keep"] == "last" and metrics["weights"] == "last" and metrics["precision"] == "32-true"


def test_a_run_with_keep_recorded_resumes_at_its_step_as_recorded(tmp_path, capsys, monkeypatch):
    plan, metrics = resumed(tmp_path, V_2026_12_04, capsys, monkeypatch)
    assert [r["step"] for r in plan["provenance"]["resumed"]] == [2] and metrics["global_step"] == 4
    assert plan["keep"] == "best" and plan["recipe"]["precision"] == "auto"
    assert plan["provenance"]["resumed"][0]["environment"]["precision"] == "bf16-mixed"


def test_a_simmim_run_from_before_the_official_decay_groups_is_refused_in_one_line_naming_the_fix(tmp_path, capsys):
    """Its last.ckpt's AdamW state is grouped as the bias tables were then (no decay): Lightning's restore
    stopped the resume with an unexpected ValueError ('a parameter group that doesn't match')."""
    out = tmp_path / "run"
    shutil.copytree(V_2026_12_02 / "pretrain_killed", out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    code, _, err = run_cli(["pretrain", "--resume", out], capsys)
    assert code == 2
    one_error_line(err, "weight-decay groups", f"swinzoo pretrain --from {out / 'last.ckpt'} --data shapes")
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.name != ".swinzoo-run.lock") == before
