"""Every zoo entry against the official model's exact parameter count and `flops()` (official_swin_facts §5.4)."""

import math

import pytest
import torch

import swinzoo
from swinzoo import SwinzooError
from swinzoo.models import count_macs, parameter_shapes
from swinzoo.zoo import ENTRIES, get_entry, list_models, zoo_config

# Computed by instantiating the official Microsoft classes (params) and calling their flops() (in 1e9 MACs).
OFFICIAL = {
    "swin_t_224.in1k": (28_288_354, 4.494),
    "swin_t_224.in22k": (44_315_083, 4.510),
    "swin_s_224.in1k": (49_606_258, 8.747),
    "swin_b_224.in1k": (87_768_224, 15.438),
    "swin_b_224.in22k": (109_130_249, 15.460),
    "swin_b_384.in1k": (87_903_584, 47.105),
    "swin_l_224.in22k_ft_in1k": (196_532_476, 34.487),
    "swin_l_224.in22k": (228_565_093, 34.519),
    "swin_l_384.in22k_ft_in1k": (196_735_516, 103.952),
    "swin_t_c24_256.in1k": (28_306_432, 5.926),
    "swinv2_t_256_w8.in1k": (28_347_154, 5.926),
    "swinv2_t_256_w16.in1k": (28_347_154, 6.605),
    "swinv2_s_256_w8.in1k": (49_728_418, 11.515),
    "swinv2_s_256_w16.in1k": (49_728_418, 12.647),
    "swinv2_b_256_w8.in1k": (87_918_816, 20.286),
    "swinv2_b_256_w16.in1k": (87_918_816, 21.796),
    "swinv2_b_256_w16.in22k_ft_in1k": (87_918_816, 21.796),
    "swinv2_b_384_w24.in22k_ft_in1k": (87_918_816, 54.748),
    "swinv2_b_192_w12.in22k": (109_280_841, 11.782),
    "swinv2_l_256_w16.in22k_ft_in1k": (196_739_932, 47.491),
    "swinv2_l_384_w24.in22k_ft_in1k": (196_739_932, 115.417),
    "swinv2_l_192_w12.in22k": (228_772_549, 25.997),
}
# Entries whose official count is implied by one above (same architecture and head).
SAME_AS = {
    "swin_t_224.in22k_ft_in1k": "swin_t_224.in1k",
    "swin_s_224.in22k_ft_in1k": "swin_s_224.in1k",
    "swin_b_224.in22k_ft_in1k": "swin_b_224.in1k",
    "swin_b_384.in22k_ft_in1k": "swin_b_384.in1k",
}


def official_numbers(name: str) -> tuple[int, float] | None:
    return OFFICIAL.get(SAME_AS.get(name, name))


TAGGED = [n for n in list_models() if "." in n and get_entry(n)[0].weights_for(n.split(".")[1]).official_url]


@pytest.mark.parametrize("name", TAGGED)
def test_every_entry_builds_with_official_params_and_gmacs(name):
    entry, tag = get_entry(name)
    cfg = entry.config(tag)
    with torch.device("meta"):
        model = swinzoo.create_model(name)
    params = sum(p.numel() for p in model.parameters())
    assert params == sum(math.prod(s) for s in parameter_shapes(cfg).values())
    numbers = official_numbers(name)
    if numbers is None:  # no official count recorded: the paper's rounded figures, within 1%
        assert abs(params / 1e6 - entry.params_m) / entry.params_m < 0.01 or entry.weights_for(tag).num_classes > 1000
        assert abs(count_macs(cfg) / 1e9 - entry.gmacs) / entry.gmacs < 0.01
        return
    official_params, official_gmacs = numbers
    assert params == official_params
    assert abs(count_macs(cfg) / 1e9 - official_gmacs) / official_gmacs < 0.01
    assert count_macs(cfg) / 1e9 == pytest.approx(official_gmacs, abs=6e-4)  # the printed digits


def test_every_tag_has_official_numbers_or_paper_numbers():
    missing = [n for n in TAGGED if official_numbers(n) is None]
    assert missing == ["swin_s_224.in22k", "swin_b_384.in22k", "swin_l_384.in22k"]


def test_paper_table_close_to_exact_counts():
    for entry in ENTRIES:
        cfg = entry.config(entry.default_tag)
        if cfg.num_classes != 1000:
            continue
        params = sum(math.prod(s) for s in parameter_shapes(cfg).values())
        assert abs(params / 1e6 - entry.params_m) / entry.params_m < 0.01, entry.name
        assert abs(count_macs(cfg) / 1e9 - entry.gmacs) / entry.gmacs < 0.01, entry.name


def test_names_follow_design():
    names = list_models()
    for n in ["swin_t_224", "swin_b_384", "swin_l_224.in22k", "swin_b_224.in22k_ft_in1k", "swinv2_t_256_w8",
              "swinv2_b_192_w12", "swinv2_b_256_w16", "swinv2_b_384_w24", "swinv2_l_384_w24"]:
        assert n in names


def test_default_tag_is_best_in1k():
    assert get_entry("swin_b_224")[0].default_tag == "in22k_ft_in1k"
    assert get_entry("swin_t_224")[0].default_tag == "in1k"  # the tiny 22k fine-tune scores lower (80.9 < 81.2)


def test_22k_finetunes_carry_pretrained_windows():
    cfg = swinzoo.create_model("swinv2_b_384_w24").config
    assert cfg.pretrained_window_sizes == (12, 12, 12, 6)
    assert swinzoo.create_model("swinv2_t_256_w8").config.pretrained_window_sizes == (0, 0, 0, 0)


def test_hub_sources():
    entry, tag = get_entry("swin_b_224.in22k_ft_in1k")
    assert entry.weights_for(tag).hub_repo == "timm/swin_base_patch4_window7_224.ms_in22k_ft_in1k"
    entry, tag = get_entry("swinv2_l_384_w24")
    assert entry.weights_for(tag).hub_repo == "timm/swinv2_large_window12to24_192to384.ms_in22k_ft_in1k"


def test_unknown_name_suggests_closest():
    with pytest.raises(SwinzooError, match="swin_b_224"):
        get_entry("swin_b_244")
    with pytest.raises(SwinzooError, match="no weights tagged"):
        get_entry("swin_l_224.in1k")


def test_create_model_overrides():
    model = swinzoo.create_model("swin_t_224", num_classes=10, img_size=384, window_size=12)
    assert model.head.out_features == 10 and model.config.window_size == 12
    assert model(torch.randn(1, 3, 384, 384)).shape == (1, 10)


def test_nano_entries_are_swinzoo_models():
    for name in ("swin_n_64", "swinv2_n_64_w4"):
        entry, _ = get_entry(name)
        w = entry.weights_for(None)
        assert w.official_url is None and w.hub_repo is None and w.package_file == f"{name}.safetensors"
        cfg = entry.config()
        assert (cfg.img_size, cfg.window_size, cfg.num_classes) == (64, 4, 10)
        params = sum(math.prod(s) for s in parameter_shapes(cfg).values())
        assert abs(params / 1e6 - entry.params_m) / entry.params_m < 0.01
        assert abs(count_macs(cfg) / 1e9 - entry.gmacs) / entry.gmacs < 0.01


@pytest.mark.parametrize("timm_name,zoo_name", [
    ("swin_tiny_patch4_window7_224", "swin_t_224.in1k"),
    ("swin_base_patch4_window7_224", "swin_b_224.in22k_ft_in1k"),
    ("swin_large_patch4_window12_384.ms_in22k", "swin_l_384.in22k"),
    ("swinv2_base_window16_256.ms_in1k", "swinv2_b_256_w16.in1k"),
    ("swinv2_base_window12to16_192to256", "swinv2_b_256_w16.in22k_ft_in1k"),
])
def test_timm_names_and_tags_are_aliases(timm_name, zoo_name):
    from swinzoo.hub import zoo_repo
    from swinzoo.zoo import split_name

    assert ".".join(filter(None, split_name(timm_name))) == zoo_name
    assert zoo_config(timm_name) == zoo_config(zoo_name)
    assert zoo_repo(timm_name) == zoo_repo(zoo_name) == f"hf-hub:timm/{timm_name.split('.')[0]}.ms_" \
        f"{zoo_name.split('.')[1]}"
    with pytest.raises(SwinzooError, match="did you mean swin_base_patch4_window7_224"):
        get_entry("swin_base_patch4_window7_225")


def test_create_model_pretrained_with_a_new_head():
    import swinzoo

    shipped = swinzoo.load_model("swin_n_64")
    model = swinzoo.create_model("swin_n_64", pretrained=True, num_classes=5, drop_path_rate=0.2)
    assert model.config.num_classes == 5 and model.config.drop_path_rate == 0.2
    assert model.provenance["transfer"]["reinitialized"]  # the head, as `convert --num-classes` does
    theirs = shipped.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(value, theirs[key]), key
    bigger = swinzoo.create_model("swin_n_64", pretrained=True, img_size=128)
    assert (bigger.config.img_size, bigger.config.window_size) == (128, 8)
    assert swinzoo.create_model("swin_tiny_patch4_window7_224").config == zoo_config("swin_t_224")
