"""Recipes: every packaged YAML parses; the 224->384 recipe holds the official values (official_swin_facts §6.5)."""

import pytest

from swinzoo import SwinzooError
from swinzoo.train.recipes import (
    check_recipe,
    load_recipe,
    packaged_recipes,
    recipe_from_dict,
    split_recipe,
    valid_keys,
)

EXPECTED = {"swin_224to384", "swin_22kto1k", "swinv2_192to256", "swinv2_192to384", "nano", "nano_finetune"}


def test_packaged_recipes_are_shipped():
    assert EXPECTED <= set(packaged_recipes())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_recipe_parses(name):
    recipe = load_recipe(name)
    assert recipe.name == name and recipe.description
    assert recipe.base_lr > recipe.min_lr > recipe.warmup_lr > 0
    assert 0 < recipe.warmup_fraction < 1


def test_224to384_is_the_official_recipe():
    r = load_recipe("swin_224to384")
    assert (r.res, r.window, r.epochs, r.warmup_epochs) == (384, 12, 30, 5)
    assert (r.base_lr, r.warmup_lr, r.min_lr) == (2e-5, 2e-8, 2e-7)
    assert r.weight_decay == 1e-8 and r.drop_path_rate == 0.5 and r.test_crop is False
    assert r.batch_size * 8 * r.accumulate_grad_batches == r.official_total_batch == 1024  # 8 GPUs x 64 x 2
    assert (r.label_smoothing, r.mixup, r.cutmix, r.rand_augment, r.random_erasing) == (0.1, 0.8, 1.0, 9, 0.25)
    assert r.clip_grad == 5.0 and r.layer_decay == 1.0 and r.ema_decay is None
    assert tuple(r.crop_scale) == (0.08, 1.0) and tuple(r.betas) == (0.9, 0.999) and r.eps == 1e-8


def test_v2_and_22k_recipes():
    for name, res, window, crop in (("swinv2_192to256", 256, 16, True), ("swinv2_192to384", 384, 24, False),
                                    ("swin_22kto1k", 224, 7, True)):
        r = load_recipe(name)
        assert (r.res, r.window, r.test_crop, r.drop_path_rate, r.weight_decay) == (res, window, crop, 0.2, 1e-8)


def test_unknown_key_lists_valid_keys(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(SwinzooError, match="unknown recipe key 'learning_rate'; valid keys: name, description") as e:
        load_recipe(str(path))
    assert "\n" not in str(e.value) and "base_lr" in str(e.value)


def test_bad_values_and_names(tmp_path):
    with pytest.raises(SwinzooError, match="epochs='many' is invalid"):
        recipe_from_dict({"epochs": "many"})
    with pytest.raises(SwinzooError, match="unknown recipe 'nope'; packaged recipes: finetune, nano"):
        load_recipe("nope")
    assert recipe_from_dict({"base_lr": "1e-3"}).base_lr == 1e-3  # YAML reads 1e-3 as a string
    assert "base_lr" in valid_keys()


def test_a_partial_mapping_changes_the_recipe_a_whole_one_replaces_it():
    assert split_recipe({"base_lr": "1e-3"}, {"epochs": 2}) == (None, {"base_lr": 1e-3, "epochs": 2})
    whole = load_recipe("nano_finetune").to_dict()
    assert split_recipe(whole, {"crop_scale": (0.5, 1)}) == (whole, {"crop_scale": [0.5, 1.0]})
    assert split_recipe("nano_finetune", None) == ("nano_finetune", {})


@pytest.mark.parametrize("key", ["base_lr", "mixup", "cutmix", "warmup_epochs", "clip_grad", "weight_decay"])
def test_infinite_values_are_out_of_range(key):
    """`--recipe.base_lr inf` passed the "> 0" check and trained to NaN weights; inf means nothing a recipe can
    ask for (null switches clipping, EMA and RandAugment off)."""
    with pytest.raises(SwinzooError, match=f"{key}=inf is out of range; it must be a finite number "):
        check_recipe(recipe_from_dict({key: float("inf")}))
