"""swinzoo as a script sees it: every `--json` output is one strict JSON document (what jq, JavaScript's JSON.parse,
Go and Rust read: no NaN or Infinity), and every SWINZOO_* environment variable takes only the values it documents."""

import json

import swinzoo
from tests.conftest import run_cli


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
