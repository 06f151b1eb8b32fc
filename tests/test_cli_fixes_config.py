"""`finetune --config PATH` that is no YAML mapping: one line naming the file and what is wrong with it."""

import pytest

from .conftest import run_cli

CASES = {  # name -> (file contents, or None for a folder; words the error line holds)
    "adir": (None, ["a folder"]),
    "empty.yaml": ("", ["empty"]),
    "list.yaml": ("- a\n- b\n", ["a list", "mapping"]),
    "notes.txt": ("just some words\n", ["plain text", "mapping"]),
    "number.yaml": ("42\n", ["(42)", "mapping"]),
    "broken.yaml": ("res: 96\nmax_steps: [1\n", ["not valid YAML", "line 3"]),
    "latin1.yaml": (b"res: 96 \xe9\n", ["not a text file"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("verb", ["finetune", "pretrain"])
def test_config_that_is_not_a_mapping(tmp_path, capsys, monkeypatch, name, verb):
    monkeypatch.chdir(tmp_path)
    content, needles = CASES[name]
    if content is None:
        (tmp_path / name).mkdir()
    elif isinstance(content, bytes):
        (tmp_path / name).write_bytes(content)
    else:
        (tmp_path / name).write_text(content)
    code, out, err = run_cli([verb, "--config", name, "--print-config"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith(f"error: swinzoo {verb}: --config {name}: "), lines[0]
    assert all(n in lines[0] for n in needles), lines[0]


def test_a_run_folder_points_at_its_config(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("res: 96\n")
    code, _, err = run_cli(["finetune", f"--config={run}", "--print-config"], capsys)
    assert code == 2 and f"did you mean --config {run / 'config.yaml'}?" in err
    code, out, err = run_cli(["finetune", "--config", run / "config.yaml", "--print-config"], capsys)
    assert code == 0 and "res: 96" in out, err


def test_inline_text_that_is_not_a_mapping(capsys):
    code, _, err = run_cli(["finetune", "--config", "- a", "--print-config"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "neither a YAML file nor a mapping" in err, err
