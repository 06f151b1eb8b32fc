"""What `finetune` and `pretrain` take from Python: os.PathLike paths (recorded as str), model objects refused in
one line, and values of the wrong type named as they were given."""


import json
from pathlib import Path

import pytest
import yaml

import swinzoo
from swinzoo.errors import SwinzooError

from .conftest import run_cli

RUN = {"max_steps": 1, "batch_size": 4, "num_workers": 0, "accelerator": "cpu", "devices": 1,
       "trainer": {"limit_val_batches": 1, "enable_model_summary": False}}


@pytest.mark.parametrize("verb, model", [
    ("finetune", lambda: swinzoo.create_model("swin_n_64")),
    ("pretrain", lambda: swinzoo.load_simmim("swin_n_64")),
    ("pretrain", lambda: swinzoo.create_model("swin_n_64", features_only=True)),
])
def test_a_model_object_as_the_source_is_one_line(verb, model, tmp_path):
    with pytest.raises(SwinzooError, match=rf"{verb}\(\): the source is a \w+ object; .*swinzoo.save_model") as e:
        getattr(swinzoo, verb)(model(), data="shapes", out=str(tmp_path / "o"), **RUN)
    assert "\n" not in str(e.value) and not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return swinzoo.convert("swin_n_64", tmp_path_factory.mktemp("src") / "m.safetensors").output


def image_folder(root: Path) -> Path:
    from PIL import Image

    from swinzoo.train.shapes import render

    for split in ("train", "val"):
        for label, name in enumerate(("solid", "frame")):
            (root / split / name).mkdir(parents=True)
            for i in range(2):
                image = Image.fromarray(render(label, 64, seed=i).permute(1, 2, 0).numpy())
                image.save(root / split / name / f"{i}.png")
    return root


@pytest.mark.parametrize("verb", ["finetune", "pretrain"])
def test_pathlike_source_data_and_out_are_recorded_as_str(verb, model_file, tmp_path):
    data, out = image_folder(tmp_path / "data"), tmp_path / "run"
    result = getattr(swinzoo, verb)(Path(model_file), data=data, out=out, **RUN)
    assert result.out == out
    plan = json.loads((out / "run.json").read_text())
    assert plan["source"] == str(model_file) and plan["data"] == str(data) and plan["out"] == str(out)
    assert plan["command"].startswith(f"swinzoo.{verb}({str(model_file)!r}, data={str(data)!r}, out={str(out)!r}")
    replay = yaml.safe_load((out / "config.yaml").read_text())
    assert replay["from"] == str(model_file) and replay["data"] == str(data)


@pytest.mark.parametrize("verb, options, words", [
    ("finetune", {"max_steps": "3"}, "max_steps='3': must be a whole number >= 1 (optimizer steps; a str was given)"),
    ("finetune", {"batch_size": 0}, "batch_size=0: must be a whole number >= 1"),
    ("finetune", {"lr": "1e-4"}, "lr='1e-4': must be a positive number"),
    ("pretrain", {"seed": 1.5}, "seed=1.5: must be a whole number in [0, "),
    ("pretrain", {"mask_ratio": "0.5"}, "mask_ratio='0.5': must be a number in (0, 1]"),
    ("pretrain", {"mask_patch_size": 0}, "mask_patch_size=0: must be a whole number >= 1"),
])
def test_a_bad_value_from_python_is_named_as_given(verb, options, words, tmp_path):
    with pytest.raises(SwinzooError) as e:
        getattr(swinzoo, verb)("swin_n_64", data="shapes", out=str(tmp_path / "o"), **options)
    assert words in str(e.value) and "--" not in str(e.value)


@pytest.mark.parametrize("verb, flags, words", [
    ("finetune", ["--max-steps", "0"], "--max-steps 0: must be a whole number >= 1 (optimizer steps)"),
    ("pretrain", ["--mask-patch-size", "0"], "--mask-patch-size 0: must be a whole number >= 1"),
])
def test_the_command_line_names_the_flag(verb, flags, words, tmp_path, capsys):
    code, _, err = run_cli([verb, "--from", "swin_n_64", "--data", "shapes", "--out", tmp_path / "o", *flags], capsys)
    assert code == 2 and f"error: {words}" in err
