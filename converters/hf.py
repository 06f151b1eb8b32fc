"""Hugging Face transformers Swin / Swinv2 (`SwinForImageClassification`, `Swinv2ForImageClassification`, and
the headless `SwinModel`) <-> canonical keys, in both key layouts:

- 4.x (every `microsoft/swin*` Hub repo; what transformers 4 loads): q, k, v split into
  `attention.self.{query,key,value}`, `attention.output.dense`, `intermediate.dense`, `output.dense`, and a
  persistent `relative_position_index` (dropped on read);
- 5.x (the transformers 5 refactor): `attention.{q,k,v,o}_proj`,
  `attention.relative_position_bias.relative_position_bias_table`, `mlp.fc1/fc2`.

Reading accepts both; writing produces 4.x, which the installed transformers 4 loads (transformers 5 converts
4.x keys on load). `config.json` (`model_type` swin / swinv2) maps to `SwinConfig` and back.

Run as a script: `python -m converters.hf SRC_DIR OUT.safetensors` or
`python -m converters.hf --export SRC.safetensors OUT_DIR`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from converters.common import (
    KeyMap,
    atomic_dir,
    build_config,
    default_class_names,
    first_keys,
    read_config_json,
    read_weights,
    script_main,
    weights_in_folder,
)
from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError

_B = "swin.encoder.layers.{s}.blocks.{b}."
# canonical (official) -> transformers 4.x, V1 ("swin." prefix; V2 uses "swinv2.")
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
# 4.x -> 5.x renames, in order (`attention.output.dense` before the MLP's `output.dense`)
RENAMES_5X = (
    ("attention.self.query.", "attention.q_proj."),
    ("attention.self.key.", "attention.k_proj."),
    ("attention.self.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
    ("attention.self.relative_position_bias_table", "attention.relative_position_bias.relative_position_bias_table"),
    ("attention.self.logit_scale", "attention.logit_scale"),
    ("attention.self.continuous_position_bias_mlp.", "attention.continuous_position_bias_mlp."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
)


def _to_5x(template: str) -> str:
    for old, new in RENAMES_5X:
        if old in template:
            return template.replace(old, new)
    return template


def _table_5x(table: dict) -> dict:
    return {k: tuple(_to_5x(t) for t in v) if isinstance(v, tuple) else _to_5x(v) for k, v in table.items()}


KEYS = {(1, "4"): KeyMap(TABLE_V1, "transformers 4.x"), (2, "4"): KeyMap(TABLE_V2, "transformers 4.x"),
        (1, "5"): KeyMap(_table_5x(TABLE_V1), "transformers 5.x"),
        (2, "5"): KeyMap(_table_5x(TABLE_V2), "transformers 5.x")}
MODEL_TYPES = {"swin": 1, "swinv2": 2}


def looks_hf(sd: dict) -> bool:
    return any(k.startswith(("swin.embeddings.", "swinv2.embeddings.", "embeddings.patch_embeddings.")) for k in sd)


def layout_of(sd: dict) -> tuple[int, str]:
    """(version, "4" | "5") of an HF Swin state dict."""
    version = 2 if any("logit_scale" in k for k in sd) else 1
    return version, "5" if any(".q_proj." in k for k in sd) else "4"


def to_canonical(sd: dict[str, torch.Tensor], source: str = "transformers state dict") -> dict[str, torch.Tensor]:
    if not looks_hf(sd):
        raise SwinzooError(f"{source} is not a transformers Swin state dict (expected swin.embeddings.* or "
                           f"swinv2.embeddings.*; first keys seen: {first_keys(sd)})")
    version, layout = layout_of(sd)
    prefix = "swinv2." if version == 2 else "swin."
    if any(k.startswith("embeddings.") for k in sd):  # a headless SwinModel saves without the prefix
        sd = {(k if k.startswith("classifier.") else prefix + k): v for k, v in sd.items()}
    return KEYS[version, layout].to_canonical(sd, source)


def from_canonical(sd: dict[str, torch.Tensor], version: int, layout: str = "4") -> dict[str, torch.Tensor]:
    if "absolute_pos_embed" in sd:
        raise SwinzooError("transformers' absolute position embedding has an extra slot swinzoo does not model; "
                           "export this model as official")
    return KEYS[version, layout].to_foreign(sd)


def buffers(cfg: SwinConfig) -> dict[str, torch.Tensor]:
    """The persistent buffer a transformers 4.x Swin V1 keeps (and the microsoft/swin-* repos ship): the index."""
    if cfg.version == 2:
        return {}  # Swinv2's buffers are non-persistent
    from swinzoo.models.layers import relative_position_index

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
            "rescale_factor": 1 / 255, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


# ---------------------------------------------------------------------------------------------- files
def read_hf(path: str | Path, arch: SwinConfig | None = None, arch_name: str = "",
            trust_checkpoint: bool = False, raw: dict | None = None) -> tuple[dict[str, torch.Tensor], SwinConfig]:
    """An HF model folder (config.json + model.safetensors or pytorch_model.bin), or a bare weight file."""
    from converters.timm import geometry_args

    path = Path(path)
    fields = None
    if path.is_dir():
        fields = config_from_hf(read_config_json(path), str(path / "config.json"))
        path = weights_in_folder(path)
    sd = to_canonical((raw if raw is not None else read_weights(path, trust_checkpoint)), str(path))
    if arch is not None:
        return sd, build_config(sd, str(path), arch=arch, arch_name=arch_name)
    if fields is None:
        return sd, build_config(sd, str(path))
    version = 2 if "layers.0.blocks.0.attn.logit_scale" in sd else 1
    if version != fields["version"]:
        raise SwinzooError(f"{path}: config.json says Swin V{fields['version']} but the weights are V{version}")
    return sd, build_config(sd, str(path), **geometry_args(fields), class_names=fields["class_names"])


def write_hf_folder(state_dict: dict[str, torch.Tensor], config: SwinConfig, out_dir: str | Path) -> Path:
    """Canonical weights -> an HF folder (config.json, preprocessor_config.json, model.safetensors, 4.x keys)."""
    from safetensors.torch import save_file

    cfg_json = config_to_hf(config)
    tensors = {k: v.detach().contiguous().cpu() for k, v in from_canonical(state_dict, config.version).items()}
    tensors.update(buffers(config))  # so transformers 4 loads it without "newly initialized" warnings
    with atomic_dir(out_dir) as tmp:
        (tmp / "config.json").write_text(json.dumps(cfg_json, indent=2) + "\n")
        (tmp / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(config), indent=2) + "\n")
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    return Path(out_dir)


def main(argv: list[str] | None = None) -> None:
    script_main("hf", "transformers Swin/Swinv2 folder <-> swinzoo .safetensors", read_hf,
                lambda sd, cfg, out, _: write_hf_folder(sd, cfg, out), argv)


if __name__ == "__main__":
    main()
