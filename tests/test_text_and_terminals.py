"""Text and terminals that are not the developer's: class folders and files named in any script, with spaces,
quotes, brackets, control characters or bytes that are not UTF-8 (Linux's surrogate-escaped names); output to a
closed pipe, to a file, or to a terminal whose encoding cannot hold the names."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image
from torchvision.datasets.folder import find_classes

import swinzoo
from swinzoo.train.shapes import render
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--max-steps", "1", "--batch-size", "4", "--num-workers", "0", "--trainer", "limit_val_batches=1",
        "--trainer", "enable_model_summary=false"]
# a folder or file name in Latin-1 on a UTF-8 system, as unzip leaves a Windows archive's: Python holds the byte it
# cannot decode as a lone surrogate ("caf\udce9"), and only a name that keeps it opens the file again
LATIN1 = os.fsdecode(b"caf\xe9")
POSIX_BYTES = pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="file names there are always Unicode")


def write_images(folder: Path, label: int, count: int = 2, names: tuple[str, ...] = ()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = Image.fromarray(render(label, 64, seed=i).permute(1, 2, 0).numpy())
        image.save(folder / (names[i] if i < len(names) else f"{i}.png"))


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "swinzoo", *map(str, args)]


def env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}


@POSIX_BYTES
def test_predict_prints_names_the_terminal_cannot_encode(tmp_path, capsys):
    """A strict UTF-8 stdout (pytest's, a terminal under en_US.UTF-8) cannot encode a surrogate: the name is printed
    escaped, as Python's stderr does, not an UnicodeEncodeError after the lines before it."""
    write_images(tmp_path / LATIN1, 0, names=(f"{LATIN1}.png", "é 1.png"))
    code, out, err = run_cli(["predict", "swin_n_64", tmp_path / LATIN1, "--topk", "1"], capsys)
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"{tmp_path}/caf\\udce9/caf\\udce9.png: ")
    assert out.splitlines()[1].startswith(f"{tmp_path}/caf\\udce9/é 1.png: ")



@POSIX_BYTES
def test_an_error_naming_a_path_that_is_not_utf8_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(["info", tmp_path / LATIN1], capsys)
    assert code == 2 and err.startswith(f"error: {tmp_path}/caf\\udce9") and len(err.splitlines()) == 1


def test_an_error_naming_a_file_with_a_line_break_is_one_line(tmp_path, capsys):
    write_images(tmp_path / "data" / "val" / "a\nb", 0)
    write_images(tmp_path / "data" / "val" / "c", 1)
    (tmp_path / "data" / "val" / "c" / "bad\x1b.png").write_bytes(b"not an image")
    code, _, err = run_cli(["eval", "swin_n_64", "--data", tmp_path / "data", "--num-workers", "0"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "\x1b" not in err, err
    assert f"error: {tmp_path}/data/val/c/bad\\x1b.png is not a readable image" in err

@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_an_output_encoding_without_the_characters_escapes_them(tmp_path, encoding):
    """PYTHONIOENCODING=ascii, or a legacy locale: a path or class name outside the encoding is escaped."""
    write_images(tmp_path / "日本 ñ", 1, count=1)
    proc = subprocess.run(cli("predict", "swin_n_64", tmp_path / "日本 ñ", "--topk", "1"), capture_output=True,
                          env=env(PYTHONIOENCODING=encoding))
    assert proc.returncode == 0, proc.stderr
    expected = "\\u65e5\\u672c \\xf1" if encoding == "ascii" else "\\u65e5\\u672c ñ"
    assert proc.stdout.decode(encoding).startswith(f"{tmp_path}/{expected}/0.png: ")


@pytest.mark.parametrize("args", [["list"], ["recipes"], ["info", "swin_n_64"], ["list", "--json"]])
def test_a_closed_pipe_ends_every_command_quietly_with_141(args):
    """`swinzoo list | head -1`: what rich prints stops on the closed pipe as print() does (rich's own handler would
    exit 1, a failure, after nothing went wrong)."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        proc = subprocess.run(cli(*args), stdout=write, stderr=subprocess.PIPE, env=env(), timeout=300)
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (141, b"")


@POSIX_BYTES
def test_class_folders_of_any_name_train_in_torchvisions_order_and_keep_their_names(tmp_path, capsys):
    """Numbers sort as strings ("001" < "1" < "10" < "2"), as ImageFolder sorts them; a --data path that is not
    UTF-8 is checked, recorded and replayed (config.yaml) as it is."""
    classes = ["10", "2", "001", "1", LATIN1, "café", "日本", "🐱 cat", "it's \"quoted\"", "tab\there"]
    data = tmp_path / os.fsdecode(b"d\xe9ta set")
    for split in ("train", "val"):
        for label, name in enumerate(classes):
            write_images(data / split / name, label % 10)
    out = tmp_path / "run"
    code, stdout, err = run_cli(["finetune", "--from", "swin_n_64", "--data", data, "--out", out, *FAST], capsys)
    assert code == 0, err
    assert 'classes 10: 001, 1, 10, 2, café, caf\\udce9, it\'s "quoted", tab\\there, 日本, 🐱 cat\n' in stdout
    expected, _ = find_classes(str(data / "train"))
    assert expected[:4] == ["001", "1", "10", "2"]
    assert swinzoo.load_model(out).config.class_names == expected
    replay = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert replay["data"] == str(data)


@POSIX_BYTES
def test_a_run_in_a_folder_that_is_not_utf8_resumes_and_loads(tmp_path, capsys):
    """safetensors' reader and torch's mmap take UTF-8 paths only: --out, --resume, eval and load_model of a folder
    named in Latin-1 still read its files."""
    data = tmp_path / "data"
    for split in ("train", "val"):
        for label, name in enumerate(("solid", "frame")):
            write_images(data / split / name, label)
    out = tmp_path / os.fsdecode(b"r\xe9sultats")
    code, _, err = run_cli(["finetune", "--from", "swin_n_64", "--data", data, "--out", out, *FAST], capsys)
    assert code == 0, err
    code, _, err = run_cli(["finetune", "--resume", out, "--max-steps", "2"], capsys)
    assert code == 0, err
    assert swinzoo.load_model(out).provenance["finetune"]["global_step"] == 2
    code, stdout, err = run_cli(["eval", out, "--num-workers", "0"], capsys)
    assert code == 0 and "n 4" in stdout, err


def test_brackets_in_names_and_paths_print_as_they_are(tmp_path, capsys):
    """rich reads "[bold]" or "[/x]" in what it prints as its markup: class names and paths are printed as text (an
    opening tag vanished, a closing one alone was a MarkupError)."""
    data = tmp_path / "data [v2]"
    for split in ("train", "val"):
        for label, name in enumerate(("[ok]", "[bold]b")):
            write_images(data / split / name, label)
    out = tmp_path / "runs [" / "x]"  # printed as ".../runs [/x]"
    code, stdout, err = run_cli(["finetune", "--from", "swin_n_64", "--data", data, "--out", out, *FAST], capsys)
    assert code == 0, err
    assert "classes 2: [bold]b, [ok]\n" in stdout and f"out {out}\n" in stdout and f"data {data}, " in stdout
    code, stdout, err = run_cli(["info", out], capsys)
    assert code == 0 and "[bold]b, [ok]" in stdout and "[v2]" in stdout, err
    code, stdout, err = run_cli(["convert", out, "-o", tmp_path / "m [y].safetensors"], capsys)
    assert code == 0 and f"wrote {tmp_path}/m [y].safetensors " in stdout, err
    code, stdout, err = run_cli(["push", out, "--repo", "me/m", "--dry-run", tmp_path / "p [z]"], capsys)
    assert code == 0 and f"wrote {tmp_path}/p [z] " in stdout, err
    swinzoo.convert("swin_n_64", tmp_path / "[n].safetensors", res=96)
    code, _, err = run_cli(["eval", tmp_path / "[n].safetensors", "--res", "64", "--num-workers", "0"], capsys)
    assert code == 0 and f"transferred {tmp_path}/[n].safetensors: " in err, err


# a class name of each kind a terminal shows wrongly: a line break, a tab, a colour escape, double-width script
ODD_NAMES = ["new\nline", "tab\there", "\x1b[31mred", "日本", "🐱 cat", "plain", "q\"uo'te", "001", "1", "10"]


def test_predict_prints_one_line_per_image_whatever_the_names(tmp_path, capsys):
    """Control characters in a class or file name are escaped in the text output, so that a line is an image (and
    a name cannot drive the terminal); --json keeps every name exactly."""
    model = swinzoo.load_model("swin_n_64")
    model.config = dataclasses.replace(model.config, class_names=ODD_NAMES)
    swinzoo.save_model(model, tmp_path / "odd.safetensors")
    write_images(tmp_path / "images", 0, names=("a\nb.png", "c\x1b.png"))
    args = ["predict", tmp_path / "odd.safetensors", tmp_path / "images", "--topk", "10"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and "\x1b" not in out and "\t" not in out
    assert lines[0].startswith(f"{tmp_path}/images/a\\nb.png: ")
    assert lines[1].startswith(f"{tmp_path}/images/c\\x1b.png: ")
    assert all(f"{name} 0." in lines[0] for name in ("new\\nline", "tab\\there", "\\x1b[31mred", "日本", "🐱 cat"))
    code, out, err = run_cli([*args, "--json"], capsys)
    assert code == 0 and {c for c, _ in json.loads(out)[0]["predictions"]} == set(ODD_NAMES), err


def test_the_per_class_table_aligns_wide_names_and_escapes_control_characters():
    from swinzoo.per_class import table

    rows = [{"class": name, "top1": 0.5, "n": 2, "mistaken_for": mistaken, "mistaken_share": 0.5}
            for name, mistaken in (("日本", "new\nline"), ("🐱 cat", "ab"), ("new\nline", "日本"))]
    assert table(rows).splitlines() == [
        "class       top1      n  most often mistaken for",
        "new\\nline 0.5000      2  日本 (0.50)",
        "日本      0.5000      2  new\\nline (0.50)",
        "🐱 cat    0.5000      2  ab (0.50)",
    ]


@pytest.mark.parametrize("columns", [None, "40"])
def test_recipes_piped_keep_one_line_each(columns, monkeypatch, capsys):
    """`swinzoo recipes | grep NAME` finds a recipe's whole line: piped, rich no longer wraps it at 80 (or COLUMNS)."""
    if columns:
        monkeypatch.setenv("COLUMNS", columns)
    code, out, err = run_cli(["recipes"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert "simmim_finetune     official fine-tune after SimMIM, Swin-B 224/w7 (layer decay 0.9)" in lines
    assert not [line for line in lines if line != line.rstrip()]


def test_the_model_card_is_utf8_under_any_locale(tmp_path):
    """The Hub reads README.md as UTF-8; a C / legacy locale (PYTHONUTF8=0 LC_ALL=C: ASCII) must not change its
    encoding, nor fail on a non-ASCII data path in it."""
    model = swinzoo.load_model("swin_n_64")
    swinzoo.save_model(model, tmp_path / "m.safetensors", {"source": "swin_n_64", "dataset": "/data/données 日本"})
    proc = subprocess.run(cli("push", tmp_path / "m.safetensors", "--repo", "me/m", "--dry-run", tmp_path / "card"),
                          capture_output=True, env=env(PYTHONUTF8="0", LC_ALL="C"))
    assert proc.returncode == 0, proc.stderr
    assert "- data: `/data/données 日本`" in (tmp_path / "card" / "README.md").read_text(encoding="utf-8")


def test_a_run_folder_with_a_line_break_replays_its_config(tmp_path, capsys, recwarn):
    """config.yaml's comment names the run's folder: a line break in it is escaped, not a line of YAML (and
    Lightning's notice about the folder, which the run silences, stays silenced)."""
    out = tmp_path / "run\nx: 1"
    code, _, err = run_cli(["finetune", "--from", "swin_n_64", "--out", out, *FAST], capsys)
    assert code == 0, err
    assert not [w for w in recwarn if "exists and is not empty" in str(w.message)]
    code, stdout, err = run_cli(["finetune", "--config", out / "config.yaml", "--print-config"], capsys)
    assert code == 0 and "max_steps: 1\n" in stdout, err
