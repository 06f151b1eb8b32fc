"""`hf:NAME[:CONFIG]` data and its `DataOptions` (splits, columns, carved validation), offline: every dataset is a
local one written by the test (parquet files with a loading README, or a save_to_disk folder) and read through the
`datasets` library with the Hub switched off and the cache in tmp_path."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from swinzoo.errors import SwinzooError
from swinzoo.train.data import SwinDataModule, open_split
from swinzoo.train.hf_data import DataOptions, HFSplit, carve, open_hf, parse_hf

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    # the library read these at import: patch the values it reads at call time
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def table(labels, classes=("a", "b", "c"), image="image", label="label", seed=0, extra=None):
    """A Dataset of 16x16 random images and `labels` (a ClassLabel of `classes`, or plain int64 when None)."""
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in labels]
    label_feature = datasets.ClassLabel(names=list(classes)) if classes else datasets.Value("int64")
    columns, features = {image: images, label: list(labels)}, {image: datasets.Image(), label: label_feature}
    for name, (feature, values) in (extra or {}).items():
        columns[name], features[name] = values, feature
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def write(root, configs: dict) -> str:
    """Parquet files root/CONFIG/SPLIT.parquet with a README that declares the configs and their splits (the
    layout of a Hub dataset repo); a single config named "default" needs no :CONFIG. Returns `hf:root`."""
    lines = ["---", "configs:"]
    for config, splits in configs.items():
        lines += [f"- config_name: {config}", "  data_files:"]
        for split, ds in splits.items():
            (root / config).mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(root / config / f"{split}.parquet"))
            lines += [f"  - split: {split}", f"    path: {config}/{split}.parquet"]
    (root / "README.md").write_text("\n".join([*lines, "---", ""]))
    return f"hf:{root}"


def simple(tmp_path, splits=("train", "validation"), n=12, **kw) -> str:
    return write(tmp_path / "ds", {"default": {s: table([i % 3 for i in range(n)], seed=k, **kw)
                                               for k, s in enumerate(splits)}})


def one_line_error(fn, *words):
    with pytest.raises(SwinzooError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, (word, message)
    return message


def test_parse_hf(tmp_path):
    assert parse_hf("hf:beans") == ("beans", None)
    assert parse_hf("hf:org/name:config") == ("org/name", "config")
    assert parse_hf("org/name:config") == ("org/name", "config")
    odd = tmp_path / "a:b"  # a local folder whose name has a colon is a name, not NAME:CONFIG
    odd.mkdir()
    assert parse_hf(f"hf:{odd}") == (str(odd), None)
    assert parse_hf(f"hf:{odd}:cfg") == (str(odd), "cfg")
    for bad in ("hf:", "hf::cfg", "hf:name:"):
        one_line_error(lambda b=bad: parse_hf(b), "hf:NAME:CONFIG")


def test_options_round_trip_through_json():
    options = DataOptions(train_split="fit", image_column="picture", label_column="kind", val_fraction=0.2,
                          split_seed=7)
    assert DataOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    assert DataOptions.from_dict(None) == DataOptions() and DataOptions().changed() == []
    assert options.changed() == ["--train-split", "--image-column", "--label-column", "--val-fraction",
                                 "--split-seed"]
    one_line_error(lambda: DataOptions.from_dict({"val_frac": 0.1}, "run.json"), "run.json", "val_frac", "val_fraction")


def test_default_splits_and_columns_through_the_data_module(tmp_path):
    data = simple(tmp_path)
    console = Console(record=True, width=400)
    dm = SwinDataModule(data, 16, 4, num_workers=0, console=console)
    assert dm.check() == ["a", "b", "c"] and len(dm.train_base) == 12 and len(dm.val_base) == 12
    assert "train: split 'train' (12 rows); validation: split 'validation' (12 rows)" in dm.description
    assert dm.description in console.export_text()
    image, label = dm.val_base[4]
    assert image.mode == "RGB" and image.size == (16, 16) and label == 1
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 16, 16) and set(labels.tolist()) <= {0, 1, 2}
    # today's call sites: positional arguments only, the defaults for everything else
    assert open_split(data, "val", 16).classes == ["a", "b", "c"] and len(HFSplit(data[3:], "train")) == 12


def test_config_selection(tmp_path):
    data = write(tmp_path / "multi", {
        "two": {"train": table([0, 1] * 4, ("cat", "dog")), "test": table([0, 1], ("cat", "dog"))},
        "three": {"train": table([0, 1, 2] * 3, ("x", "y", "z")), "test": table([2], ("x", "y", "z"))}})
    train, val = open_hf(f"{data}:two")
    assert train.classes == ["cat", "dog"] and (len(train), len(val)) == (8, 2)
    assert "validation: split 'test'" in val.description
    train, val = open_hf(f"{data}:three")
    assert train.classes == ["x", "y", "z"] and (len(train), len(val)) == (9, 1)
    one_line_error(lambda: open_hf(data), "several configs", f"{data}:CONFIG", "two, three")
    one_line_error(lambda: open_hf(f"{data}:four"), "no config 'four'", "two, three")


def test_split_names_and_renamed_columns(tmp_path):
    extra = lambda n: {"thumb": (datasets.Image(), [Image.new("RGB", (4, 4))] * n),  # noqa: E731
                       "caption": (datasets.Value("string"), ["x"] * n)}
    data = write(tmp_path / "ds", {"default": {
        "fit": table([0, 1, 2] * 4, image="picture", label="kind", extra=extra(12)),
        "holdout": table([0, 1, 2], image="picture", label="kind", extra=extra(3), seed=1),
        "final": table([2, 1], image="picture", label="kind", extra=extra(2), seed=2)}})
    options = DataOptions(train_split="fit", val_split="holdout", image_column="picture")
    dm = SwinDataModule(data, 16, 4, num_workers=0, data_options=options)
    assert dm.check() == ["a", "b", "c"] and (len(dm.train_base), len(dm.val_base)) == (12, 3)
    assert dm.train_base.label_key == "kind" and dm.train_base.ds.column_names == ["picture", "kind"]
    assert "train: split 'fit'" in dm.description and "validation: split 'holdout'" in dm.description
    # eval reads the split it is told (the val role)
    final = open_split(data, "val", 16, options=DataOptions(train_split="fit", val_split="final",
                                                            image_column="picture", label_column="kind"))
    assert len(final) == 2 and final[0][1] == 2
    # two Image columns: the image column must be named
    one_line_error(lambda: open_hf(data, DataOptions(train_split="fit", val_split="holdout")),
                   "several Image columns", "picture, thumb", "--image-column")


def test_an_image_folder_with_a_validation_folder(tmp_path):
    """What `finetune --data hf:FOLDER` read before the options existed: datasets' imagefolder layout."""
    for split, n in (("train", 3), ("validation", 2)):
        for name in ("cat", "dog"):
            (tmp_path / "pets" / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(tmp_path / "pets" / split / name / f"{i}.png")
    train, val = open_hf(f"hf:{tmp_path / 'pets'}")
    assert train.classes == val.classes == ["cat", "dog"] and (len(train), len(val)) == (6, 4)
    assert (train.image_key, train.label_key) == ("image", "label")


def test_integer_labels_in_a_plain_column(tmp_path):
    data = simple(tmp_path, classes=None, label="labels")
    train, val = open_hf(data)
    assert train.classes == ["0", "1", "2"] and val.classes == train.classes and train[5][1] == 2


def test_a_save_to_disk_folder(tmp_path):
    dd = datasets.DatasetDict({"train": table([0, 1, 2] * 3), "test": table([0, 1, 2], seed=1)})
    dd.save_to_disk(str(tmp_path / "saved"))
    train, val = open_hf(f"hf:{tmp_path / 'saved'}")
    assert (len(train), len(val)) == (9, 3) and "split 'test'" in val.description
    one_line_error(lambda: open_hf(f"hf:{tmp_path / 'saved'}:cfg"), "save_to_disk", "drop :cfg")


def carved(data, **kw):
    train, val = open_hf(data, DataOptions(**kw))
    return train, val, train.rows, val.rows


def test_carved_validation_split(tmp_path):
    labels = [0] * 20 + [1] * 12 + [2] * 8  # unbalanced, sorted: a plain head/tail cut would not be stratified
    data = write(tmp_path / "ds", {"default": {"train": table(labels)}})
    train, val, kept, held = carved(data)
    assert (len(train), len(val)) == (36, 4) and len(np.intersect1d(kept, held)) == 0
    assert sorted([*kept, *held]) == list(range(40))
    assert np.bincount(np.asarray(labels)[held]).tolist() == [2, 1, 1]  # each class's share, within one row
    assert [val[i][1] for i in range(len(val))] == [labels[r] for r in held]
    assert train.classes == val.classes == ["a", "b", "c"]
    assert "validation: 10% of split 'train' carved off, stratified by label, split seed 0" in val.description
    assert "train: split 'train' less the validation rows (36 rows)" in train.description
    # the same rows on every load, whatever the global RNGs say; another seed or fraction changes them
    np.random.seed(123)
    assert np.array_equal(carved(data)[3], held)
    assert not np.array_equal(carved(data, split_seed=1)[3], held)
    train, val, kept, held30 = carved(data, val_fraction=0.3)
    assert (len(train), len(val)) == (28, 12) and np.bincount(np.asarray(labels)[held30]).tolist() == [6, 4, 2]


def test_carve_is_the_same_in_another_process():
    labels = np.random.default_rng(5).integers(0, 7, 500)
    code = ("import sys, numpy as np; from swinzoo.train.hf_data import carve; "
            "print(carve(np.random.default_rng(5).integers(0, 7, 500), 0.15, 42)[1].tolist())")
    env = {**os.environ, "PYTHONHASHSEED": "7"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == carve(labels, 0.15, 42)[1].tolist()


def test_an_explicit_fraction_carves_even_with_a_validation_split(tmp_path):
    train, val, _, held = carved(simple(tmp_path, n=20), val_fraction=0.25)
    assert (len(train), len(val)) == (15, 5)
    assert "the dataset's 'validation' split is not used" in val.description


def test_bad_options_are_one_line_each(tmp_path):
    for bad in (0, 1, 1.5, -0.1, float("nan"), "0.1", True):
        one_line_error(lambda b=bad: DataOptions(val_fraction=b), "--val-fraction", "(0, 1)")
    one_line_error(lambda: DataOptions(val_split="test", val_fraction=0.1), "--val-split", "--val-fraction")
    one_line_error(lambda: DataOptions(train_split=""), "--train-split", "split name")
    for bad in ("1", -1, 1.0):
        one_line_error(lambda b=bad: DataOptions(split_seed=b), "--split-seed", ">= 0")


def test_bad_splits_and_columns_are_one_line_each(tmp_path):
    data = simple(tmp_path, splits=("train", "test"),
                  extra={"caption": (datasets.Value("string"), ["x"] * 12),
                         "score": (datasets.Value("float32"), [0.5] * 12)})
    one_line_error(lambda: open_hf(data, DataOptions(train_split="trian")), "no split 'trian'", "--train-split",
                   "train, test")
    one_line_error(lambda: open_hf(data, DataOptions(val_split="validation")), "no split 'validation'",
                   "--val-split", "train, test")
    one_line_error(lambda: open_hf(data, DataOptions(image_column="img")), "no column 'img'", "--image-column",
                   "image, label, caption, score")
    one_line_error(lambda: open_hf(data, DataOptions(label_column="kind")), "no column 'kind'", "--label-column")
    one_line_error(lambda: open_hf(data, DataOptions(label_column="caption")), "label column 'caption'",
                   "not class ids", "class_encode_column('caption')")
    one_line_error(lambda: open_hf(data, DataOptions(label_column="score")), "label column 'score'", "float32")
    one_line_error(lambda: open_hf(data, DataOptions(image_column="caption")), "column 'caption'", "not images")
    one_line_error(lambda: SwinDataModule(data, 16, 4, data_options=DataOptions(val_split="train")).check(),
                   "--val-split train is also the train split")
    for folder in ("shapes", str(tmp_path)):
        one_line_error(lambda f=folder: SwinDataModule(f, 16, 4, data_options=DataOptions(val_fraction=0.2)).check(),
                       "--val-fraction only applies to hf:NAME data")


def test_unlabelled_and_unreadable_datasets_are_one_line_each(tmp_path):
    unlabelled = write(tmp_path / "u", {"default": {"train": table([0, 1, 2] * 2),
                                                    "test": table([-1, -1], seed=1)}})
    one_line_error(lambda: open_hf(unlabelled), "split 'test' has unlabelled rows", "--val-split")
    no_images = write(tmp_path / "n", {"default": {"train": datasets.Dataset.from_dict({"label": [0, 1]})}})
    one_line_error(lambda: open_hf(no_images), "has no Image column", "label")
    one_line_error(lambda: open_hf(f"hf:{tmp_path / 'missing'}"), "cannot load Hugging Face dataset")
    one_train = write(tmp_path / "one", {"default": {"train": table([0])}})
    one_line_error(lambda: open_hf(one_train), "too few to carve", "--val-split")


def test_a_dataset_of_one_class_is_refused_for_training(tmp_path):
    """A classifier of one class cannot train (and torchmetrics refuses num_classes=1 after the run has begun)."""
    named = write(tmp_path / "n", {"default": {"train": table([0] * 4, ("only",)), "test": table([0] * 2, ("only",))}})
    one_line_error(lambda: SwinDataModule(named, 16, 2).check(), "split 'train'", "at least 2 classes",
                   "found 1 (only)", "--label-column")
    ints = write(tmp_path / "i", {"default": {"train": table([0] * 4, None), "test": table([0] * 2, None)}})
    one_line_error(lambda: SwinDataModule(ints, 16, 2).check(), "found 1 (0)")
    # a ClassLabel of several names trains even when the rows use one of them
    assert SwinDataModule(write(tmp_path / "s", {"default": {"train": table([0] * 4)}}), 16, 2).check() == \
        ["a", "b", "c"]


def test_sixteen_bit_rows_read_as_their_eight_bit_twins(tmp_path):
    """As image files do (tests/test_inputs_deep.py): PIL's convert("RGB") alone clips them almost all white."""
    deep = np.arange(0, 65536, 64, dtype=np.uint16).reshape(32, 32)
    eight = np.round(deep / 257).astype(np.uint8)
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(deep), Image.fromarray(eight)], "label": [0, 1]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.ClassLabel(names=["a", "b"])}))
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "ds"))
    split = HFSplit(str(tmp_path / "ds"), "train", check=False)
    assert split[0][0].tobytes() == split[1][0].tobytes() == Image.fromarray(eight).convert("RGB").tobytes()


def test_missing_datasets_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)
    one_line_error(lambda: open_hf("hf:beans"), "pip install 'swinzoo[hf]'")


def with_bad_rows(ds, rows, key="image"):
    """`ds` with the images of `rows` replaced by bytes no decoder reads."""
    values = ds.select_columns([key]).with_format("arrow")[:].column(key).to_pylist()
    for r in rows:
        values[r] = {"bytes": b"notanimage", "path": None}
    return ds.remove_columns([key]).add_column(key, values, feature=datasets.Image())


def test_unreadable_rows_stop_the_open_named_by_split_and_row(tmp_path):
    dd = datasets.DatasetDict({"train": with_bad_rows(table([0, 1, 2] * 4), [0, 5]),
                               "validation": with_bad_rows(table([0, 1, 2], seed=1), [2])})
    dd.save_to_disk(str(tmp_path / "bad"))
    data = f"hf:{tmp_path / 'bad'}"
    # every bad row of both splits in one error, the first named in full
    one_line_error(lambda: open_hf(data), f"{data} split 'train' row 0 is not a readable image",
                   "cannot identify image file", "replace or drop that row", "2 more unreadable: row 5, "
                   "split 'validation' row 2")
    # a carved validation split reads rows of train: they are checked once, as train's
    one_line_error(lambda: open_hf(data, DataOptions(val_fraction=0.25)), "split 'train' row 0",
                   "1 more unreadable: row 5)")
    # eval's open reads one split only, and checks it
    one_line_error(lambda: open_split(data, "val", 16), "split 'validation' row 2", "replace or drop")
    good = datasets.DatasetDict({"train": table([0, 1, 2] * 4), "validation": table([0, 1], seed=1)})
    good["validation"] = with_bad_rows(good["validation"], [])
    good.save_to_disk(str(tmp_path / "good"))
    assert [len(s) for s in open_hf(f"hf:{tmp_path / 'good'}")] == [12, 2]


def test_rows_read_from_image_files_are_checked_too(tmp_path):
    """An imagefolder-style dataset keeps paths, not bytes: the files are decoded."""
    for split in ("train", "validation"):
        for name in ("cat", "dog"):
            (tmp_path / "pets" / split / name).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (16, 16)).save(tmp_path / "pets" / split / name / f"{i}.png")
    (tmp_path / "pets" / "validation" / "dog" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    one_line_error(lambda: open_hf(f"hf:{tmp_path / 'pets'}"), "split 'validation' row 3 is not a readable image")


def test_finetune_on_an_unreadable_row_fails_before_anything_is_written(tmp_path, capsys):
    from tests.bad_inputs.harness import fails_cleanly

    dd = datasets.DatasetDict({"train": with_bad_rows(table([0, 1, 2] * 4), [0])})
    dd.save_to_disk(str(tmp_path / "bad"))
    capsys.readouterr()  # the library's progress bars while saving
    for command in (["finetune", "--val-fraction", "0.25"], ["pretrain"]):
        fails_cleanly([command[0], "--from", "swin_n_64", "--data", f"hf:{tmp_path / 'bad'}", *command[1:],
                       "--max-steps", "7", "--batch-size", "4", "--res", "64", "--out", tmp_path / "out"],
                      capsys, tmp_path, "split 'train' row 0 is not a readable image", owned=("hf-cache",), code=2)


def images_only(n, seed=0):
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(n)]},
        features=datasets.Features({"image": datasets.Image()}))


def test_pretraining_reads_unlabelled_datasets(tmp_path):
    from swinzoo.train.simmim_data import open_pretrain_data

    plain = write(tmp_path / "plain", {"default": {"train": images_only(20)}})
    train, val = open_pretrain_data(plain, 16)
    assert (len(train), len(val)) == (18, 2) and train[0].mode == "RGB" and train[0].size == (16, 16)
    assert "carved off, at random, split seed 0" in val.description
    # STL-10's layout: a labelled train and test, and an `unlabeled` split of label -1 rows
    stl = write(tmp_path / "stl", {"default": {"train": table([0, 1, 2] * 3), "test": table([0, 1], seed=1),
                                               "unlabeled": table([-1] * 10, seed=2)}})
    train, val = open_pretrain_data(stl, 16, DataOptions(train_split="unlabeled"))
    assert (len(train), len(val)) == (10, 2) and "split 'test'" in val.description
    train, val = open_pretrain_data(stl, 16, DataOptions(train_split="unlabeled", val_fraction=0.2))
    assert (len(train), len(val)) == (8, 2) and "at random" in val.description
    # fine-tuning still needs the labels
    one_line_error(lambda: open_hf(stl, DataOptions(train_split="unlabeled")), "unlabelled rows")
    one_line_error(lambda: open_hf(plain), "no ClassLabel column")
    # labels a dataset has still stratify the carve: the rows held out are the fine-tune's
    labelled = write(tmp_path / "labelled", {"default": {"train": table([0] * 20 + [1] * 12 + [2] * 8)}})
    assert np.array_equal(open_pretrain_data(labelled, 16)[1].base.rows, open_hf(labelled)[1].rows)
    # a label column named is read as named
    one_line_error(lambda: open_pretrain_data(plain, 16, DataOptions(label_column="kind")), "no column 'kind'")


def test_pretrain_on_an_image_only_dataset(tmp_path, capsys):
    from swinzoo.cli import cli_main

    datasets.DatasetDict({"train": images_only(12)}).save_to_disk(str(tmp_path / "photos"))
    out = tmp_path / "pre"
    assert cli_main(["pretrain", "--from", "swin_n_64", "--data", f"hf:{tmp_path / 'photos'}", "--max-steps", "2",
                     "--batch-size", "4", "--res", "64", "--num-workers", "0", "--out", str(out)]) == 0
    assert "carved off, at random" in capsys.readouterr().out and (out / "model.safetensors").is_file()


def test_a_label_budget_reads_the_label_column_once(tmp_path, monkeypatch):
    """`--train-fraction` on hf: data stratifies by the labels the split already read: reading the column again
    costs a pass over it (minutes on a large parquet dataset), for the same array."""
    data = simple(tmp_path, n=30)
    reads = []
    original = datasets.Dataset.with_format

    def counted(self, *args, **kwargs):
        reads.append(tuple(kwargs.get("columns") or ()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(datasets.Dataset, "with_format", counted)
    dm = SwinDataModule(data, 64, batch_size=2, num_workers=0, data_options=DataOptions(train_fraction=0.5))
    dm.check()
    assert reads.count(("label",)) == 2  # the train split's and the validation split's, each once
    assert len(dm.train_base) == 15
    labels = [dm.train_base[i][1] for i in range(len(dm.train_base))]
    assert sorted(labels) == sorted([0, 1, 2] * 5)  # stratified: 5 of each class's 10
