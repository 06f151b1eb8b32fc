"""transfer(): V1 bicubic tables, APE, V2 pretrained windows, the 22k -> 1k head map, head re-init, the report."""

import hashlib
from importlib import resources

import pytest
import torch

from swinzoo import SwinConfig, SwinTransformer, SwinzooError, create_model, load_model
from swinzoo.converters.official import from_official, read_official, to_official
from swinzoo.weight_transfer import map22kto1k, transfer

from .conftest import V1, fixture_pth, run_cli

TINY = dict(embed_dim=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))


def test_map_file_is_the_official_one():
    text = resources.files("swinzoo.data").joinpath("map22kto1k.txt").read_bytes()
    assert hashlib.md5(text).hexdigest() == "15de4ae09bca0d5310c4a421b95dc723"
    rows = map22kto1k()
    assert rows.shape == (1000,) and len(set(rows.tolist())) == 1000 and int(rows.min()) == 359


def test_identity_transfer_changes_nothing():
    sd, cfg = from_official(read_official(fixture_pth(V1)))
    moved, dst, report = transfer(sd, cfg, cfg)
    assert dst == cfg and not report.changed and report.kept == len(sd)
    assert all(moved[k] is sd[k] for k in sd)


def test_a_v2_model_moved_nowhere_keeps_its_implicit_pretrained_windows(tmp_path, capsys):
    """pretrained_window_sizes 0 means "the stage's own window": writing the windows out changes no number, so a
    plain convert reports no transfer and a round trip keeps the config as it was."""
    model = create_model("swinv2_n_64_w4")
    assert model.config.pretrained_window_sizes == (0, 0, 0, 0)
    _, dst, report = transfer(model.state_dict(), model.config, model.config)
    assert not report.changed and dst.pretrained_window_sizes == (0, 0, 0, 0)
    code, out, err = run_cli(["convert", "swinv2_n_64_w4", "-o", tmp_path / "m.safetensors"], capsys)
    assert code == 0 and "transfer" not in out, err
    assert load_model(tmp_path / "m.safetensors").config.pretrained_window_sizes == (0, 0, 0, 0)


def test_a_second_move_keeps_the_record_of_the_first(tmp_path, capsys):
    """A checkpoint records every surgery done to it: converted 64 -> 96 px, then 96 -> 128, the file says both,
    oldest first, each with the figures measured before it."""
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert run_cli(["convert", "swin_n_64", "--res", 96, "-o", first], capsys)[0] == 0
    assert run_cli(["convert", first, "--res", 128, "-o", second], capsys)[0] == 0
    provenance = load_model(second).provenance
    assert provenance["transfer"]["from"]["img_size"] == 96
    (earlier,) = provenance["earlier_transfers"]
    assert earlier["transfer"]["from"]["img_size"] == 64
    assert run_cli(["convert", second, "-o", tmp_path / "c.safetensors"], capsys)[0] == 0  # no move: nothing added
    assert load_model(tmp_path / "c.safetensors").provenance["earlier_transfers"] == provenance["earlier_transfers"]


def test_22k_to_1k_head_is_row_gathered(tmp_path, capsys):
    cfg = SwinConfig(version=1, img_size=224, window_size=7, num_classes=21841, **TINY)
    model = SwinTransformer(cfg)
    src = tmp_path / "ckpt_22k.pth"
    torch.save(to_official(model.state_dict(), cfg), src)
    out = tmp_path / "1k.safetensors"
    code, stdout, err = run_cli(["convert", src, "--num-classes", 1000, "-o", out], capsys)
    assert code == 0, err
    assert "21841 -> 1000" in stdout
    head = load_model(out).head
    rows = map22kto1k()
    torch.testing.assert_close(head.weight, model.head.weight[rows], rtol=0, atol=0)
    torch.testing.assert_close(head.bias, model.head.bias[rows], rtol=0, atol=0)


def test_22k_to_1k_with_arch_on_a_bufferless_checkpoint(tmp_path, capsys):
    """The README example: `swinzoo convert ckpt_22k.pth --arch swin_t_224 --num-classes 1000 -o t1k.safetensors`."""
    model = create_model("swin_t_224.in22k")
    sd = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    src = tmp_path / "ckpt_22k.pth"
    torch.save({"model": sd}, src)
    code, _, err = run_cli(["convert", src, "-o", tmp_path / "x.safetensors"], capsys)
    assert code == 2 and "--arch" in err and err.count("\n") == 1, err
    out = tmp_path / "t1k.safetensors"
    code, stdout, err = run_cli(["convert", src, "--arch", "swin_t_224", "--num-classes", 1000, "-o", out], capsys)
    assert code == 0, err
    loaded = load_model(out)
    assert loaded.config.num_classes == 1000 and loaded.config.embed_dim == 96
    assert torch.equal(loaded.head.bias, sd["head.bias"][map22kto1k()])


def test_other_class_counts_zero_the_head():
    sd, cfg = from_official(read_official(fixture_pth(V1)))
    moved, dst, report = transfer(sd, cfg, cfg.replace(num_classes=5))
    assert moved["head.weight"].shape == (5, 192) and not moved["head.weight"].any() and not moved["head.bias"].any()
    assert len(report.reinitialized) == 2 and "zeros" in str(report)
    model = SwinTransformer(dst)
    model.load_state_dict(moved)


def test_a_headless_source_gets_the_models_own_head_init():
    """No head to load (a SimMIM encoder, a headless timm model): the official SimMIM fine-tune leaves the model's
    own init, truncated normal(std 0.02) weights and zero biases (zeros are the official supervised load's, for a
    head of another class count), drawn from `head_seed`."""
    sd, cfg = from_official(read_official(fixture_pth(V1)))
    headless = {k: v for k, v in sd.items() if not k.startswith("head.")}
    src = cfg.replace(num_classes=0, class_names=None)
    moved, _, report = transfer(headless, src, cfg.replace(num_classes=5), head_seed=3)
    weight = moved["head.weight"]
    assert weight.shape == (5, 192) and not moved["head.bias"].any()
    assert 0.015 < float(weight.std()) < 0.025 and float(weight.abs().max()) < 0.02 * 5
    again, _, _ = transfer(headless, src, cfg.replace(num_classes=5), head_seed=3)
    other, _, _ = transfer(headless, src, cfg.replace(num_classes=5), head_seed=4)
    assert torch.equal(again["head.weight"], weight) and not torch.equal(other["head.weight"], weight)
    assert "head.weight (absent) -> (5, 192): truncated normal, std 0.02, seed 3" in str(report)


def test_v2_pretrained_windows_come_from_the_source():
    src = SwinConfig(version=2, img_size=192, window_size=12, **TINY)
    sd = SwinTransformer(src).state_dict()
    _, dst, report = transfer(sd, src, src.replace(img_size=384, window_size=24))
    assert dst.pretrained_window_sizes == (12, 12, 12, 6)  # as the official 22k -> 1k 384 configs
    assert "pretrained_window_sizes" in str(report)
    # a model that already carries pretrained windows keeps them: its coordinates were normalised by those
    src2 = dst.replace(img_size=256, window_size=16)
    _, dst2, _ = transfer(sd, src2, src2.replace(img_size=384, window_size=24))
    assert dst2.pretrained_window_sizes == (12, 12, 12, 6)


def test_v2_weights_carry_over_verbatim():
    src = SwinConfig(version=2, img_size=256, window_size=8, **TINY)
    sd = SwinTransformer(src).state_dict()
    moved, dst, report = transfer(sd, src, src.replace(img_size=384, window_size=12))
    assert not report.interpolated and all(torch.equal(moved[k], sd[k]) for k in sd)


def test_shared_offsets_get_the_same_v2_bias():
    """With pretrained windows from the source, the CPB of the bigger window extends the smaller one."""
    src = SwinConfig(version=2, img_size=256, window_size=8, **TINY)
    small = SwinTransformer(src)
    moved, dst, _ = transfer(small.state_dict(), src, src.replace(img_size=512, window_size=16))
    big = SwinTransformer(dst)
    big.load_state_dict(moved)
    a = small.layers[0].blocks[0].attn
    b = big.layers[0].blocks[0].attn
    torch.testing.assert_close(b.relative_coords_table[:, 8:-8, 8:-8], a.relative_coords_table, rtol=0, atol=0)


def test_ape_is_interpolated():
    src = SwinConfig(version=1, img_size=224, window_size=7, ape=True, **TINY)
    model = SwinTransformer(src)
    moved, dst, report = transfer(model.state_dict(), src, src.replace(img_size=448, window_size=14))
    assert moved["absolute_pos_embed"].shape == (1, 112 * 112, 24)
    assert any(k == "absolute_pos_embed" for k, _, _ in report.interpolated)
    SwinTransformer(dst).load_state_dict(moved)
    # the official load_pretrained's steps: (1, L, C) -> (1, S, S, C) -> NCHW, bicubic (align_corners False), back
    pos = model.state_dict()["absolute_pos_embed"].double()
    grid = pos.reshape(-1, 56, 56, 24).permute(0, 3, 1, 2)
    official = torch.nn.functional.interpolate(grid, size=(112, 112), mode="bicubic").permute(0, 2, 3, 1).flatten(1, 2)
    assert pos.abs().max() > 1e-2  # trunc_normal(0.02): a wrong resize shows
    torch.testing.assert_close(moved["absolute_pos_embed"].double(), official, rtol=0, atol=1e-6)


def test_clamped_stage_tables_are_sized_for_the_clamped_window():
    src = SwinConfig(version=1, img_size=224, window_size=7, **TINY)
    moved, dst, _ = transfer(SwinTransformer(src).state_dict(), src, src.replace(img_size=192, window_size=12))
    assert moved["layers.3.blocks.0.attn.relative_position_bias_table"].shape == (11 * 11, 8)  # 6x6 map, window 6
    SwinTransformer(dst).load_state_dict(moved)


def test_architecture_changes_are_refused():
    src = SwinConfig(version=1, **TINY)
    with pytest.raises(SwinzooError, match="embed_dim"):
        transfer(SwinTransformer(src).state_dict(), src, src.replace(embed_dim=48))


def test_head_mapped_22k_to_1k_takes_the_imagenet_names():
    """The official map puts the 1000 ImageNet-1k classes in their 1k order, so the mapped head is named by the
    packaged 1k names (exports then carry label_names / id2label); another class map leaves the names unknown."""
    from swinzoo.zoo import imagenet1k_class_names, zoo_config

    src = zoo_config("swin_n_64").replace(num_classes=21841, class_names=None)
    sd = SwinTransformer(src).state_dict()
    _, dst, report = transfer(sd, src, src.replace(num_classes=1000))
    assert report.mapped and dst.class_names == list(imagenet1k_class_names())
    _, dst, _ = transfer(sd, src, src.replace(num_classes=1000), class_map=torch.arange(1000))
    assert dst.class_names is None
