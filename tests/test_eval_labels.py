"""How `swinzoo eval` matches the data's labels to the model's classes: by name when the names allow it (another
order, a subset of the classes), by index only when no name is shared, never half and half."""

import json
import shutil

import pytest

import swinzoo
from tests.conftest import one_error_line, run_cli
from tests.test_finetune import shapes_folder


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return shapes_folder(tmp_path_factory.mktemp("shapes"), per_class=3)


def copy_val(shapes, root, keep=None):
    for folder in sorted((shapes / "val").iterdir()):
        if keep is None or folder.name in keep:
            shutil.copytree(folder, root / "val" / folder.name)
    return root


def test_a_subset_of_the_classes_is_matched_by_name(shapes, tmp_path, capsys):
    names = swinzoo.load_model("swin_n_64").config.class_names
    data = copy_val(shapes, tmp_path / "d", keep=names[2:5])
    result = swinzoo.evaluate("swin_n_64", data=str(data), num_workers=0)
    assert "3 of the model's 10 classes" in capsys.readouterr().err
    full = swinzoo.evaluate("swin_n_64", data=str(shapes), num_workers=0)
    assert result["n"] == 9 and full["n"] == 30 and result["top1"] > 0.5  # by index, the 3 labels would be 0, 1, 2
    # the fractions they are (k / 9), not torchmetrics' float32 (7 / 9 would print as 0.7777777910232544)
    assert result["top1"] in [k / 9 for k in range(10)] and full["top1"] in [k / 30 for k in range(31)]


def test_names_that_match_only_in_part_are_refused(shapes, tmp_path, capsys):
    names = swinzoo.load_model("swin_n_64").config.class_names
    data = copy_val(shapes, tmp_path / "d")
    (data / "val" / names[0]).rename(data / "val" / "zebra")
    code, _, err = run_cli(["eval", "swin_n_64", "--data", data], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "zebra" in err and "not among the model's classes" in err and "swinzoo info swin_n_64" in err


def test_images_in_sub_folders_of_a_class_count(shapes, tmp_path):
    """torchvision's ImageFolder reads a class folder's sub-folders; so does swinzoo (nothing skipped silently)."""
    data = copy_val(shapes, tmp_path / "d")
    first = sorted((data / "val").iterdir())[0]
    (first / "more").mkdir()
    for image in sorted(first.glob("*.png")):
        shutil.copy(image, first / "more" / image.name)
    assert swinzoo.evaluate("swin_n_64", data=str(data), num_workers=0)["n"] == 33


def test_eval_says_transferred_only_when_it_moved_the_model(capsys):
    """swinv2_n_64_w4 stores pretrained windows 0 ("its own"); reading it writes them out, which changes nothing."""
    code, _, err = run_cli(["eval", "swinv2_n_64_w4", "--num-workers", "0", "--batch-size", "500"], capsys)
    assert code == 0 and "transferred" not in err
    code, _, err = run_cli(["eval", "swinv2_n_64_w4", "--res", "96", "--num-workers", "0", "--batch-size", "500"],
                           capsys)
    assert code == 0 and "transferred swinv2_n_64_w4" in err and "64 -> 96" in err


def test_eval_piped_prints_progress_lines(shapes, monkeypatch):
    """Redirected to a file, a rich bar shows nothing: a line every PIPED_EVERY seconds instead, and one at the end."""
    import io

    from rich.console import Console

    from swinzoo import evaluation

    monkeypatch.setattr(evaluation, "PIPED_EVERY", 0.0)
    log = io.StringIO()
    evaluation.evaluate("swin_n_64", data=str(shapes), num_workers=0, batch_size=10, console=Console(file=log))
    lines = [line for line in log.getvalue().splitlines() if line.startswith("eval 64 px")]
    assert [line.split(",")[0] for line in lines[:-1]] == ["eval 64 px: batch 1/3", "eval 64 px: batch 2/3"]
    assert lines[-1].startswith("eval 64 px: 3 batches in ")


def test_predict_in_batches_names_each_image_as_given(tmp_path, capsys, monkeypatch):
    """predict runs `--batch-size` images at a time (not every image at once), the same probabilities as one batch,
    and each line names the image as given: two files called x.png in different folders stay apart."""
    from PIL import Image

    from swinzoo import prediction

    paths = []
    for i, folder in enumerate(["a", "b", "c", "d", "e"]):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "x.png")
        Image.new("RGB", (64, 64), (40 * i, 90, 200 - 30 * i)).save(paths[-1])
    sizes = []
    real = prediction.run_model

    def counted(net, images, *args):
        sizes.append(len(images))
        return real(net, images, *args)

    monkeypatch.setattr(prediction, "run_model", counted)
    code, out, err = run_cli(["predict", "swin_n_64", *paths, "--batch-size", "2", "--json"], capsys)
    assert code == 0, err
    assert sizes == [2, 2, 1]
    batched = json.loads(out)
    code, out, err = run_cli(["predict", "swin_n_64", *paths, "--json"], capsys)
    assert code == 0 and sizes[3:] == [5], err
    for a, b in zip(batched, json.loads(out)):
        assert a["image"] == b["image"] and [c for c, _ in a["predictions"]] == [c for c, _ in b["predictions"]]
        assert max(abs(p - q) for (_, p), (_, q) in zip(a["predictions"], b["predictions"])) < 1e-5
    code, out, err = run_cli(["predict", "swin_n_64", *paths[:2]], capsys)
    assert [line.split(": ")[0] for line in out.splitlines()] == [str(p) for p in paths[:2]]


def test_long_model_paths_keep_their_distinguishing_tail():
    from swinzoo.accuracy_plot import tail_label

    a, b = (f"experiments/shapes_finetune/run_lr{lr}/model.safetensors" for lr in ("1e-3", "3e-4"))
    assert tail_label(a, 32) != tail_label(b, 32) and len(tail_label(a, 32)) == 32
    assert tail_label(a, 32).endswith("run_lr1e-3/model.safetensors") and tail_label("swin_n_64", 32) == "swin_n_64"


@pytest.mark.parametrize("bad", ["model", "res"])
def test_a_sweep_checks_everything_before_evaluating(bad, capsys, monkeypatch):
    """A bad model name or resolution late in a sweep is refused before the first evaluation, not after the others
    have run (and their results were lost)."""
    from swinzoo import evaluation

    ran = []
    monkeypatch.setattr(evaluation, "run_model", lambda *a: ran.append(1))
    models, res = ["swin_n_64", "swinv2_n_64_w4"], ["64", "96"]
    if bad == "model":
        models.append("nope_model")
    else:
        res.append("17")
    code, out, err = run_cli(["eval", *models, "--res", *res, "--data", "shapes"], capsys)
    assert code == 2 and not ran and not out
    one_error_line(err, "unknown model name 'nope_model'" if bad == "model" else
                   "resolution 17 is not a multiple of the patch size 4")


def test_eval_reads_a_folder_of_class_folders_as_the_split(shapes, tmp_path, capsys):
    """A test set is often just class folders, with no val/ around them; timm's validate.py reads such a root as
    the split. eval asked for train/ and val/ ("is empty of train/ and val/"), though it reads neither train/ nor
    anything but the one split; finetune, which needs both, says so in plain words."""
    nested = swinzoo.evaluate("swin_n_64", data=str(shapes), num_workers=0)
    bare = swinzoo.evaluate("swin_n_64", data=str(shapes / "val"), num_workers=0)
    assert (bare["n"], bare["top1"], bare["top5"]) == (nested["n"], nested["top1"], nested["top5"])
    assert bare["n"] == 30 and bare["split"] is None and nested["split"] == "val"
    capsys.readouterr()
    code, out, _ = run_cli(["eval", "swin_n_64", "--data", shapes / "val", "--num-workers", "0"], capsys)
    assert code == 0 and out.startswith(f"swin_n_64 on {shapes / 'val'} at 64 px: top1 "), out
    code, _, err = run_cli(["finetune", "--from", "swin_n_64", "--data", shapes / "val", "--out", tmp_path / "o"],
                           capsys)
    assert code == 2
    one_error_line(err, f"{shapes / 'val'} has no train/ or val/ folder", "train/<class>/")
    assert not (tmp_path / "o").exists()


def test_predict_reads_the_images_below_a_folder(tmp_path, capsys):
    """`swinzoo predict MODEL FOLDER` said "give the image files in it (e.g. FOLDER/*.jpg)": a glob of 100k files
    is past the shell's argument limit. A folder stands for the images below it, sorted, hidden files skipped
    (macOS `._*` forks are not images), in the place the folder was given."""
    from PIL import Image

    root = tmp_path / "photos"
    for i, rel in enumerate(["b/2.png", "a/1.jpg", "a/deeper/0.png", "c.png"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), (50 * i, 90, 200 - 40 * i)).save(root / rel)
    (root / "a" / "._1.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "notes.txt").write_text("not an image")
    (tmp_path / "first.png").write_bytes((root / "c.png").read_bytes())
    code, out, err = run_cli(["predict", "swin_n_64", tmp_path / "first.png", root, "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert [r["image"] for r in rows] == [str(tmp_path / "first.png"),
                                          *(str(root / r) for r in ["a/1.jpg", "a/deeper/0.png", "b/2.png", "c.png"])]
    one_by_one = swinzoo.predict("swin_n_64", [r["image"] for r in rows])
    assert [r["predictions"][0][0] for r in rows] == [r["predictions"][0][0] for r in one_by_one]
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    code, out, err = run_cli(["predict", "swin_n_64", tmp_path / "empty"], capsys)
    assert code == 2 and out == ""
    one_error_line(err, f"{tmp_path / 'empty'} holds no images (.jpg", "give image files or a folder of them")


def test_per_class_figures_match_the_predictions_image_by_image(shapes, tmp_path, capsys):
    """eval --per-class: each class's top-1, images and the class it is most often mistaken for, the same figures
    `predict` gives image by image (an independent path: files read one at a time, no data loader), summing to the
    overall top-1; a data folder holding some of the model's classes gets rows for those only."""
    from collections import Counter

    names = swinzoo.load_model("swin_n_64").config.class_names
    data = copy_val(shapes, tmp_path / "d", keep=names[:6])
    code, out, err = run_cli(["eval", "swin_n_64", "--data", data, "--per-class", "--json", "--num-workers", "0"],
                             capsys)
    assert code == 0, err
    result = json.loads(out)
    rows = {r["class"]: r for r in result["per_class"]}
    assert list(rows) == names[:6] and sum(r["n"] for r in rows.values()) == result["n"] == 18
    assert sum(r["top1"] * r["n"] for r in rows.values()) == pytest.approx(result["top1"] * result["n"])
    for name in names[:6]:
        files = sorted((data / "val" / name).iterdir())
        guesses = [row["predictions"][0][0] for row in swinzoo.predict("swin_n_64", files, topk=1)]
        wrong = Counter(g for g in guesses if g != name)
        assert rows[name]["top1"] == guesses.count(name) / len(files) and rows[name]["n"] == len(files)
        if wrong:
            top = max(wrong.values())
            assert rows[name]["mistaken_share"] == top / len(files)
            assert rows[name]["mistaken_for"] == min((g for g in wrong if wrong[g] == top), key=names.index)
        else:
            assert rows[name]["mistaken_for"] is None and rows[name]["mistaken_share"] == 0
    code, out, err = run_cli(["eval", "swin_n_64", "--data", data, "--per-class", "--num-workers", "0"], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[1].split() == ["class", "top1", "n", "most", "often", "mistaken", "for"]
    assert [float(line.split()[1]) for line in lines[2:]] == sorted(round(r["top1"], 4) for r in rows.values())
    code, out, err = run_cli(["eval", "swin_n_64", "--data", data, "--per-class", "--res", "64", "96"], capsys)
    assert code == 2 and out == ""
    one_error_line(err, "--per-class takes one model at one resolution")
