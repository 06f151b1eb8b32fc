"""`--train-fraction`: fine-tune on a share of the training labels (label-budget experiments), stratified by class,
the same images for a given split seed, validation untouched; any kind of data."""

from collections import Counter

import pytest
from PIL import Image

from swinzoo.errors import SwinzooError
from swinzoo.train.data import SwinDataModule
from swinzoo.train.hf_data import DataOptions


def budget(data: str, res: int = 64, **options) -> SwinDataModule:
    dm = SwinDataModule(data, res, batch_size=2, num_workers=0, data_options=DataOptions(**options))
    dm.check()
    return dm


def test_shapes_budget_is_stratified_and_seeded():
    dm = budget("shapes", train_fraction=0.01)
    labels = [dm.train_base.base[int(i)][1] for i in dm.train_base.rows]
    assert len(dm.train_base) == 200 and set(Counter(labels).values()) == {20}
    assert len(dm.val_base) == 1000  # validation is not cut
    assert "200 of 20000 training images" in dm.description
    again, other = budget("shapes", train_fraction=0.01), budget("shapes", train_fraction=0.01, split_seed=1)
    assert list(again.train_base.rows) == list(dm.train_base.rows) != list(other.train_base.rows)
    assert len(budget("shapes", train_fraction=0.1).train_base) == 2000
    assert budget("shapes", train_fraction=1.0).train_base.__class__.__name__ == "ShapesDataset"


def test_image_folder_budget(tmp_path):
    for split in ("train", "val"):
        for label, colour in enumerate(("red", "blue")):
            folder = tmp_path / split / f"c{label}"
            folder.mkdir(parents=True)
            for i in range(10):
                Image.new("RGB", (8, 8), colour).save(folder / f"{i}.png")
    dm = budget(str(tmp_path), train_fraction=0.5)
    assert len(dm.train_base) == 10 and len(dm.val_base) == 20
    assert Counter(dm.train_base[i][1] for i in range(10)) == {0: 5, 1: 5}


@pytest.mark.parametrize("value", [0, 1.5, -0.1, True])
def test_bad_fractions_are_one_line(value):
    with pytest.raises(SwinzooError, match=r"--train-fraction must be a number in \(0, 1\]") as info:
        DataOptions(train_fraction=value)
    assert "\n" not in str(info.value)


def test_hf_only_options_are_still_refused_for_shapes():
    with pytest.raises(SwinzooError, match="--val-fraction only applies to hf:NAME data"):
        budget("shapes", train_fraction=0.5, val_fraction=0.2)


def test_the_cli_flag_reaches_the_options():
    from swinzoo.commands.finetune import parse

    options = parse(["--from", "swin_n_64", "--data", "shapes", "--train-fraction", "0.1", "--split-seed", "3"])
    assert options.train_fraction == 0.1 and options.split_seed == 3
