"""transformers 5.x key layout: a recorded key/shape list (transformers 5 is not installed here).

The lists below are the state-dict keys and shapes of a tiny SwinForImageClassification /
Swinv2ForImageClassification (image 16, patch 4, embed 8, depths [1, 1], heads [1, 2], window 2, 3 labels) in
the layout of the transformers 5 refactor (huggingface/transformers PR #41693: q/k/v/o_proj,
relative_position_bias.relative_position_bias_table, mlp.fc1/fc2, non-persistent index), recorded as data.
"""

import pytest
import torch

from converters import hf
from swinzoo import SwinConfig, SwinTransformer
from swinzoo.models import parameter_shapes

from .formats_helpers import assert_logits_close, randomize

V1_5X = """
swin.embeddings.patch_embeddings.projection.weight 8 3 4 4
swin.embeddings.patch_embeddings.projection.bias 8
swin.embeddings.norm.weight 8
swin.embeddings.norm.bias 8
swin.encoder.layers.0.blocks.0.layernorm_before.weight 8
swin.encoder.layers.0.blocks.0.layernorm_before.bias 8
swin.encoder.layers.0.blocks.0.attention.relative_position_bias.relative_position_bias_table 9 1
swin.encoder.layers.0.blocks.0.attention.q_proj.weight 8 8
swin.encoder.layers.0.blocks.0.attention.q_proj.bias 8
swin.encoder.layers.0.blocks.0.attention.k_proj.weight 8 8
swin.encoder.layers.0.blocks.0.attention.k_proj.bias 8
swin.encoder.layers.0.blocks.0.attention.v_proj.weight 8 8
swin.encoder.layers.0.blocks.0.attention.v_proj.bias 8
swin.encoder.layers.0.blocks.0.attention.o_proj.weight 8 8
swin.encoder.layers.0.blocks.0.attention.o_proj.bias 8
swin.encoder.layers.0.blocks.0.layernorm_after.weight 8
swin.encoder.layers.0.blocks.0.layernorm_after.bias 8
swin.encoder.layers.0.blocks.0.mlp.fc1.weight 32 8
swin.encoder.layers.0.blocks.0.mlp.fc1.bias 32
swin.encoder.layers.0.blocks.0.mlp.fc2.weight 8 32
swin.encoder.layers.0.blocks.0.mlp.fc2.bias 8
swin.encoder.layers.0.downsample.reduction.weight 16 32
swin.encoder.layers.0.downsample.norm.weight 32
swin.encoder.layers.0.downsample.norm.bias 32
swin.encoder.layers.1.blocks.0.layernorm_before.weight 16
swin.encoder.layers.1.blocks.0.layernorm_before.bias 16
swin.encoder.layers.1.blocks.0.attention.relative_position_bias.relative_position_bias_table 9 2
swin.encoder.layers.1.blocks.0.attention.q_proj.weight 16 16
swin.encoder.layers.1.blocks.0.attention.q_proj.bias 16
swin.encoder.layers.1.blocks.0.attention.k_proj.weight 16 16
swin.encoder.layers.1.blocks.0.attention.k_proj.bias 16
swin.encoder.layers.1.blocks.0.attention.v_proj.weight 16 16
swin.encoder.layers.1.blocks.0.attention.v_proj.bias 16
swin.encoder.layers.1.blocks.0.attention.o_proj.weight 16 16
swin.encoder.layers.1.blocks.0.attention.o_proj.bias 16
swin.encoder.layers.1.blocks.0.layernorm_after.weight 16
swin.encoder.layers.1.blocks.0.layernorm_after.bias 16
swin.encoder.layers.1.blocks.0.mlp.fc1.weight 64 16
swin.encoder.layers.1.blocks.0.mlp.fc1.bias 64
swin.encoder.layers.1.blocks.0.mlp.fc2.weight 16 64
swin.encoder.layers.1.blocks.0.mlp.fc2.bias 16
swin.layernorm.weight 16
swin.layernorm.bias 16
classifier.weight 3 16
classifier.bias 3
"""
V2_5X = """
swinv2.embeddings.patch_embeddings.projection.weight 8 3 4 4
swinv2.embeddings.patch_embeddings.projection.bias 8
swinv2.embeddings.norm.weight 8
swinv2.embeddings.norm.bias 8
swinv2.encoder.layers.0.blocks.0.attention.logit_scale 1 1 1
swinv2.encoder.layers.0.blocks.0.attention.continuous_position_bias_mlp.0.weight 512 2
swinv2.encoder.layers.0.blocks.0.attention.continuous_position_bias_mlp.0.bias 512
swinv2.encoder.layers.0.blocks.0.attention.continuous_position_bias_mlp.2.weight 1 512
swinv2.encoder.layers.0.blocks.0.attention.q_proj.weight 8 8
swinv2.encoder.layers.0.blocks.0.attention.q_proj.bias 8
swinv2.encoder.layers.0.blocks.0.attention.k_proj.weight 8 8
swinv2.encoder.layers.0.blocks.0.attention.v_proj.weight 8 8
swinv2.encoder.layers.0.blocks.0.attention.v_proj.bias 8
swinv2.encoder.layers.0.blocks.0.attention.o_proj.weight 8 8
swinv2.encoder.layers.0.blocks.0.attention.o_proj.bias 8
swinv2.encoder.layers.0.blocks.0.layernorm_before.weight 8
swinv2.encoder.layers.0.blocks.0.layernorm_before.bias 8
swinv2.encoder.layers.0.blocks.0.mlp.fc1.weight 32 8
swinv2.encoder.layers.0.blocks.0.mlp.fc1.bias 32
swinv2.encoder.layers.0.blocks.0.mlp.fc2.weight 8 32
swinv2.encoder.layers.0.blocks.0.mlp.fc2.bias 8
swinv2.encoder.layers.0.blocks.0.layernorm_after.weight 8
swinv2.encoder.layers.0.blocks.0.layernorm_after.bias 8
swinv2.encoder.layers.0.downsample.reduction.weight 16 32
swinv2.encoder.layers.0.downsample.norm.weight 16
swinv2.encoder.layers.0.downsample.norm.bias 16
swinv2.encoder.layers.1.blocks.0.attention.logit_scale 2 1 1
swinv2.encoder.layers.1.blocks.0.attention.continuous_position_bias_mlp.0.weight 512 2
swinv2.encoder.layers.1.blocks.0.attention.continuous_position_bias_mlp.0.bias 512
swinv2.encoder.layers.1.blocks.0.attention.continuous_position_bias_mlp.2.weight 2 512
swinv2.encoder.layers.1.blocks.0.attention.q_proj.weight 16 16
swinv2.encoder.layers.1.blocks.0.attention.q_proj.bias 16
swinv2.encoder.layers.1.blocks.0.attention.k_proj.weight 16 16
swinv2.encoder.layers.1.blocks.0.attention.v_proj.weight 16 16
swinv2.encoder.layers.1.blocks.0.attention.v_proj.bias 16
swinv2.encoder.layers.1.blocks.0.attention.o_proj.weight 16 16
swinv2.encoder.layers.1.blocks.0.attention.o_proj.bias 16
swinv2.encoder.layers.1.blocks.0.layernorm_before.weight 16
swinv2.encoder.layers.1.blocks.0.layernorm_before.bias 16
swinv2.encoder.layers.1.blocks.0.mlp.fc1.weight 64 16
swinv2.encoder.layers.1.blocks.0.mlp.fc1.bias 64
swinv2.encoder.layers.1.blocks.0.mlp.fc2.weight 16 64
swinv2.encoder.layers.1.blocks.0.mlp.fc2.bias 16
swinv2.encoder.layers.1.blocks.0.layernorm_after.weight 16
swinv2.encoder.layers.1.blocks.0.layernorm_after.bias 16
swinv2.layernorm.weight 16
swinv2.layernorm.bias 16
classifier.weight 3 16
classifier.bias 3
"""
# the 4.x -> 5.x renames, written out independently of converters.hf (order matters: attention.output first)
RENAMES = [
    ("attention.self.query.", "attention.q_proj."), ("attention.self.key.", "attention.k_proj."),
    ("attention.self.value.", "attention.v_proj."), ("attention.output.dense.", "attention.o_proj."),
    ("attention.self.relative_position_bias_table", "attention.relative_position_bias.relative_position_bias_table"),
    ("attention.self.logit_scale", "attention.logit_scale"),
    ("attention.self.continuous_position_bias_mlp.", "attention.continuous_position_bias_mlp."),
    ("intermediate.dense.", "mlp.fc1."), ("output.dense.", "mlp.fc2."),
]
TINY = dict(img_size=16, patch_size=4, embed_dim=8, depths=(1, 1), num_heads=(1, 2), window_size=2,
            pretrained_window_sizes=(0, 0), num_classes=3)


def recorded(text: str) -> dict[str, tuple]:
    out = {}
    for line in text.strip().splitlines():
        key, *shape = line.split()
        out[key] = tuple(int(s) for s in shape)
    return out


def rename_5x(key: str) -> str:
    for old, new in RENAMES:
        if old in key:
            return key.replace(old, new)
    return key


@pytest.mark.parametrize("version,text", [(1, V1_5X), (2, V2_5X)])
def test_recorded_5x_keys_map_to_canonical(version, text):
    shapes = recorded(text)
    sd = {k: torch.randn(s) for k, s in shapes.items()}
    assert hf.layout_of(sd) == (version, "5")
    canonical = hf.to_canonical(sd)
    cfg = SwinConfig(version=version, **TINY)
    assert {k: tuple(v.shape) for k, v in canonical.items()} == parameter_shapes(cfg)
    prefix = "swinv2" if version == 2 else "swin"
    q = sd[f"{prefix}.encoder.layers.1.blocks.0.attention.q_proj.weight"]
    qkv = canonical["layers.1.blocks.0.attn.qkv.weight"]
    assert torch.equal(qkv[:16], q)
    # and back: writing the 5.x layout gives exactly the recorded keys and shapes
    back = hf.from_canonical(canonical, version, layout="5")
    assert {k: tuple(v.shape) for k, v in back.items()} == shapes


@pytest.mark.parametrize("version", [1, 2])
def test_5x_layout_of_a_real_model_gives_its_logits(version):
    """A transformers 4.x model's tensors under the 5.x names: swinzoo computes the same logits."""
    transformers = pytest.importorskip("transformers")
    kwargs = dict(image_size=16, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=2,
                  num_labels=3)
    if version == 2:
        model = transformers.Swinv2ForImageClassification(transformers.Swinv2Config(**kwargs))
    else:
        model = transformers.SwinForImageClassification(transformers.SwinConfig(**kwargs))
    randomize(model).double().eval()
    sd5 = {rename_5x(k): v for k, v in model.state_dict().items() if not k.endswith("relative_position_index")}
    assert {k: tuple(v.shape) for k, v in sd5.items()} == recorded(V2_5X if version == 2 else V1_5X)
    ours = SwinTransformer(SwinConfig(version=version, **TINY)).double().eval()
    ours.load_state_dict(hf.to_canonical(sd5), strict=True)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        assert_logits_close(ours(x), model(x).logits)
