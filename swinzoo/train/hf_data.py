"""`--data hf:NAME[:CONFIG]`: a Hugging Face dataset (optional extra: pip install 'swinzoo[hf]').

NAME is a Hub dataset id (`org/name`) or a local dataset folder (data files, a loading README, or a `save_to_disk`
folder); CONFIG picks one of its configurations. `DataOptions` picks the splits and the columns:

- train: the split named `train_split` ("train").
- validation: the split named `val_split`; by default the first of validation, val, valid, test, and when there is
  none, `val_fraction` (default 10%) of the train split carved off. An explicit `val_fraction` always carves. The
  carve is stratified by label and drawn from `split_seed` alone, so every run, resume and DDP rank (and a later
  `eval` with the same options) holds out the same rows, whatever the training seed.
- image column: the dataset's one `Image` feature (image/img when there are several); label column: its
  `ClassLabel` feature (label/labels/fine_label when there are several), else an integer column named so.
  Pretraining (`labelled=False`) needs only the image column: a dataset without labels, or with unlabelled rows
  (label -1), is read as it is.

Every bad value stops the run with one line naming it and the fix, when the data is opened (before anything is
written); so does an unreadable image: every row a run reads is decoded then, as image folders are
(`swinzoo.train.image_check`). The datasets library is imported only here, inside functions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from swinzoo.errors import SwinzooError
from swinzoo.hub_http import hub_calls
from swinzoo.preprocess import to_rgb
from swinzoo.train.image_check import image_problem, more_unreadable, scan

VAL_SPLITS = ("validation", "val", "valid", "test")
IMAGE_COLUMNS = ("image", "img")
LABEL_COLUMNS = ("label", "labels", "fine_label")
DEFAULT_VAL_FRACTION = 0.1
# the CLI flag of each option, for the messages (the finetune and eval commands use these names)
FLAGS = {"train_split": "--train-split", "val_split": "--val-split", "image_column": "--image-column",
         "label_column": "--label-column", "val_fraction": "--val-fraction", "split_seed": "--split-seed",
         "train_fraction": "--train-fraction"}
# options that apply to every kind of data, not only hf: (a labelled subset of the train split, and its seed)
ANY_DATA = ("train_fraction", "split_seed")


@dataclass(frozen=True)
class DataOptions:
    """How to read an `hf:` dataset (see the module docstring); JSON-serialisable for run.json."""

    train_split: str = "train"
    val_split: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    val_fraction: float | None = None
    split_seed: int = 0
    train_fraction: float | None = None

    def __post_init__(self) -> None:
        for name in ("train_split", "val_split", "image_column", "label_column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise SwinzooError(f"{FLAGS[name]} {value!r} is not a name; give the dataset's "
                                   f"{name.split('_')[1]} name")
        f = self.val_fraction
        if f is not None and (isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1):
            raise SwinzooError(f"{FLAGS['val_fraction']} must be a number in (0, 1), not {f!r}: the share of the train "
                               "split held out for validation, e.g. 0.1")
        if f is not None and self.val_split is not None:
            raise SwinzooError(f"{FLAGS['val_split']} {self.val_split} and {FLAGS['val_fraction']} {f} both say "
                               "where validation comes from; keep one (the fraction carves it from the train split)")
        f = self.train_fraction
        if f is not None and (isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1):
            raise SwinzooError(f"{FLAGS['train_fraction']} must be a number in (0, 1], not {f!r}: the share of the "
                               "training images (and labels) used, e.g. 0.1")
        seed = self.split_seed
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:  # numpy's generators take seeds >= 0
            raise SwinzooError(f"{FLAGS['split_seed']} {seed!r} is not a whole number >= 0; give one, e.g. 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "data options") -> DataOptions:
        """The record `to_dict` wrote (None: the defaults); an unknown key stops with its name."""
        d = dict(d or {})
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise SwinzooError(f"{where}: unknown data option(s) {', '.join(unknown)}; known: {', '.join(FLAGS)}")
        return cls(**d)

    def changed(self) -> list[str]:
        """The flags of the options that differ from the defaults."""
        default = DataOptions()
        return [FLAGS[f.name] for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)]


def parse_hf(data: str) -> tuple[str, str | None]:
    """(NAME, CONFIG or None) of `hf:NAME[:CONFIG]`. Hub ids have no colon, so the last one starts CONFIG, unless
    the whole rest is an existing local path (a folder whose name has a colon)."""
    rest = data[3:] if data.startswith("hf:") else data
    name, config = rest, None
    if ":" in rest and not Path(rest).exists():
        name, config = rest.rsplit(":", 1)
    if not name.strip() or (config is not None and not config.strip()):
        raise SwinzooError(f"--data {data!r} names no dataset; use hf:NAME or hf:NAME:CONFIG, e.g. hf:beans or "
                           "hf:org/name:config")
    return name, config


def _datasets():
    try:
        import datasets
    except ImportError:
        raise SwinzooError("hf: datasets need the optional `datasets` package: pip install 'swinzoo[hf]'") from None
    return datasets


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def load_hf(name: str, config: str | None = None):
    """The DatasetDict of dataset `name` (config `config`), with the library's errors turned into one line."""
    datasets = _datasets()
    local = Path(name)
    saved = local.is_dir() and any((local / f).is_file() for f in ("dataset_dict.json", "state.json"))
    try:
        with hub_calls():  # bounded and quiet like every other call to the Hub (SWINZOO_HUB_TIMEOUT)
            if saved:  # older datasets refuse these in load_dataset
                if config is not None:
                    raise SwinzooError(f"{name} is a save_to_disk folder, which has no configs; drop :{config}")
                ds = datasets.load_from_disk(str(local))
            else:
                ds = datasets.load_dataset(name, config)
    except SwinzooError:
        raise
    except ValueError as e:  # the library reports a missing or unknown config as a ValueError
        raise _config_error(datasets, name, config, e) from None
    except Exception as e:  # the library raises many types (network, missing repo, ...)
        raise _load_error(name, e) from None
    return ds if isinstance(ds, datasets.DatasetDict) else datasets.DatasetDict({"train": ds})


def _load_error(name: str, e: BaseException) -> SwinzooError:
    return SwinzooError(f"cannot load Hugging Face dataset {name!r}: {_first_line(e)}; check the name, the network "
                        "and HF_ENDPOINT (offline: HF_HUB_OFFLINE=1 with a cache that holds it)")


def _config_error(datasets, name: str, config: str | None, e: BaseException) -> SwinzooError:
    try:
        with hub_calls():
            configs = list(datasets.get_dataset_config_names(name))
    except Exception:  # only a better message is lost
        configs = []
    shown = ", ".join(configs)
    if configs and config is None and len(configs) > 1:
        return SwinzooError(f"Hugging Face dataset {name!r} has several configs; pick one with --data "
                            f"hf:{name}:CONFIG, CONFIG one of {shown}")
    if configs and config is not None and config not in configs:
        return SwinzooError(f"Hugging Face dataset {name!r} has no config {config!r}; use --data hf:{name}:CONFIG "
                            f"with CONFIG one of {shown}")
    return _load_error(name, e)


def _pick_column(ds, where: str, option: str, given: str | None, kind, names: tuple[str, ...]) -> str:
    """The column `given`, else the one column of feature type `kind`, else (among several, or for labels among
    all columns since integer labels may be a plain column) the first of `names`."""
    cols = ds.column_names
    if given is not None:
        if given not in cols:
            raise SwinzooError(f"{where} has no column {given!r} ({FLAGS[option]}); its columns: {', '.join(cols)}")
        return given
    typed = [c for c in cols if isinstance(ds.features[c], kind)]
    if len(typed) == 1:
        return typed[0]
    named = next((c for c in names if c in (typed or (cols if option == "label_column" else []))), None)
    if named is not None:
        return named
    feature = "Image" if option == "image_column" else "ClassLabel"
    if typed:
        raise SwinzooError(f"{where} has several {feature} columns ({', '.join(typed)}); name one with "
                           f"{FLAGS[option]}")
    if option == "image_column":
        raise SwinzooError(f"{where} has no Image column; its columns: {', '.join(cols)} (the images must be an "
                           "Image feature)")
    raise SwinzooError(f"{where} has no ClassLabel column nor one named {', '.join(names)}; name the label column "
                       f"with {FLAGS[option]} (its columns: {', '.join(cols)})")


def _labels(ds, key: str, where: str, option: str) -> np.ndarray:
    """The label column as integers; a column of anything but class ids stops with what to do."""
    datasets = _datasets()
    feature = ds.features[key]
    dtype = getattr(feature, "dtype", "")
    if not isinstance(feature, datasets.ClassLabel) and not (isinstance(feature, datasets.Value)
                                                             and dtype.startswith(("int", "uint"))):
        raise SwinzooError(f"{where}: label column {key!r} holds {feature!r}, not class ids; pick a ClassLabel or "
                           f"integer column with --label-column, or encode this one first "
                           f"(dataset.class_encode_column({key!r}))")
    labels = np.asarray(ds.with_format("numpy", columns=[key])[key], dtype=np.int64)
    if len(labels) and labels.min() < 0:
        raise SwinzooError(f"{where} has unlabelled rows (label {labels.min()}); pick a labelled split with "
                           f"{FLAGS[option]}")
    return labels


def carve(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows), sorted: `fraction` of the rows, stratified by label, drawn from `seed` only.

    Each row's rank within its class (in a seeded shuffle) is scaled to (0, 1); the rows of lowest scaled rank are
    held out, so every class gives its share (within one row) and the total is exact."""
    n = len(labels)
    n_val = min(n - 1, max(1, round(fraction * n)))
    perm = np.random.default_rng(seed).permutation(n)
    shuffled = labels[perm]
    counts = np.bincount(shuffled)
    order = np.argsort(shuffled, kind="stable")
    rank = np.empty(n)
    rank[order] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    held = np.zeros(n, dtype=bool)
    held[perm[np.argsort((rank + 0.5) / counts[shuffled], kind="stable")[:n_val]]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def val_split_of(dd, options: DataOptions, data: str) -> tuple[str | None, bool]:
    """(the validation split's name, whether it is carved from the train split instead)."""
    if options.val_split is not None:
        if options.val_split not in dd:
            raise SwinzooError(f"{data} has no split {options.val_split!r} (--val-split); its splits: "
                               f"{', '.join(dd)}")
        return options.val_split, False
    if options.val_fraction is not None:
        return None, True
    name = next((s for s in VAL_SPLITS if s in dd), None)
    return name, name is None


class HFSplit(Dataset):
    """The train or val split (`split`) of the Hugging Face dataset `name` (what follows `hf:`: NAME[:CONFIG]),
    read as `options` say; has `.classes` and `.description` (which split or carve it is, for the console).
    `classes`: the train split's, to check the validation split against; `loaded`: the DatasetDict when the
    caller already loaded it (both splits from one load); `check`: decode every image it reads now (else the
    caller checks them, e.g. with the other split's, to decode a shared split once and count every bad row);
    `labelled` False (SimMIM pretraining): only the image column is required, items are (image, -1) and
    `.classes` is empty; labels the dataset happens to have only stratify a carved validation split."""

    def __init__(self, name: str, split: str, options: DataOptions | None = None,
                 classes: list[str] | None = None, *, loaded=None, check: bool = True, labelled: bool = True) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', not {split!r}")
        options = options or DataOptions()
        dd = loaded if loaded is not None else load_hf(*parse_hf(name))
        data, train_name = f"hf:{name}", options.train_split
        val_name, carved = val_split_of(dd, options, data)
        if (split == "train" or carved) and train_name not in dd:
            raise SwinzooError(f"{data} has no split {train_name!r} (--train-split); its splits: {', '.join(dd)}")
        chosen = train_name if split == "train" or carved else val_name
        where, ds = f"{data} split {chosen!r}", dd[chosen]
        self.data, self.split_name = data, chosen
        # columns are picked on the train split (when there is one: eval may read a test-only dataset), so both
        # splits read the same ones
        base = dd[train_name] if train_name in dd else ds
        base_where = f"{data} split {train_name if train_name in dd else chosen!r}"
        datasets = _datasets()
        self.image_key = _pick_column(base, base_where, "image_column", options.image_column, datasets.Image,
                                      IMAGE_COLUMNS)
        if self.image_key not in ds.column_names:
            raise SwinzooError(f"{where} has no column {self.image_key!r} (--image-column); its columns: "
                               f"{', '.join(ds.column_names)}")
        if not isinstance(ds.features[self.image_key], datasets.Image):
            raise SwinzooError(f"{where}: column {self.image_key!r} holds {ds.features[self.image_key]!r}, not "
                               "images; pick an Image column with --image-column")
        option = "train_split" if chosen == train_name else "val_split"
        if labelled or options.label_column is not None:  # a label column given is read as given, used or not
            self.label_key = _pick_column(base, base_where, "label_column", options.label_column,
                                          datasets.ClassLabel, LABEL_COLUMNS)
            if self.label_key not in ds.column_names:
                raise SwinzooError(f"{where} has no column {self.label_key!r} (--label-column); its columns: "
                                   f"{', '.join(ds.column_names)}")
            labels = _labels(ds, self.label_key, where, option)
            self.classes = self._classes(ds, labels, classes, where) if labelled else []
        else:
            labels, self.label_key, self.classes = self._usable_labels(base, base_where, ds, where, option), None, []
        # rows decode no other column
        self.ds = ds.select_columns([self.image_key, *([self.label_key] if self.label_key else [])])
        self.rows, self.description = None, f"{'train' if split == 'train' else 'validation'}: split {chosen!r}"
        if carved:
            if len(ds) < 2:
                raise SwinzooError(f"{where} has {len(ds)} row(s), too few to carve a validation split from; name "
                                   f"one with --val-split (splits: {', '.join(dd)})")
            fraction = options.val_fraction or DEFAULT_VAL_FRACTION
            stratified = labels is not None
            kept, held = carve(labels if stratified else np.zeros(len(ds), np.int64), fraction, options.split_seed)
            self.rows = kept if split == "train" else held
            unused = next((s for s in VAL_SPLITS if s in dd), None)
            self.description = (f"train: split {train_name!r} less the validation rows" if split == "train" else
                                f"validation: {fraction * 100:g}% of split {train_name!r} carved off, "
                                f"{'stratified by label' if stratified else 'at random'}, split seed "
                                f"{options.split_seed} (--val-fraction, --split-seed)"
                                + (f"; the dataset's {unused!r} split is not used" if unused else ""))
        self.description += f" ({len(self)} rows)"
        self.labels = None if not labelled else labels if self.rows is None else labels[self.rows]  # for a budget
        if check:
            check_rows([(data, chosen, self.ds, self.image_key, self.rows)])

    @staticmethod
    def _usable_labels(base, base_where: str, ds, where: str, option: str) -> np.ndarray | None:
        """The labels of an unlabelled read when the dataset has usable ones (a carve is stratified by them, so a
        labelled dataset holds out the rows it held out when pretraining required labels), else None."""
        datasets = _datasets()
        try:
            key = _pick_column(base, base_where, "label_column", None, datasets.ClassLabel, LABEL_COLUMNS)
            return _labels(ds, key, where, option) if key in ds.column_names else None
        except SwinzooError:  # no label column, unlabelled (-1) rows, text: nothing to stratify by
            return None

    def _classes(self, ds, labels: np.ndarray, train_classes: list[str] | None, where: str) -> list[str]:
        names = getattr(ds.features[self.label_key], "names", None)
        if names is None:  # integer labels: classes 0..max, named by their id
            top = int(labels.max()) if len(labels) else -1
            if train_classes is not None:
                if top >= len(train_classes):
                    raise SwinzooError(f"{where} has label {top} but the train split has only {len(train_classes)} "
                                       "classes; use splits with the same labels")
                return list(train_classes)
            return [str(i) for i in range(top + 1)]
        if train_classes is not None and list(names) != list(train_classes):
            raise SwinzooError(f"{where} has classes {list(names)[:8]} but the train split has "
                               f"{list(train_classes)[:8]}; use splits with the same ClassLabel")
        if len(labels) and labels.max() >= len(names):
            raise SwinzooError(f"{where} has label {labels.max()} but its ClassLabel has {len(names)} names; fix "
                               "the dataset's labels")
        return list(names)

    def __len__(self) -> int:
        return len(self.ds) if self.rows is None else len(self.rows)

    def __getitem__(self, index: int):
        at = int(index if self.rows is None else self.rows[index])
        row = self.ds[at]
        image = to_rgb(row[self.image_key], f"{self.data} split {self.split_name!r} row {at}")
        return image, int(row[self.label_key]) if self.label_key else -1


def row_problems(ds, key: str, rows: np.ndarray | None):
    """`scan`'s problems_in over `rows` (None: all) of `ds`: (row, why) for each unreadable image of column `key`.
    Rows are read as Arrow (the encoded bytes or the file path), so nothing is decoded twice."""
    raw = ds.select_columns([key]).with_format("arrow")
    feature = ds.features[key]

    def problems_in(start: int, stop: int) -> list[tuple[int, str]]:
        index = list(range(start, stop)) if rows is None else [int(r) for r in rows[start:stop]]
        values = (raw[start:stop] if rows is None else raw[index]).column(key).to_pylist()
        return [(i, why) for i, value in zip(index, values) if (why := _row_problem(feature, value)) is not None]

    return problems_in


def _row_problem(feature, value: dict | None) -> str | None:
    if value is None:
        return "the row has no image"
    data, path = value.get("bytes"), value.get("path")
    if data is not None:
        return image_problem(data)
    if path is None:
        return "the row has neither image bytes nor a path"
    if "://" not in path:
        return image_problem(Path(path))
    try:  # a remote file: fetched by the library, as training would fetch it
        feature.decode_example(value)
    except Exception as e:
        return _first_line(e)
    return None


def check_rows(parts: list[tuple[str, str, object, str, np.ndarray | None]]) -> None:
    """Decode the image of every row of `parts`, (data, split, dataset, image column, rows or None for all), in one
    pass; raise one error naming the first unreadable row and how many others there are."""
    bad = []
    for data, split, ds, key, rows in parts:
        count = len(ds) if rows is None else len(rows)
        bad += [(split, row, why) for row, why in scan(count, row_problems(ds, key, rows), f"{data} split {split!r}")]
    if bad:
        (split, row, why), data = bad[0], parts[0][0]
        others = [f"row {r}" if s == split else f"split {s!r} row {r}" for s, r, _ in bad[1:]]
        raise SwinzooError(f"{data} split {split!r} row {row} is not a readable image ({why}); replace or drop that "
                           "row of the dataset" + more_unreadable(others))


def open_hf(data: str, options: DataOptions | None = None, labelled: bool = True) -> tuple[HFSplit, HFSplit]:
    """The train and val splits of `hf:NAME[:CONFIG]` from one load of the dataset, every image they read decoded
    (a carved validation split's rows and the train rows make up the train split: it is checked once)."""
    name = data[3:] if data.startswith("hf:") else data
    dd = load_hf(*parse_hf(name))
    train = HFSplit(name, "train", options, loaded=dd, check=False, labelled=labelled)
    val = HFSplit(name, "val", options, train.classes, loaded=dd, check=False, labelled=labelled)
    parts = {base.split_name: (base.data, base.split_name, base.ds, base.image_key, None) for base in (train, val)}
    check_rows(list(parts.values()))
    return train, val
