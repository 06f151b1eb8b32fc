"""Optimizer pieces against the official rules: weight-decay groups, SimMIM layer ids, warmup + cosine."""

import math

import pytest

import swinzoo
from swinzoo.train.optim import layer_id, param_groups, scaled_lrs, warmup_cosine


def names_without_decay(model):
    return {n for g in param_groups(model, 1e-3, 0.05) if g["weight_decay"] == 0 for n in g["names"]}


def test_weight_decay_groups_v1():
    model = swinzoo.create_model("swin_n_64", ape=True)
    no_decay = names_without_decay(model)
    for name, p in model.named_parameters():
        official = p.ndim == 1 or name.endswith(".bias") or name == "absolute_pos_embed" \
            or "relative_position_bias_table" in name
        assert (name in no_decay) == official, name
    assert "layers.0.blocks.0.attn.qkv.weight" not in no_decay


def test_weight_decay_groups_v2():
    model = swinzoo.create_model("swinv2_n_64_w4")
    no_decay = names_without_decay(model)
    assert "layers.0.blocks.0.attn.cpb_mlp.2.weight" in no_decay  # 2-D, but every cpb_mlp tensor is undecayed
    assert "layers.0.blocks.0.attn.cpb_mlp.0.weight" in no_decay
    assert "layers.1.blocks.1.attn.logit_scale" in no_decay  # 3-D
    assert {"layers.0.blocks.0.attn.q_bias", "layers.0.blocks.0.attn.v_bias"} <= no_decay
    assert "layers.0.blocks.0.attn.qkv.weight" not in no_decay and "head.weight" not in no_decay


@pytest.mark.parametrize("name", ["swin_n_64", "swinv2_n_64_w4"])
def test_simmim_pretraining_groups_follow_the_official_prefixed_names(name):
    """The official `SimMIM.no_weight_decay(_keywords)` prefix the encoder's names with `encoder.`, and
    `get_pretrain_param_groups` matches keywords as substrings: `encoder.relative_position_bias_table` is in no
    block's name, so the pretraining decays the bias tables (V1), the 2-D `cpb_mlp` weights and `logit_scale` (V2);
    only 1-D tensors, biases, `encoder.mask_token` and `encoder.absolute_pos_embed` are left undecayed."""
    model = swinzoo.SimMIM(swinzoo.create_model(name).config.replace(num_classes=0, class_names=None, ape=True))
    no_decay = names_without_decay(model)
    for n, p in model.named_parameters():
        official = p.ndim == 1 or n.endswith(".bias") or n in ("encoder.mask_token", "encoder.absolute_pos_embed")
        assert (n in no_decay) == official, n
    decayed = {n.removeprefix("encoder.layers.0.blocks.0.attn.") for n in dict(model.named_parameters())} - no_decay
    assert {"relative_position_bias_table"} <= decayed if name == "swin_n_64" else {"cpb_mlp.0.weight",
                                                                                     "logit_scale"} <= decayed


def test_layer_ids_follow_simmim():
    depths = (2, 2, 6, 2)
    assert layer_id("patch_embed.proj.weight", depths) == 0
    assert layer_id("layers.0.blocks.0.norm1.weight", depths) == 1
    assert layer_id("layers.2.blocks.5.mlp.fc1.weight", depths) == 2 + 2 + 5 + 1
    assert layer_id("layers.1.downsample.reduction.weight", depths) == 4
    assert layer_id("layers.1.downsample.norm.weight", depths) == 4
    assert layer_id("norm.weight", depths) == layer_id("head.weight", depths) == 13


def test_layer_decay_scales():
    model = swinzoo.create_model("swin_n_64")
    groups = param_groups(model, 1.0, 0.05, layer_decay=0.5)
    by_name = {n: g["lr"] for g in groups for n in g["names"]}
    assert by_name["head.weight"] == 1.0
    assert by_name["patch_embed.proj.weight"] == 0.5 ** 9  # num_layers 8: 0.5 ** (8 + 1 - 0)
    assert by_name["layers.3.blocks.1.mlp.fc1.weight"] == 0.5 ** 1


def test_warmup_cosine_schedule():
    f = warmup_cosine(total_steps=100, warmup_steps=10, base_lr=4e-5, warmup_lr=4e-8, min_lr=4e-7)
    assert f(0) * 4e-5 == pytest.approx(4e-8)
    assert f(5) * 4e-5 == pytest.approx(4e-8 + (4e-5 - 4e-8) / 2)
    assert f(10) == pytest.approx(1.0)
    assert f(55) * 4e-5 == pytest.approx(4e-7 + 0.5 * (4e-5 - 4e-7) * (1 + math.cos(math.pi * 0.5)))
    assert f(100) * 4e-5 == pytest.approx(4e-7)


def test_lr_scaling_per_512():
    assert scaled_lrs(2e-5, 2e-8, 2e-7, 1024) == pytest.approx((4e-5, 4e-8, 4e-7))


def test_soft_target_loss_matches_label_smoothing_ce():
    import torch
    import torch.nn.functional as F

    from swinzoo.train.module import soft_target_loss

    logits, labels = torch.randn(6, 10, dtype=torch.float64), torch.arange(6)
    soft = F.one_hot(labels, 10).double()
    assert soft_target_loss(logits, soft, 0.1) == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.1))


def test_mixup_cutmix_and_ema_come_from_the_recipe():
    import torch
    from lightning.pytorch.callbacks import EMAWeightAveraging

    from swinzoo.train.module import batch_mixer, ema_callback, trainer_kwargs
    from swinzoo.train.recipes import Recipe

    images, labels = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    mixed, soft = batch_mixer(Recipe(), 5)(images, labels)
    assert mixed.shape == images.shape and soft.shape == (4, 5) and torch.allclose(soft.sum(-1), torch.ones(4))
    assert batch_mixer(Recipe(mixup=0, cutmix=0), 5) is None
    assert ema_callback(Recipe()) is None and isinstance(ema_callback(Recipe(ema_decay=0.99)), EMAWeightAveraging)
    kw = trainer_kwargs(Recipe(accumulate_grad_batches=2))
    assert kw["gradient_clip_val"] == 5.0 and kw["gradient_clip_algorithm"] == "norm"
    assert kw["accumulate_grad_batches"] == 2
