"""torchvision Swin V1/V2 (`torchvision.models.swin_t` ... `swin_v2_b`) <-> canonical keys.

Layout: everything lives in `features` (stem `features.0`, stage s at `features.{2s+1}`, patch merging after
stage s at `features.{2s+2}`), the MLP is `mlp.0` / `mlp.3`, and V2 keeps one `qkv.bias` = cat(q, k, v) whose k
third is ignored (forced to zero in every forward). Persistent buffers (`relative_position_index` flattened to
W^4, V2 `relative_coords_table`) are dropped on read and written on export so `load_state_dict` is strict-clean.

torchvision has no config. On read, the window comes from the buffers (or the V1 bias tables) and the
resolution is the one where the last stage is exactly one window (224 for window 7, 256 for window 8: the
resolutions of every torchvision Swin weight). Two torchvision behaviours bound what an export can be exact for:
- it pads stages to a multiple of the window instead of shrinking the window, so a model is exported only when
  every stage is a whole number of windows (official models at their own resolution are);
- its V2 has no pretrained window: the CPB coordinates are always divided by (window - 1). A V2 model with
  non-zero `pretrained_window_sizes` (the 12to16 / 12to24 fine-tunes, or any V2 moved to a new window) would
  compute different position biases in torchvision, so exporting one is refused unless `allow_numeric_change`.
A smaller difference: torchvision clamps V2 logit scales at math.log(100), the official code at log(100) rounded to
float32; a head whose scale sits at the clamp differs by ~1e-6 in float64 (the parity tests keep scales below it).

Script: `python -m swinzoo.converters torchvision SRC.pth OUT.safetensors` or
`python -m swinzoo.converters torchvision --export SRC.safetensors OUT.pth`.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch

from swinzoo.config import SwinConfig
from swinzoo.converters.common import Checkpoint, Format, KeyMap, build_config, first_keys, read_weights
from swinzoo.errors import SwinzooError
from swinzoo.io import save_torch
from swinzoo.models.attention import log_spaced_coords
from swinzoo.models.layers import relative_position_index

_B = "features.{f}.{b}."
# canonical (official) -> torchvision; {f} = 2s+1 (stage), {g} = 2s+2 (merging after stage s)
TABLE = {
    "patch_embed.proj.{p}": "features.0.0.{p}",
    "patch_embed.norm.{p}": "features.0.2.{p}",
    "layers.{s}.blocks.{b}.norm1.{p}": _B + "norm1.{p}",
    "layers.{s}.blocks.{b}.attn.qkv.{p}": _B + "attn.qkv.{p}",
    "layers.{s}.blocks.{b}.attn.relative_position_bias_table": _B + "attn.relative_position_bias_table",
    "layers.{s}.blocks.{b}.attn.q_bias": _B + "attn.q_bias",  # fused into attn.qkv.bias, see fuse_v2_bias
    "layers.{s}.blocks.{b}.attn.v_bias": _B + "attn.v_bias",
    "layers.{s}.blocks.{b}.attn.logit_scale": _B + "attn.logit_scale",
    "layers.{s}.blocks.{b}.attn.cpb_mlp.0.{p}": _B + "attn.cpb_mlp.0.{p}",
    "layers.{s}.blocks.{b}.attn.cpb_mlp.2.weight": _B + "attn.cpb_mlp.2.weight",
    "layers.{s}.blocks.{b}.attn.proj.{p}": _B + "attn.proj.{p}",
    "layers.{s}.blocks.{b}.norm2.{p}": _B + "norm2.{p}",
    "layers.{s}.blocks.{b}.mlp.fc1.{p}": _B + "mlp.0.{p}",
    "layers.{s}.blocks.{b}.mlp.fc2.{p}": _B + "mlp.3.{p}",
    "layers.{s}.downsample.reduction.weight": "features.{g}.reduction.weight",
    "layers.{s}.downsample.norm.{p}": "features.{g}.norm.{p}",
    "norm.{p}": "norm.{p}",
    "head.{p}": "head.{p}",
}
KEYS = KeyMap(TABLE, "torchvision")


def looks_torchvision(sd: dict) -> bool:
    return "features.0.0.weight" in sd and any(k.startswith("features.1.0.") for k in sd)


def is_v2(sd: dict) -> bool:
    return any(k.endswith("attn.logit_scale") for k in sd)


def split_v2_bias(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """V2 `attn.qkv.bias` [3C] -> `attn.q_bias`, `attn.v_bias` [C]; the k third is dead weight in torchvision."""
    out = {}
    for key, value in sd.items():
        if key.endswith("attn.qkv.bias"):
            q, _, v = value.chunk(3)
            out[key[: -len("qkv.bias")] + "q_bias"], out[key[: -len("qkv.bias")] + "v_bias"] = q, v
        else:
            out[key] = value
    return out


def fuse_v2_bias(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse: qkv.bias = cat(q_bias, zeros, v_bias) (zeros also when the model has no q/v bias)."""
    out = {}
    for key, value in sd.items():
        if key.endswith("attn.q_bias"):
            out[key[: -len("q_bias")] + "qkv.bias"] = torch.cat((value, torch.zeros_like(value),
                                                                 sd[key[: -len("q_bias")] + "v_bias"]))
        elif not key.endswith("attn.v_bias"):
            out[key] = value
            if key.endswith("attn.qkv.weight") and key[: -len("weight")] + "bias" not in sd \
                    and key[: -len("qkv.weight")] + "q_bias" not in sd:
                out[key[: -len("weight")] + "bias"] = value.new_zeros(value.shape[0])
    return out


def to_canonical(sd: dict[str, torch.Tensor], source: str = "torchvision state dict") -> dict[str, torch.Tensor]:
    if not looks_torchvision(sd):
        raise SwinzooError(f"{source} is not a torchvision Swin state dict (expected features.0.0.weight and "
                           f"features.1.0.*; first keys seen: {first_keys(sd)})")
    return KEYS.to_canonical(split_v2_bias(sd) if is_v2(sd) else sd, source)


def window_of(sd: dict[str, torch.Tensor]) -> int | None:
    """torchvision's single window, from a persistent buffer (V1 and V2) or a V1 bias table."""
    for key, value in sd.items():
        if key.endswith("attn.relative_coords_table"):
            return (value.shape[1] + 1) // 2
        if key.endswith("attn.relative_position_index"):
            return round(math.sqrt(math.sqrt(value.numel())))
    return None


# ---------------------------------------------------------------------------------------------- export
def export_problem(cfg: SwinConfig) -> str | None:
    """Why torchvision cannot run `cfg` exactly like the official code, or None."""
    if cfg.ape or not cfg.patch_norm or cfg.in_chans != 3:
        return "torchvision's Swin has 3 input channels, a patch norm and no absolute position embedding"
    for i in range(cfg.num_stages):
        res = cfg.stage_resolution(i)
        if res < cfg.window_size or res % cfg.window_size:
            return (f"stage {i} is {res}x{res} tokens at {cfg.img_size} px, not a whole number of {cfg.window_size}"
                    f"-windows; torchvision would pad it where the official code shrinks the window")
    return None


def v2_window_problem(cfg: SwinConfig) -> str | None:
    if cfg.version == 2 and any(p not in (0, cfg.stage_window(i)) for i, p in enumerate(cfg.pretrained_window_sizes)):
        return (f"pretrained_window_sizes {list(cfg.pretrained_window_sizes)}: torchvision's Swin V2 has no "
                f"pretrained window and divides CPB coordinates by window-1 = {cfg.window_size - 1}, so the position "
                "biases (and logits) would change")
    return None


def buffers(cfg: SwinConfig) -> dict[str, torch.Tensor]:
    """The persistent buffers a torchvision model of `cfg` keeps (flattened index; V2 coords table)."""
    w = cfg.window_size
    out = {}
    for i in range(cfg.num_stages):
        for j in range(cfg.depths[i]):
            prefix = f"features.{2 * i + 1}.{j}.attn."
            if cfg.version == 2:
                out[prefix + "relative_coords_table"] = log_spaced_coords(w, 0)
            out[prefix + "relative_position_index"] = relative_position_index(w).flatten()
    return out


def from_canonical(sd: dict[str, torch.Tensor], cfg: SwinConfig,
                   allow_numeric_change: bool = False) -> dict[str, torch.Tensor]:
    """Canonical -> a torchvision state dict (buffers included) for `build_model(cfg)`."""
    problem = export_problem(cfg)
    if problem:
        raise SwinzooError(f"cannot export to torchvision: {problem}; export as timm or official instead")
    problem = v2_window_problem(cfg)
    if problem:
        if not allow_numeric_change:
            raise SwinzooError(f"cannot export to torchvision exactly: {problem}; pass --allow-numeric-change to "
                               "export anyway, or export as timm, hf or official")
        warnings.warn(f"torchvision export changes this model's numerics: {problem}", stacklevel=2)
    if cfg.version == 1 and not cfg.qkv_bias:  # torchvision's attention always has one: zeros add nothing
        sd = {**sd, **{k.replace(".weight", ".bias"): v.new_zeros(v.shape[0]) for k, v in sd.items()
                       if k.endswith("attn.qkv.weight")}}
    out = KEYS.to_foreign(sd)
    if cfg.version == 2:
        out = fuse_v2_bias(out)
    for key, value in buffers(cfg).items():
        out[key] = value
    return out


def builder_kwargs(cfg: SwinConfig) -> dict:
    """Arguments for `torchvision.models.swin_transformer.SwinTransformer` (swin_t/swin_v2_t use the same)."""
    return dict(patch_size=[cfg.patch_size] * 2, embed_dim=cfg.embed_dim, depths=list(cfg.depths),
                num_heads=list(cfg.num_heads), window_size=[cfg.window_size] * 2, mlp_ratio=cfg.mlp_ratio,
                num_classes=cfg.num_classes, stochastic_depth_prob=cfg.drop_path_rate)


def build_model(cfg: SwinConfig):
    """The torchvision model of `cfg` (needs torchvision); `swin_v2_t()` is this for swinv2_t_256_w8."""
    from torchvision.models import swin_transformer as tv

    extra = dict(block=tv.SwinTransformerBlockV2, downsample_layer=tv.PatchMergingV2) if cfg.version == 2 else {}
    return tv.SwinTransformer(**builder_kwargs(cfg), **extra)


def read(path: str | Path, arch: SwinConfig | None = None, arch_name: str = "", trust_checkpoint: bool = False,
         raw: dict | None = None) -> Checkpoint:
    path = Path(path)
    if path.is_dir():
        raise SwinzooError(f"{path} is a folder; torchvision weights are one .pth file")
    raw = (raw if raw is not None else read_weights(path, trust_checkpoint))
    sd = to_canonical(raw, str(path))
    return Checkpoint(sd, build_config(sd, str(path), window=window_of(raw), arch=arch, arch_name=arch_name))


def write(checkpoint: Checkpoint, out: str | Path, *, allow_numeric_change: bool = False,
          overwrite: bool = False) -> str:
    cfg = checkpoint.config
    save_torch(from_canonical(checkpoint.state_dict, cfg, allow_numeric_change), out, overwrite)
    args = ", ".join(f"{k}={v}" for k, v in builder_kwargs(cfg).items())
    module = "torchvision.models.swin_transformer"
    v2 = f", block={module}.SwinTransformerBlockV2, downsample_layer={module}.PatchMergingV2"
    return f"{module}.SwinTransformer({args}{v2 if cfg.version == 2 else ''})"


FORMAT = Format("torchvision", "torchvision .pth state dict", read, write, claims_keys=looks_torchvision)
