"""timm Swin V1/V2 (`swin_transformer.py`, `swin_transformer_v2.py`, timm >= 0.9 layout) <-> canonical keys.

timm differs from the official layout in three ways: patch merging sits at the START of the next stage
(`layers.{s+1}.downsample`, stage 0 has none), the classifier is `head.fc`, and every buffer is non-persistent
(a timm state dict holds parameters only, so V2 weights do not reveal the window: it comes from config.json).
A timm Hub folder is `config.json` (`architecture`, `num_classes`, `model_args`, `pretrained_cfg`) +
`model.safetensors`; `write_timm_folder` writes one that `timm.create_model("local-dir:DIR", pretrained=True)`
and `hf-hub:` load, with non-zoo geometry carried by `model_args`.

Script: `python -m swinzoo.converters timm SRC OUT.safetensors` (SRC: a timm folder or weight file) or
`python -m swinzoo.converters timm --export SRC.safetensors OUT_DIR` (a swinzoo checkpoint -> a timm folder).
"""

from __future__ import annotations

from pathlib import Path

import torch

from swinzoo.config import SwinConfig, geometry_problem
from swinzoo.converters.common import (
    RATES,
    Checkpoint,
    Format,
    KeyMap,
    arch_from_keys,
    build_config,
    clamped_resolution,
    default_class_names,
    geometry_args,
    rate_args,
    read_weights,
)
from swinzoo.converters.folders import config_kind, read_config_json, weights_in_folder, write_model_folder
from swinzoo.errors import SwinzooError
from swinzoo.preprocess import Preprocess
from swinzoo.zoo import ARCHS as SIZES
from swinzoo.zoo import timm_archs

# canonical (official) -> timm; blocks keep their names
TABLE = {
    "patch_embed.proj.{p}": "patch_embed.proj.{p}",
    "patch_embed.norm.{p}": "patch_embed.norm.{p}",
    "layers.{s}.blocks.{b}.norm1.{p}": "layers.{s}.blocks.{b}.norm1.{p}",
    "layers.{s}.blocks.{b}.attn.qkv.{p}": "layers.{s}.blocks.{b}.attn.qkv.{p}",
    "layers.{s}.blocks.{b}.attn.relative_position_bias_table": (
        "layers.{s}.blocks.{b}.attn.relative_position_bias_table"),
    "layers.{s}.blocks.{b}.attn.q_bias": "layers.{s}.blocks.{b}.attn.q_bias",
    "layers.{s}.blocks.{b}.attn.v_bias": "layers.{s}.blocks.{b}.attn.v_bias",
    "layers.{s}.blocks.{b}.attn.logit_scale": "layers.{s}.blocks.{b}.attn.logit_scale",
    "layers.{s}.blocks.{b}.attn.cpb_mlp.0.{p}": "layers.{s}.blocks.{b}.attn.cpb_mlp.0.{p}",
    "layers.{s}.blocks.{b}.attn.cpb_mlp.2.weight": "layers.{s}.blocks.{b}.attn.cpb_mlp.2.weight",
    "layers.{s}.blocks.{b}.attn.proj.{p}": "layers.{s}.blocks.{b}.attn.proj.{p}",
    "layers.{s}.blocks.{b}.norm2.{p}": "layers.{s}.blocks.{b}.norm2.{p}",
    "layers.{s}.blocks.{b}.mlp.fc1.{p}": "layers.{s}.blocks.{b}.mlp.fc1.{p}",
    "layers.{s}.blocks.{b}.mlp.fc2.{p}": "layers.{s}.blocks.{b}.mlp.fc2.{p}",
    "layers.{s}.downsample.reduction.weight": "layers.{s1}.downsample.reduction.weight",  # end of s -> start of s+1
    "layers.{s}.downsample.norm.{p}": "layers.{s1}.downsample.norm.{p}",
    "norm.{p}": "norm.{p}",
    "head.{p}": "head.fc.{p}",
}
KEYS = KeyMap(TABLE, "timm")

# model_args swinzoo carries; others that change the network (act_layer, head_dim, always_partition, ...) are refused
GEOMETRY_ARGS = ("embed_dim", "depths", "num_heads", "img_size", "window_size", "pretrained_window_sizes",
                 "mlp_ratio", "qkv_bias", "patch_size", "in_chans")
HARMLESS_ARGS = ("num_classes", "global_pool", "drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate",
                 "strict_img_size", "dynamic_img_size", "weight_init")


def to_canonical(sd: dict[str, torch.Tensor], source: str = "timm state dict") -> dict[str, torch.Tensor]:
    require_timm(sd, source)
    return KEYS.to_canonical(sd, source)


def from_canonical(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if "absolute_pos_embed" in sd:
        raise SwinzooError("timm's Swin has no absolute position embedding (ape); export this model as official")
    return KEYS.to_foreign(sd)


def looks_timm(sd: dict) -> bool:
    """timm: Swin block keys with the downsample at the start of stage 1 (or `head.fc` when there is none)."""
    return ("patch_embed.proj.weight" in sd and "layers.0.downsample.reduction.weight" not in sd
            and ("layers.1.downsample.reduction.weight" in sd or "head.fc.weight" in sd))


def require_timm(sd: dict, source: str) -> None:
    if not looks_timm(sd):
        raise SwinzooError(f"{source} is not a timm Swin state dict (expected patch_embed.proj.weight and "
                           f"layers.1.downsample.* or head.fc.*; first keys seen: {', '.join(list(sd)[:4])})")


# ---------------------------------------------------------------------------------------------- config
def _square(value, what: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise SwinzooError(f"timm {what} {list(value)} is not square; swinzoo supports square {what}s only")
        value = value[0]
    return int(value)


def arch_defaults(name: str) -> dict:
    """SwinConfig fields of a timm architecture (every one the zoo has; see `swinzoo.zoo.WEIGHTS`)."""
    archs = timm_archs()
    if name not in archs:
        known = ", ".join(sorted(a for a in archs if a.endswith(("224", "256"))))
        raise SwinzooError(f"timm architecture {name!r} is not a Swin V1/V2 model swinzoo maps (e.g. {known}); "
                           "swinv2_cr_* and swin_s3_* are different networks")
    entry, weights = archs[name]
    return dict(version=entry.version, img_size=entry.img_size, window_size=entry.window_size,
                pretrained_window_sizes=weights.pretrained_windows, **SIZES[entry.arch])


def config_from_timm(d: dict, source: str = "config.json") -> dict:
    """SwinConfig fields of a timm config.json (architecture defaults, then model_args, then pretrained_cfg)."""
    if "architecture" not in d:
        raise SwinzooError(f"{source} has no 'architecture'; it is not a timm config.json")
    fields = arch_defaults(d["architecture"])
    args = dict(d.get("model_args") or {})
    cfg = d.get("pretrained_cfg") or {}
    if "img_size" not in args and cfg.get("input_size"):
        args["img_size"] = cfg["input_size"][-2:]
    for key, value in args.items():
        if key in ("img_size", "window_size"):
            fields[key] = _square(value, key.replace("_size", ""))
        elif key in GEOMETRY_ARGS:
            fields[key] = tuple(value) if isinstance(value, list) else value
        elif key in RATES:
            fields[key] = value
        elif key not in HARMLESS_ARGS:
            raise SwinzooError(f"{source}: model_args {key}={value!r} changes the network in a way swinzoo does not "
                               "model; only geometry arguments are supported")
    if d.get("global_pool", "avg") != "avg":
        raise SwinzooError(f"{source}: global_pool {d['global_pool']!r}; swinzoo models pool by averaging ('avg')")
    fields["architecture"], fields["window_stated"] = d["architecture"], "window_size" in args
    fields["img_size_stated"] = "img_size" in (d.get("model_args") or {})
    fields["class_names"] = default_class_names(d.get("label_names"))
    fields["preprocess"] = preprocess_from_timm(cfg, fields["img_size"])
    return fields


# what timm's resolve_data_config fills in for a key a pretrained_cfg lacks
TIMM_DEFAULTS = {"interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center"}


def preprocess_from_timm(pretrained_cfg: dict, img_size: int) -> dict | None:
    """`SwinConfig.preprocess` of a pretrained_cfg, read as timm reads it (a key it lacks takes timm's default);
    None when it states no preprocessing or the official rule. A crop mode swinzoo has no transform for (timm's
    "border") leaves the official rule, rather than stopping a read whose weights are fine."""
    stated = {k: pretrained_cfg[k] for k in ("mean", "std", *TIMM_DEFAULTS) if pretrained_cfg.get(k) is not None}
    if not stated:
        return None
    try:
        return Preprocess(**{**TIMM_DEFAULTS, **stated}).overrides(img_size)
    except SwinzooError:
        return None


def pick_arch(cfg: SwinConfig) -> tuple[str, dict]:
    """The timm architecture closest to `cfg` and the model_args that turn it into `cfg`."""
    want = cfg.to_dict()
    best = None
    for name, (entry, _) in timm_archs().items():
        if entry.version != cfg.version:
            continue
        base = arch_defaults(name)
        diff = {k: want[k] for k in base if k != "version" and _norm(base[k]) != _norm(want[k])}
        if cfg.version == 1:
            diff.pop("pretrained_window_sizes", None)
        if best is None or len(diff) < len(best[1]):
            best = (name, diff)
    name, diff = best
    # the timm defaults are the official ones, and SwinConfig's dropout rates timm's (drop_path_rate 0.1)
    for key in ("mlp_ratio", "qkv_bias", "patch_size", "in_chans", *RATES):
        if want[key] != SwinConfig.__dataclass_fields__[key].default:
            diff[key] = want[key]
    return name, {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in diff.items()}


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def config_to_timm(cfg: SwinConfig) -> dict:
    """A timm config.json for `cfg`."""
    if cfg.ape or not cfg.patch_norm:
        raise SwinzooError("timm's Swin always normalises the patch embedding and has no absolute position "
                           "embedding; export this model as official")
    arch, model_args = pick_arch(cfg)
    out = {"architecture": arch, "num_classes": cfg.num_classes, "num_features": cfg.num_features,
           "global_pool": "avg"}
    if model_args:
        out["model_args"] = model_args
    p = Preprocess.of(cfg)  # the official crop (0.875 / center below 384 px, 1.0 / squash from 384) unless overridden
    out["pretrained_cfg"] = {
        "input_size": [cfg.in_chans, cfg.img_size, cfg.img_size], "fixed_input_size": True,
        "interpolation": p.interpolation, "crop_pct": p.crop_pct, "crop_mode": p.crop_mode,
        "mean": list(p.mean), "std": list(p.std), "num_classes": cfg.num_classes,
        "first_conv": "patch_embed.proj", "classifier": "head.fc",
    }
    if cfg.class_names:
        out["label_names"] = list(cfg.class_names)
    return out


# ---------------------------------------------------------------------------------------------- files
def read(path: str | Path, arch: SwinConfig | None = None, arch_name: str = "", trust_checkpoint: bool = False,
         raw: dict | None = None) -> Checkpoint:
    """A timm folder (config.json + weights) or a bare timm weight file -> canonical weights and config."""
    path = Path(path)
    fields: dict = {}
    if path.is_dir():
        config = path / "config.json"
        fields = config_from_timm(read_config_json(path), str(config))
        path = weights_in_folder(path)
    raw = raw if raw is not None else read_weights(path, trust_checkpoint)
    stated = getattr(raw, "timm_config", None)  # a train.py checkpoint's arch and args.model_kwargs
    if not fields and stated and stated["architecture"] in timm_archs():
        config = f"{path}'s arch and args.model_kwargs"
        fields = config_from_timm(stated, config)
    sd = to_canonical(raw, str(path))
    if arch is not None:
        return Checkpoint(sd, build_config(sd, str(path), arch=arch, arch_name=arch_name))
    if fields:
        geometry = geometry_args(fields)
        if not fields["window_stated"]:
            geometry = geometry_from_weights(sd, geometry, fields, str(config))
        return Checkpoint(sd, build_config(sd, str(path), **geometry, **rate_args(fields),
                                           class_names=fields["class_names"], preprocess=fields["preprocess"]))
    return Checkpoint(sd, build_config(sd, str(path)))


def geometry_from_weights(sd: dict[str, torch.Tensor], geometry: dict, fields: dict, config: str) -> dict:
    """`geometry` with the window V1 bias tables state, where config.json did not state one: timm before 1.0.31
    wrote model_args only when given them, so a model fine-tuned at another window kept its architecture's in
    config.json. Where the resolution is not stated either (the preset's, from pretrained_cfg) and does not fit that
    window, the tables give it too: a stage at most one window wide has the window clamped to its width, else the
    last stage is taken to be one window. V2 parameters reveal no window: the architecture's stands, unless it
    cannot be the model's (it does not fit the resolution), which is an error saying how to give the geometry."""
    windows = arch_from_keys(sd, config)["windows"]
    patch, stages = sd["patch_embed.proj.weight"].shape[-1], len(windows)
    known = [w for w in windows if w is not None]
    if not known:
        problem = geometry_problem(geometry["img_size"], geometry["window"], patch, stages)
        if problem:
            raise SwinzooError(
                f"{config} names {fields['architecture']} (window {geometry['window']}) and states no "
                "window (timm before 1.0.31 wrote model_args only when given them), but that window cannot be the "
                f"model's ({problem}), and V2 weights do not reveal theirs: save it again with timm 1.0.31 or later "
                "(save_for_hf records model_args), or convert it with --arch NAME where a zoo name has its geometry "
                "(swinzoo list)")
        return geometry
    window = max(known)
    if window == geometry["window"]:
        return geometry
    tokens = geometry["img_size"] // patch
    fits = geometry["img_size"] % patch == 0 and all(
        (tokens >> i) % w == 0 or (tokens >> i) <= window for i, w in enumerate(known))
    if fields["img_size_stated"] or fits:
        return {**geometry, "window": window}
    return {**geometry, "window": window,
            "img_size": clamped_resolution(windows, patch) or window * patch * 2 ** (stages - 1)}


def write_timm_folder(state_dict: dict[str, torch.Tensor], config: SwinConfig, out_dir: str | Path,
                      extra_config: dict | None = None, overwrite: bool = False) -> Path:
    """Canonical weights -> `out_dir/{config.json, model.safetensors}` in timm's layout, written atomically.

    `extra_config` is merged into config.json (e.g. a Hub push adds `pretrained_cfg` details or a model card's
    fields). The folder loads with `timm.create_model("local-dir:OUT", pretrained=True)`.
    """
    cfg_json = config_to_timm(config)
    for key, value in (extra_config or {}).items():
        if isinstance(value, dict) and isinstance(cfg_json.get(key), dict):
            cfg_json[key] = {**cfg_json[key], **value}
        else:
            cfg_json[key] = value
    return write_model_folder(out_dir, from_canonical(state_dict), {"config.json": cfg_json}, overwrite)


def write(checkpoint: Checkpoint, out: str | Path, *, allow_numeric_change: bool = False,
          overwrite: bool = False) -> str:
    write_timm_folder(checkpoint.state_dict, checkpoint.config, out, overwrite=overwrite)
    return f'timm.create_model("local-dir:{out}", pretrained=True)'


FORMAT = Format("timm", "timm folder (config.json + model.safetensors) or weight file", read, write,
                claims_folder=lambda folder, cfg: config_kind(cfg) == "timm",
                claims_keys=looks_timm)
