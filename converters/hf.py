"""Hugging Face transformers Swin / Swinv2 (`SwinForImageClassification`, `Swinv2ForImageClassification`, and
the headless `SwinModel`) <-> canonical keys; the `...ForMaskedImageModeling` SimMIM models <-> a canonical SimMIM
checkpoint, by the same encoder tables (the MIM parts are in `hf_mim`).

transformers splits qkv into `attention.self.{query,key,value}` and names the rest `attention.output.dense`,
`intermediate.dense`, `output.dense`; Swin V1 keeps a persistent `relative_position_index` (dropped on read,
written on export). transformers 4.x and 5.x both save and load this layout. `config.json` (`model_type` swin /
swinv2) maps to `SwinConfig` and back, and `preprocessor_config.json` to the model's eval preprocessing (see
`preprocessor_config`).

Script: `python -m swinzoo.converters hf SRC_DIR OUT.safetensors` or
`python -m swinzoo.converters hf --export SRC.safetensors OUT_DIR`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from swinzoo.config import SwinConfig
from swinzoo.converters import hf_mim
from swinzoo.converters.common import (
    Checkpoint,
    Format,
    KeyMap,
    build_config,
    default_class_names,
    first_keys,
    geometry_args,
    rate_args,
    read_weights,
)
from swinzoo.converters.folders import config_kind, read_config_json, weights_in_folder, write_model_folder
from swinzoo.converters.simmim import is_simmim
from swinzoo.errors import SwinzooError
from swinzoo.io import read_small_text
from swinzoo.models.layers import relative_position_index
from swinzoo.preprocess import NO_CROP_FROM, Preprocess

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
    """SwinConfig fields (geometry, class names, dropout rates) of an HF config.json; another model type is an
    error."""
    model_type = d.get("model_type")
    if model_type is None:
        hint = " (it names a timm architecture: read it with --from-format timm or auto)" if "architecture" in d else ""
        raise SwinzooError(f"{source} has no model_type, so it is not a transformers config{hint}; expected "
                           "model_type 'swin' or 'swinv2'")
    if model_type not in MODEL_TYPES:
        raise SwinzooError(f"{source} is a {model_type!r} model, not Swin; expected model_type 'swin' or 'swinv2'")
    if d.get("use_absolute_embeddings"):
        raise SwinzooError(f"{source}: use_absolute_embeddings is not supported (no released Swin uses it)")
    if d.get("hidden_act", "gelu") != "gelu":
        raise SwinzooError(f"{source}: hidden_act {d['hidden_act']!r}; swinzoo models use exact GELU ('gelu')")
    sizes = {key: d.get(key, default) for key, default in (("image_size", 224), ("window_size", 7))}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v == int(v) for v in sizes.values()):
        raise SwinzooError(f"{source}: image_size and window_size must be whole numbers, got "
                           f"{sizes['image_size']!r} and {sizes['window_size']!r}; fix the file")
    labels = d.get("id2label") or {}
    names = [labels.get(str(i), labels.get(i)) for i in range(len(labels))]
    return dict(version=MODEL_TYPES[model_type], img_size=int(sizes["image_size"]),
                window_size=int(sizes["window_size"]),
                pretrained_window_sizes=tuple(d.get("pretrained_window_sizes") or ()) or None,
                class_names=default_class_names(names) if None not in names else None,
                drop_path_rate=d.get("drop_path_rate"), drop_rate=d.get("hidden_dropout_prob"))


def config_to_hf(cfg: SwinConfig, instead: str | None = None) -> dict:
    """An HF config.json (SwinConfig / Swinv2Config fields) for `cfg`. `instead`: the export a refusal points to
    (default: the classifier formats that hold the model)."""
    if cfg.ape or not cfg.patch_norm:
        raise SwinzooError("transformers' Swin always normalises the patch embedding and its absolute position "
                           f"embedding differs; {instead or 'export this model as official'}")
    if cfg.version == 1 and any(cfg.stage_resolution(i) < cfg.window_size for i in range(cfg.num_stages)):
        raise SwinzooError(f"transformers' Swin V1 sizes every bias table for window {cfg.window_size}, but a stage "
                           f"of this {cfg.img_size} px model is smaller than that; "
                           f"{instead or 'export it as timm or official'}")
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


# PIL's filter numbers, which transformers stores as `resample`
RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


def preprocessor_config(cfg: SwinConfig) -> dict:
    """The model's eval preprocessing (`Preprocess.of`) as an image processor `AutoImageProcessor` loads.

    ConvNextImageProcessor is the official Swin rule itself: with size {"shortest_edge": res} it resizes the shorter
    edge to int(res / crop_pct) and center crops below 384 px, and resizes to res x res from 384. A model whose
    preprocessing is not that shape (a crop from 384 px, a squash below it) gets BitImageProcessor (resize, center
    crop) or ViTImageProcessor (resize only). All resize with PIL, as swinzoo and timm do; transformers' center crop
    rounds an odd margin down where torchvision rounds half to even, so a few image sizes come out 1 px shifted.
    """
    p, res = Preprocess.of(cfg), cfg.img_size
    # do_convert_rgb: swinzoo, timm and the official code convert every image to RGB; without it transformers' fast
    # processors read a palette image's indices as grey levels
    out = {"do_resize": True, "resample": RESAMPLE[p.interpolation], "do_rescale": True, "rescale_factor": 1 / 255,
           "do_normalize": True, "image_mean": list(p.mean), "image_std": list(p.std), "do_convert_rgb": True}
    scale = p.scale_size(res)
    if (p.crop_mode == "center") == (res < NO_CROP_FROM) and (p.crop_mode == "center" or scale == res):
        return {"image_processor_type": "ConvNextImageProcessor", **out, "size": {"shortest_edge": res},
                "crop_pct": p.crop_pct}
    if p.crop_mode == "squash" and scale == res:
        return {"image_processor_type": "ViTImageProcessor", **out, "size": {"height": res, "width": res}}
    size = {"shortest_edge": scale} if p.crop_mode == "center" else {"height": scale, "width": scale}
    # crop_pct is no Bit setting (transformers keeps it as an unused attribute): it makes a read-back exact
    return {"image_processor_type": "BitImageProcessor", **out, "size": size, "do_center_crop": True,
            "crop_size": {"height": res, "width": res}, "crop_pct": p.crop_pct}


def preprocess_from_hf(d: dict, img_size: int) -> dict | None:
    """`SwinConfig.preprocess` of a preprocessor_config.json, or None when it is the official rule or something
    a swinzoo transform cannot reproduce (no resize or rescale, another output size, an unknown processor): the
    weights still load, with the official preprocessing."""
    kind = str(d.get("image_processor_type") or d.get("feature_extractor_type") or "")
    if not d.get("do_resize", True) or not d.get("do_rescale", True) or not d.get("do_normalize", True) \
            or abs(float(d.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        return None
    names = {v: k for k, v in RESAMPLE.items()}
    fields = {"mean": d.get("image_mean"), "std": d.get("image_std"), "interpolation": names.get(d.get("resample"))}
    size = d.get("size")
    if isinstance(size, int):  # the feature-extractor era's plain number
        size = {"shortest_edge": size} if kind.startswith("ConvNext") else {"height": size, "width": size}
    size = _square(size)
    crop = _square(d.get("crop_size")) if d.get("do_center_crop") else None
    if kind.startswith("ConvNext") and size == ("shortest_edge", img_size):
        below = img_size < NO_CROP_FROM  # ConvNext crops below 384 px only, by crop_pct (default 224 / 256)
        fields.update(crop_pct=float(d.get("crop_pct") or 224 / 256) if below else 1.0,
                      crop_mode="center" if below else "squash")
    elif kind.startswith(("ViT", "Bit", "CLIP", "DeiT")) and size and (crop or size)[1] == img_size:
        fields.update(crop_pct=_crop_pct(img_size, size[1], d.get("crop_pct")),
                      crop_mode="center" if size[0] == "shortest_edge" else "squash")
    else:
        return None
    return Preprocess(**{k: v for k, v in fields.items() if v is not None}).overrides(img_size)


def _square(size) -> tuple[str, int] | None:
    """("shortest_edge", n) or ("square", n) of a transformers size dict; None for anything else."""
    if not isinstance(size, dict):
        return None
    if isinstance(size.get("shortest_edge"), int):
        return "shortest_edge", size["shortest_edge"]
    if isinstance(size.get("height"), int) and size.get("height") == size.get("width"):
        return "square", size["height"]
    return None


def _crop_pct(img_size: int, side: int, stated=None) -> float:
    """crop_pct with floor(img_size / crop_pct) == side: `stated` (what swinzoo wrote) when it gives that side, else
    img_size / side, nudged down when that lands a hair below `side`."""
    if isinstance(stated, (int, float)) and 0 < stated <= 1 and math.floor(img_size / stated) == side:
        return float(stated)
    pct = img_size / side
    while pct > 0 and img_size / pct < side:
        pct = math.nextafter(pct, 0)
    return pct


# ---------------------------------------------------------------------------------------------- files
def read(path: str | Path, arch: SwinConfig | None = None, arch_name: str = "", trust_checkpoint: bool = False,
         raw: dict | None = None) -> Checkpoint:
    """An HF model folder (config.json + model.safetensors or pytorch_model.bin), or a bare weight file. A
    MaskedImageModeling model (config.json's architectures, or a mask token / decoder in the weights) reads as a
    canonical SimMIM checkpoint (see `hf_mim`)."""
    path = Path(path)
    fields, mim = None, False
    if path.is_dir():
        config_json = read_config_json(path)
        fields = config_from_hf(config_json, str(path / "config.json"))
        fields["preprocess"] = read_preprocessor_config(path, fields["img_size"])
        mim = hf_mim.says_mim(config_json)
        path = weights_in_folder(path)
    raw = raw if raw is not None else read_weights(path, trust_checkpoint)
    return from_weights(raw, fields, mim, str(path), arch, arch_name)


def from_weights(raw: dict, fields: dict | None, mim: bool, source: str, arch: SwinConfig | None = None,
                 arch_name: str = "") -> Checkpoint:
    """Weights in transformers' keys, with the `config_from_hf` fields of the config that describes them (None: the
    keys alone; `mim`: it names a ...ForMaskedImageModeling model); also a transformers model in memory."""
    if mim or hf_mim.looks_mim(raw):
        encoder, extras = hf_mim.split(raw, source)
        sd = to_canonical(encoder, source)
        return hf_mim.checkpoint(sd, extras, _config(sd, fields, source, arch, arch_name), source)
    sd = to_canonical(raw, source)
    return Checkpoint(sd, _config(sd, fields, source, arch, arch_name))


def _config(sd: dict[str, torch.Tensor], fields: dict | None, source: str, arch: SwinConfig | None,
            arch_name: str) -> SwinConfig:
    """The config of canonical weights: `--arch`, else the keys with what config.json (`fields`) said."""
    if arch is not None:
        return build_config(sd, source, arch=arch, arch_name=arch_name)
    if fields is None:
        return build_config(sd, source)
    version = 2 if "layers.0.blocks.0.attn.logit_scale" in sd else 1
    if version != fields["version"]:
        raise SwinzooError(f"{source}: config.json says Swin V{fields['version']} but the weights are V{version}")
    return build_config(sd, source, **geometry_args(fields), **rate_args(fields), class_names=fields["class_names"],
                        preprocess=fields["preprocess"])


def read_preprocessor_config(folder: Path, img_size: int) -> dict | None:
    """The preprocessing a folder's preprocessor_config.json states (see `preprocess_from_hf`); None (the official
    rule) without one or when it is unreadable: it never changes what the weights are, so it never stops a read."""
    path = folder / "preprocessor_config.json"
    try:
        d = json.loads(read_small_text(path)) if path.is_file() else None
        return preprocess_from_hf(d, img_size) if isinstance(d, dict) else None
    except (OSError, ValueError, TypeError, SwinzooError):  # unreadable, or values of the wrong type
        return None


def write_hf_folder(state_dict: dict[str, torch.Tensor], config: SwinConfig, out_dir: str | Path,
                    overwrite: bool = False) -> Path:
    """Canonical weights -> an HF folder (config.json, preprocessor_config.json, model.safetensors); a SimMIM
    state dict (`encoder.*`, `decoder.0.*`) -> a MaskedImageModeling folder."""
    mim = is_simmim(state_dict)
    # timm and official would drop a SimMIM model's mask token and decoder
    cfg_json = config_to_hf(config, "export this SimMIM model with --to simmim, which keeps the encoder, mask token "
                                    "and decoder" if mim else None)
    tensors = from_canonical(hf_mim.encoder_part(state_dict) if mim else state_dict, config.version)
    tensors.update(buffers(config))  # so transformers loads it without "newly initialized" warnings
    if mim:
        cfg_json = hf_mim.add_mim(cfg_json, tensors, state_dict, config)
    return write_model_folder(out_dir, tensors, {"config.json": cfg_json,
                                                 "preprocessor_config.json": preprocessor_config(config)}, overwrite)


def write(checkpoint: Checkpoint, out: str | Path, *, allow_numeric_change: bool = False,
          overwrite: bool = False) -> str:
    write_hf_folder(checkpoint.state_dict, checkpoint.config, out, overwrite=overwrite)
    auto = "MaskedImageModeling" if is_simmim(checkpoint.state_dict) else "ImageClassification"
    return f'transformers.AutoModelFor{auto}.from_pretrained("{out}")'


FORMAT = Format("hf", "Hugging Face transformers folder (config.json + model.safetensors)", read, write,
                claims_folder=lambda folder, cfg: config_kind(cfg) == "hf",
                claims_keys=looks_hf)
