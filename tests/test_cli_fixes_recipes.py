"""`--recipe FILE`: a missing file lists the packaged recipes sorted; a run config given as a recipe says --config."""

import json

from .conftest import one_error_line, run_cli


def test_missing_recipe_file_lists_the_recipes_sorted(tmp_path, capsys):
    code, _, err = run_cli(["finetune", "--from", "swin_n_64", "--recipe", tmp_path / "missing.yaml",
                            "--max-steps", "1", "--out", tmp_path / "run"], capsys)
    line = one_error_line(err)
    assert code == 2 and "missing.yaml does not exist" in line
    names = line.split("packaged recipes: ", 1)[1].split(", ")
    assert len(names) > 3 and names == sorted(names), line
    assert not (tmp_path / "run").exists()


def test_a_run_config_given_as_recipe_points_at_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["finetune", "--from", "swin_n_64", "--res", "96", "--print-config"], capsys)
    assert code == 0, err
    (tmp_path / "run.yaml").write_text(out)
    for verb in ("finetune", "pretrain"):
        code, _, err = run_cli([verb, "--from", "swin_n_64", "--recipe", "run.yaml", "--max-steps", "1",
                                "--out", "out"], capsys)
        line = one_error_line(err)
        assert code == 2 and "is a run config" in line and "--config run.yaml" in line, line
        assert "unknown recipe key" not in line
    assert not (tmp_path / "out").exists()


def test_a_run_json_given_as_recipe_points_at_its_folder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"out": str(run), "source": "swin_n_64", "config": {}, "recipe": {},
                                              "data": "shapes", "provenance": {}}))
    code, _, err = run_cli(["finetune", "--from", "swin_n_64", "--recipe", run / "run.json", "--max-steps", "1",
                            "--out", tmp_path / "out"], capsys)
    line = one_error_line(err)
    assert code == 2 and f"--config {run / 'config.yaml'}" in line and f"--resume {run}" in line, line


def test_a_recipe_file_that_cannot_be_one_is_one_line(tmp_path, capsys):
    """A model or image given as the recipe was an "unexpected UnicodeDecodeError", a folder "does not exist", an
    empty file ran the defaults, and bad YAML said neither where nor what to do."""
    model = tmp_path / "model.yaml"
    model.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\xa4\xff binary")
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "empty.yaml").write_text("\n")
    (tmp_path / "bad.yaml").write_text("base_lr: 1\nbetas: [0.9, 0.99\nmixup: : 1\n")
    for name, said in (("model.yaml", "is not a text file"), ("folder.yaml", "is a folder, not a YAML file"),
                       ("empty.yaml", "is empty"), ("bad.yaml", "is not valid YAML at line 3, column")):
        code, _, err = run_cli(["recipes", tmp_path / name], capsys)
        line = one_error_line(err, said)
        assert code == 2, line
        assert "swinzoo recipes" in line or "packaged recipes:" in line, line  # where a good one comes from
    code, _, err = run_cli(["finetune", "--from", "swin_n_64", "--recipe", model, "--max-steps", "1",
                            "--out", tmp_path / "run"], capsys)
    assert code == 2 and "is not a text file" in one_error_line(err) and not (tmp_path / "run").exists()
