"""swinzoo as a script sees it: every `--json` output is one strict JSON document (what jq, JavaScript's JSON.parse,
Go and Rust read: no NaN or Infinity), and every SWINZOO_* environment variable takes only the values it documents."""

import json

import pytest

import swinzoo
from tests.conftest import one_error_line, run_cli


def strict_json(text: str):
    """`text` parsed as RFC 8259 JSON: Python's json.loads also takes NaN and Infinity, which strict parsers refuse."""

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_info_json_of_a_file_whose_provenance_holds_nan_stays_strict_json(tmp_path, capsys):
    """A provenance written by Python's json (another tool's metrics, a pretraining loss that overflowed) may hold
    NaN or Infinity; `info --json` printed them back as bare NaN / Infinity, which JSON.parse and jq --strict
    parsers refuse. They come out as null."""
    path = tmp_path / "m.safetensors"
    swinzoo.save_model(swinzoo.load_model("swin_n_64"), path,
                       provenance={"pretrain": {"val_loss": float("inf")}, "lr_noise": float("nan"), "lr": 0.5})
    code, out, err = run_cli(["info", path, "--json"], capsys)
    assert code == 0, err
    provenance = strict_json(out)["provenance"]
    assert provenance == {"pretrain": {"val_loss": None}, "lr_noise": None, "lr": 0.5}


def test_predict_json_with_non_finite_probabilities_stays_strict_json(tmp_path, capsys, monkeypatch):
    """fp16 on a GPU can overflow a model's logits: the softmax is then NaN. The document stays JSON (null)."""
    import swinzoo.prediction

    rows = [{"image": "a.png", "predictions": [["cat", float("nan")], ["dog", float("nan")]]}]
    monkeypatch.setattr(swinzoo.prediction, "predict", lambda *a, **k: rows)
    code, out, err = run_cli(["predict", "swin_n_64", tmp_path / "a.png", "--json"], capsys)
    assert code == 0, err
    assert strict_json(out) == [{"image": "a.png", "predictions": [["cat", None], ["dog", None]]}]


@pytest.mark.parametrize(("name", "value", "values"), [
    ("SWINZOO_CPU_GEMM", "mkl", "auto, onednn, aten"),
    ("SWINZOO_PACK_WEIGHTS", "no", "0, 1"),
    ("SWINZOO_CPU_ATTENTION", "flash", "auto, eager, sdpa"),
    ("SWINZOO_MALLOC", "off", "keep, default"),
    ("SWINZOO_DEBUG", "maybe", "0, 1"),
    ("SWINZOO_HUB_TIMEOUT", "ten", "seconds"),
])
def test_a_bad_environment_value_is_one_error_line_naming_the_variable_and_its_values(name, value, values,
                                                                                       monkeypatch, capsys):
    """SWINZOO_CPU_GEMM and SWINZOO_PACK_WEIGHTS warned (or, under commands that silence warnings, said nothing)
    and ran the default; SWINZOO_MALLOC=off kept glibc's memory as if unset; SWINZOO_DEBUG=maybe turned tracebacks
    on; SWINZOO_HUB_TIMEOUT was read only once a command reached the Hub. Each is refused up front now."""
    monkeypatch.setenv(name, value)
    code, out, err = run_cli(["list", "swin_n_64"], capsys)
    assert code == 2 and out == "", (code, out)
    one_error_line(err, f"{name}={value!r}", values)


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["info", "-h"], ["finetune", "--help"]])
def test_help_and_version_answer_under_a_bad_environment_value(argv, monkeypatch, capsys):
    """A mistyped SWINZOO_CPU_GEMM also refused `swinzoo --help`, the page that documents the variables: the check
    waits for a command that does something."""
    monkeypatch.setenv("SWINZOO_CPU_GEMM", "mkl")
    code, out, err = run_cli(argv, capsys)
    assert code == 0 and out.strip() and "error" not in err, (code, err)


@pytest.mark.parametrize("value", ["0", "false", "No", "off", ""])
def test_swinzoo_debug_off_spelled_any_common_way_keeps_the_one_line_error(value, monkeypatch, capsys):
    """SWINZOO_DEBUG=false (a CI template's false) showed the traceback: anything but "" and "0" counted as on."""
    monkeypatch.setenv("SWINZOO_DEBUG", value)
    code, _, err = run_cli(["info", "no_such_model"], capsys)
    assert code == 2
    one_error_line(err, "no_such_model")


@pytest.mark.parametrize(("name", "value"), [("SWINZOO_CPU_GEMM", "ATEN"), ("SWINZOO_PACK_WEIGHTS", "0"),
                                             ("SWINZOO_MALLOC", "default"), ("SWINZOO_MALLOC", "keep"),
                                             ("SWINZOO_HUB_TIMEOUT", "2.5"), ("SWINZOO_CPU_GEMM", "")])
def test_the_documented_environment_values_run(name, value, monkeypatch, capsys):
    monkeypatch.setenv(name, value)
    code, out, err = run_cli(["list", "swin_n_64", "--json"], capsys)
    assert code == 0, err
    assert strict_json(out)


def test_the_settings_name_the_values_the_code_takes():
    from swinzoo import settings
    from swinzoo.hardware import MALLOC_ENV
    from swinzoo.hub_http import TIMEOUT_ENV
    from swinzoo.models import cpu_gemm, fast_path

    assert settings.CHOICES[cpu_gemm.BACKEND_ENV] == cpu_gemm.BACKENDS
    assert settings.CHOICES[fast_path.ATTENTION_ENV] == fast_path.ATTENTION_CHOICES
    assert settings.CHOICES[cpu_gemm.PACK_ENV] == ("0", "1")
    assert MALLOC_ENV in settings.CHOICES and TIMEOUT_ENV == settings.HUB_TIMEOUT_ENV


def environment_names_in_the_source() -> set[str]:
    """Every string constant in swinzoo's source that names a SWINZOO_* variable (with or without a leading _)."""
    import ast
    import re
    from pathlib import Path

    root = Path(swinzoo.__file__).parent
    names = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"_?SWINZOO_[A-Z_]+", node.value):
                    names.add(node.value)
    return names


def test_every_environment_variable_is_documented_for_users_or_marked_internal():
    """SWINZOO_RUN_OUT and SWINZOO_IMAGES_CHECKED, which swinzoo sets for the DDP processes it starts, read like
    settings (`SWINZOO_RUN_OUT=runs/x swinzoo finetune` was silently ignored) and were listed nowhere. The ones a
    user sets are in docs/scripting.md's table; swinzoo's own start with an underscore."""
    from pathlib import Path

    from swinzoo import settings

    names = environment_names_in_the_source()
    assert {"_SWINZOO_RUN_OUT", "_SWINZOO_IMAGES_CHECKED"} <= names
    user_facing = {n for n in names if not n.startswith("_")}
    assert user_facing == set(settings.DOCUMENTED)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "scripting.md").read_text()
    table = doc[doc.index("## Environment variables"):]
    for name in user_facing:
        assert f"| `{name}` |" in table, name
    for name, values in settings.CHOICES.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{name}` |"))
        assert all(f"`{v}`" in row for v in values), row


def test_every_json_document_key_is_documented(tmp_path, capsys):
    """A script reading `--json` needs the key names: `list --json` said only "the table as JSON", `bench --json`
    "the results as JSON". docs/scripting.md names every key; this holds it to what the commands print."""
    import dataclasses
    from pathlib import Path

    from PIL import Image

    from swinzoo.bench import Result

    doc = (Path(__file__).resolve().parents[1] / "docs" / "scripting.md").read_text()
    section = doc[doc.index("## JSON output"):doc.index("## Environment variables")]
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    keys = set()
    # recipes print every field of a recipe, the same keys as the YAML `swinzoo recipes NAME` prints
    for args in (["list", "swin_n_64"], ["info", "swin_n_64"], ["predict", "swin_n_64", tmp_path / "a.png"]):
        code, out, err = run_cli([*args, "--json"], capsys)
        assert code == 0, err
        document = strict_json(out)
        for item in document if isinstance(document, list) else [document]:
            keys |= set(item) - {"config"}
    keys |= {f.name for f in dataclasses.fields(Result)}
    missing = sorted(k for k in keys if f"`{k}`" not in section)
    assert not missing, missing


def test_the_files_a_run_writes_are_strict_json_when_a_metric_is_not_finite(tmp_path):
    """An fp16 run whose loss overflowed has val_loss = inf or NaN. metrics.json, run.json and the provenance inside
    model.safetensors were written by Python's json as bare NaN / Infinity, which pandas.read_json, jq and the Hub's
    metadata readers refuse; the values are null there, the finite ones unchanged."""
    from safetensors import safe_open

    from swinzoo.config import SwinConfig
    from swinzoo.converters.native import PROVENANCE_KEY
    from swinzoo.train.folder import write_plan, write_results
    from swinzoo.train.options import Plan

    model = swinzoo.load_model("swin_n_64")
    config = SwinConfig.from_dict(json.loads(model.config.to_json()))
    plan = Plan(out=str(tmp_path), source="swin_n_64", config=config.to_dict(), recipe={"label_smoothing": 0.1},
                data="cifar10", lr=float("nan"), provenance={"source": "swin_n_64", "loss_scale": float("inf")})
    write_plan(plan, tmp_path / "run.json")
    written = write_results(plan, model.state_dict(), "finetune", {"top1": 0.5, "val_loss": float("nan")})

    assert strict_json((tmp_path / "metrics.json").read_text()) == {"top1": 0.5, "val_loss": None}
    run = strict_json((tmp_path / "run.json").read_text())
    assert run["lr"] is None and run["provenance"]["loss_scale"] is None and run["recipe"]["label_smoothing"] == 0.1
    with safe_open(str(written), "pt") as f:
        provenance = strict_json(f.metadata()[PROVENANCE_KEY])
    assert provenance["finetune"]["val_loss"] is None and provenance["finetune"]["top1"] == 0.5
    assert provenance["loss_scale"] is None


def test_an_exported_graphs_metadata_is_strict_json_when_its_provenance_holds_nan():
    """ONNX metadata_props and a .pt2's extra file carry the source's provenance, which may come from another tool
    with a NaN in it; a deployment reading it with JSON.parse or Go's encoding/json would fail."""
    from swinzoo.converters import graph
    from swinzoo.converters.common import Checkpoint

    model = swinzoo.load_model("swin_n_64")
    checkpoint = Checkpoint(model.state_dict(), model.config, provenance={"pretrain": {"val_loss": float("nan")}})
    document = strict_json(graph.metadata(checkpoint, "onnx"))
    assert document["provenance"] == {"pretrain": {"val_loss": None}} and document["format"] == "onnx"
