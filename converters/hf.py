"""Hugging Face transformers Swin / Swinv2 (`SwinForImageClassification`, `Swinv2ForImageClassification`, and
the headless `SwinModel`) <-> canonical keys.

transformers splits qkv into `attention.self.{query,key,value}` and names the rest `attention.output.dense`,
`intermediate.dense`, `output.dense`; Swin V1 keeps a persistent `relative_position_index` (dropped on read,
written on export). transformers 4.x and 5.x both save and load this layout. `config.json` (`model_type` swin /
swinv2) maps to `SwinConfig` and back.

Script: `python -m swinzoo.converters hf SRC_DIR OUT.safetensors` or
`python -m swinzoo.converters hf --export SRC.safetensors OUT_DIR`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from swinzoo.config import IMAGENET_MEAN, IMAGENET_STD, SwinConfig
from swinzoo.converters.common import (
    Checkpoint,
    Format,
    KeyMap,
    build_config,
    default_class_names,
    first_keys,
    geometry_args,
    read_config_json,
    read_weights,
    weights_in_folder,
    write_model_folder,
)
from swinzoo.errors import SwinzooError
from swinzoo.models.layers import relative_position_index

_B = "swin.encoder.layers.{s}.blocks.{b}."
# canonical (official) -> transformers, V1 ("swin." prefix; V2 uses "swinv2.")
TABLE_V1 = {
    "patch_embed.proj.{p}": "swin.embeddings.patch_embeddings.projection.{p}",
    "patch_embed.norm.{p}": "swin.embeddings.norm.{p}",
    "layers.{s}.blocks.{b}.norm1.{p}": _B + "layernorm_before.{p}",
    "layers.{s}.blocks.{b}.attn.qkv.{p}": (_B + "attention.self.query.{p}", _B + "attention.self.key.{p}",
                                           _B + "attention.self.value.{p}"),
    "layers.{s}.blocks.{b}.attn.relative_position_bias_table": _B + "attention.self.relative_position_bias_table",
    "layers.{s}.blocks.{b}.attn.proj.{p}": _B + "attention.output.dense.{p}",
    "layers.{s}.blocks.{b}.norm2.{p}": _B + "layernorm_after.{p}",
    "layers.{s}.blocks.{b}.mlp.fc1.{p}": _B + "intermediate.dense.{p}",
    "layers.{s}.blocks.{b}.mlp.fc2.{p}": _B + "output.dense.{p}",
    "layers.{s}.downsample.reduction.weight": "swin.encoder.layers.{s}.downsample.reduction.weight",
    "layers.{s}.downsample.norm.{p}": "swin.encoder.layers.{s}.downsample.norm.{p}",
    "norm.{p}": "swin.layernorm.{p}",
    "head.{p}": "classifier.{p}",
}
# V2: no q/k/v bias in qkv (a separate q and v bias, key has none), a logit scale and the CPB MLP, no bias table
TABLE_V2 = {k: v for k, v in TABLE_V1.items() if ".attn.qkv." not in k and "bias_table" not in k}
TABLE_V2.update({
    "layers.{s}.blocks.{b}.attn.qkv.weight": (_B + "attention.self.query.weight", _B + "attention.self.key.weight",
                                              _B + "attention.self.value.weight"),
    "layers.{s}.blocks.{b}.attn.q_bias": _B + "attention.self.query.bias",
    "layers.{s}.blocks.{b}.attn.v_bias": _B + "attention.self.value.bias",
    "layers.{s}.blocks.{b}.attn.logit_scale": _B + "attention.self.logit_scale",
    "layers.{s}.blocks.{b}.attn.cpb_mlp.0.{p}": _B + "attention.self.continuous_position_bias_mlp.0.{p}",
    "layers.{s}.blocks.{b}.attn.cpb_mlp.2.weight": _B + "attention.self.continuous_position_bias_mlp.2.weight",
})
TABLE_V2 = {k: (tuple(t.replace("swin.", "swinv2.", 1) for t in v) if isinstance(v, tuple)
                else v.replace("swin.", "swinv2.", 1)) for k, v in TABLE_V2.items()}
KEYS = {1: KeyMap(TABLE_V1, "transformers"), 2: KeyMap(TABLE_V2, "transformers")}
MODEL_TYPES = {"swin": 1, "swinv2": 2}


def looks_hf(sd: dict) -> bool:
    return any(k.startswith(("swin.embeddings.", "swinv2.embeddings.", "embeddings.patch_embeddings.")) for k in sd)


def to_canonical(sd: dict[str, torch.Tensor], source: str = "transformers state dict") -> dict[str, torch.Tensor]:
    if not looks_hf(sd):
        raise SwinzooError(f"{source} is not a transformers Swin state dict (expected swin.embeddings.* or "
                           f"swinv2.embeddings.*; first keys seen: {first_keys(sd)})")
    version = 2 if any("logit_scale" in k for k in sd) else 1
    prefix = "swinv2." if version == 2 else "swin."
    if any(k.startswith("embeddings.") for k in sd):  # a headless SwinModel saves without the prefix
        sd = {(k if k.startswith("classifier.") else prefix + k): v for k, v in sd.items()}
    return KEYS[version].to_canonical(sd, source)


def from_canonical(sd: dict[str, torch.Tensor], version: int) -> dict[str, torch.Tensor]:
    if "absolute_pos_embed" in sd:
        raise SwinzooError("transformers' absolute position embedding has an extra slot swinzoo does not model; "
                           "export this model as official")
    return KEYS[version].to_foreign(sd)


def buffers(cfg: SwinConfig) -> dict[str, torch.Tensor]:
    """The persistent buffer a transformers Swin V1 keeps (and the microsoft/swin-* repos ship): the index."""
    if cfg.version == 2:
        return {}  # Swinv2's buffers are non-persistent
    return {f"swin.encoder.layers.{i}.blocks.{j}.attention.self.relative_position_index":
            relative_position_index(cfg.stage_window(i)) for i in range(cfg.num_stages) for j in range(cfg.depths[i])}


# ---------------------------------------------------------------------------------------------- config
def config_from_hf(d: dict, source: str = "config.json") -> dict:
    """SwinConfig fields (geometry and class names) of an HF config.json; another model type is an error."""
    model_type = d.get("model_type")
    if model_type not in MODEL_TYPES:
        raise SwinzooError(f"{source} is a {model_type!r} model, not Swin; expected model_type 'swin' or 'swinv2'")
    if d.get("use_absolute_embeddings"):
        raise SwinzooError(f"{source}: use_absolute_embeddings is not supported (no released Swin uses it)")
    if d.get("hidden_act", "gelu") != "gelu":
        raise SwinzooError(f"{source}: hidden_act {d['hidden_act']!r}; swinzoo models use exact GELU ('gelu')")
    labels = d.get("id2label") or {}
    names = [labels.get(str(i), labels.get(i)) for i in range(len(labels))]
    return dict(version=MODEL_TYPES[model_type], img_size=int(d.get("image_size", 224)),
                window_size=int(d.get("window_size", 7)),
                pretrained_window_sizes=tuple(d.get("pretrained_window_sizes") or ()) or None,
                class_names=default_class_names(names) if None not in names else None)


def config_to_hf(cfg: SwinConfig) -> dict:
    """An HF config.json (SwinConfig / Swinv2Config fields) for `cfg`."""
    if cfg.ape or not cfg.patch_norm:
        raise SwinzooError("transformers' Swin always normalises the patch embedding and its absolute position "
                           "embedding differs; export this model as official")
    if cfg.version == 1 and any(cfg.stage_resolution(i) < cfg.window_size for i in range(cfg.num_stages)):
        raise SwinzooError(f"transformers' Swin V1 sizes every bias table for window {cfg.window_size}, but a stage "
                           f"of this {cfg.img_size} px model is smaller than that; export it as timm or official")
    names = cfg.class_names or [f"LABEL_{i}" for i in range(cfg.num_classes)]
    out = {
        "architectures": ["Swinv2ForImageClassification" if cfg.version == 2 else "SwinForImageClassification"],
        "model_type": "swinv2" if cfg.version == 2 else "swin",
        "image_size": cfg.img_size, "patch_size": cfg.patch_size, "num_channels": cfg.in_chans,
        "embed_dim": cfg.embed_dim, "depths": list(cfg.depths), "num_heads": list(cfg.num_heads),
        "window_size": cfg.window_size, "mlp_ratio": cfg.mlp_ratio, "qkv_bias": cfg.qkv_bias,
        "hidden_act": "gelu", "hidden_dropout_prob": cfg.drop_rate, "attention_probs_dropout_prob": 0.0,
        "drop_path_rate": cfg.drop_path_rate, "use_absolute_embeddings": False, "initializer_range": 0.02,
        "layer_norm_eps": 1e-5, "encoder_stride": 32,
        "id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)},
    }
    if cfg.version == 2:
        out["pretrained_window_sizes"] = list(cfg.pretrained_window_sizes)
    return out


def preprocessor_config(cfg: SwinConfig) -> dict:
    """What the microsoft/swin* repos ship: a direct bicubic resize to the model's size, ImageNet statistics."""
    return {"image_processor_type": "ViTImageProcessor", "do_resize": True, "do_rescale": True,
            "do_normalize": True, "size": {"height": cfg.img_size, "width": cfg.img_size}, "resample": 3,
            "rescale_factor": 1 / 255, "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}


# ---------------------------------------------------------------------------------------------- files
def read(path: str | Path, arch: SwinConfig | None = None, arch_name: str = "", trust_checkpoint: bool = False,
         raw: dict | None = None) -> Checkpoint:
    """An HF model folder (config.json + model.safetensors or pytorch_model.bin), or a bare weight file."""
    path = Path(path)
    fields = None
    if path.is_dir():
        fields = config_from_hf(read_config_json(path), str(path / "config.json"))
        path = weights_in_folder(path)
    sd = to_canonical((raw if raw is not None else read_weights(path, trust_checkpoint)), str(path))
    if arch is not None:
        return Checkpoint(sd, build_config(sd, str(path), arch=arch, arch_name=arch_name))
    if fields is None:
        return Checkpoint(sd, build_config(sd, str(path)))
    version = 2 if "layers.0.blocks.0.attn.logit_scale" in sd else 1
    if version != fields["version"]:
        raise SwinzooError(f"{path}: config.json says Swin V{fields['version']} but the weights are V{version}")
    return Checkpoint(sd, build_config(sd, str(path), **geometry_args(fields), class_names=fields["class_names"]))


def write_hf_folder(state_dict: dict[str, torch.Tensor], config: SwinConfig, out_dir: str | Path,
                    overwrite: bool = False) -> Path:
    """Canonical weights -> an HF folder (config.json, preprocessor_config.json, model.safetensors)."""
    cfg_json = config_to_hf(config)
    tensors = from_canonical(state_dict, config.version)
    tensors.update(buffers(config))  # so transformers loads it without "newly initialized" warnings
    return write_model_folder(out_dir, tensors, {"config.json": cfg_json,
                                                 "preprocessor_config.json": preprocessor_config(config)}, overwrite)


def write(checkpoint: Checkpoint, out: str | Path, *, allow_numeric_change: bool = False,
          overwrite: bool = False) -> str:
    write_hf_folder(checkpoint.state_dict, checkpoint.config, out, overwrite=overwrite)
    return f'transformers.AutoModelForImageClassification.from_pretrained("{out}")'


FORMAT = Format("hf", "Hugging Face transformers folder (config.json + model.safetensors)", read, write,
                claims_folder=lambda folder, cfg: cfg is not None and "model_type" in cfg,
                claims_keys=looks_hf)
