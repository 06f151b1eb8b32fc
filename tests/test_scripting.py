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
    from swinzoo.models import cpu_gemm

    assert settings.CHOICES[cpu_gemm.BACKEND_ENV] == cpu_gemm.BACKENDS
    assert settings.CHOICES[cpu_gemm.PACK_ENV] == ("0", "1")
    assert MALLOC_ENV in settings.CHOICES and TIMEOUT_ENV == settings.HUB_TIMEOUT_ENV
