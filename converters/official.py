"""Official Microsoft Swin checkpoints (.pth) <-> canonical state dict.

Canonical keys are the official ones, so the map is the identity on parameters. What this module does:
read the file safely, unwrap it, drop the persistent buffers after reading what they reveal (resolution, window,
V2 pretrained window), detect the architecture, and, for export, put the buffers back.

Run as a script: `python -m converters.official SRC.pth OUT.safetensors [--arch NAME] [--trust-checkpoint]`.
"""

from __future__ import annotations

import argparse
import math
import pickle
import re
import zipfile
from pathlib import Path

import torch

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError
from swinzoo.models.attention import log_spaced_coords
from swinzoo.models.layers import relative_position_index, shift_mask
from swinzoo.models.swin import parameter_shapes
from swinzoo.transfer import drop_buffers

BLOCK_KEY = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.")


# ---------------------------------------------------------------------------------------------- reading
def load_pth(path: str | Path, trust_checkpoint: bool = False) -> object:
    """torch.load with weights_only=True unless the user passed --trust-checkpoint; one-line errors."""
    path = Path(path)
    if not path.exists():
        raise SwinzooError(f"{path} does not exist; check the path")
    if path.is_dir():
        raise SwinzooError(f"{path} is a folder; give the .pth file inside it")
    with open(path, "rb") as f:
        magic = f.read(4)
    is_zip = magic == b"PK\x03\x04"  # torch.save's format since 1.6
    if not is_zip and not magic.startswith(b"\x80"):  # nor the legacy pickle format
        raise SwinzooError(f"{path} is not a PyTorch checkpoint (it is neither a zip archive nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower():
            raise SwinzooError(
                f"{path} holds Python objects besides tensors (a training checkpoint with a config object?); "
                "if you trust where it came from, pass --trust-checkpoint to load it fully"
            ) from None
        raise SwinzooError(f"{path} is not a PyTorch checkpoint ({_first_line(e)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        if is_zip:
            msg = f"{path} is truncated or corrupt (an incomplete zip archive); download it again"
            raise SwinzooError(msg) from None
        raise SwinzooError(f"{path} is not a PyTorch checkpoint ({_first_line(e)})") from None


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__


def unwrap(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside an official file: `{'model': sd, ...}`, `{'state_dict': sd}`, or sd itself."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_ema"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SwinzooError(f"{source} holds no state dict of tensors; expected an official Swin checkpoint")
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DDP wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def read_official(path: str | Path, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    return unwrap(load_pth(path, trust_checkpoint), str(path))


# ---------------------------------------------------------------------------------------------- detection
def looks_official(sd: dict[str, torch.Tensor]) -> bool:
    return "patch_embed.proj.weight" in sd and any(k.startswith("layers.0.blocks.0.") for k in sd)


def _require_official(sd: dict[str, torch.Tensor], source: str) -> None:
    if not looks_official(sd):
        first = ", ".join(list(sd)[:4])
        raise SwinzooError(
            f"{source} is not an official Swin state dict (expected patch_embed.proj.weight and "
            f"layers.0.blocks.0.*; first keys seen: {first})"
        )


def detect_config(sd: dict[str, torch.Tensor], source: str = "checkpoint") -> SwinConfig:
    """Read the architecture from an official state dict (buffers included when present)."""
    _require_official(sd, source)
    proj = sd["patch_embed.proj.weight"]
    embed_dim, in_chans, patch = proj.shape[0], proj.shape[1], proj.shape[2]
    depths: dict[int, int] = {}
    for key in sd:
        m = BLOCK_KEY.match(key)
        if m:
            stage, block = int(m.group(1)), int(m.group(2))
            depths[stage] = max(depths.get(stage, 0), block + 1)
    stages = len(depths)
    version = 2 if any(".cpb_mlp." in k for k in sd) else 1
    heads, windows = [], []
    for i in range(stages):
        prefix = f"layers.{i}.blocks.0.attn."
        if version == 1:
            table = sd[prefix + "relative_position_bias_table"]
            heads.append(table.shape[1])
            windows.append((int(round(math.sqrt(table.shape[0]))) + 1) // 2)
        else:
            heads.append(sd[prefix + "logit_scale"].shape[0])
            windows.append(_v2_window(sd, prefix))
    has_buffers = any(k.endswith("relative_position_index") for k in sd)
    if any(w is None for w in windows):
        raise SwinzooError(f"cannot tell the window of {source}: it has no buffers; pass --arch NAME (e.g. "
                           "swinv2_t_256_w8) to say which architecture it is")
    img_size = _detect_resolution(sd, depths, windows, patch, has_buffers)
    if img_size is None:
        raise SwinzooError(f"cannot tell the resolution of {source}: it has no attn_mask buffers; pass --arch NAME "
                           "(e.g. swin_b_224) to say which architecture it is")
    cfg = SwinConfig(
        version=version, img_size=img_size, patch_size=patch, in_chans=in_chans, embed_dim=embed_dim,
        depths=tuple(depths[i] for i in range(stages)), num_heads=tuple(heads), window_size=max(windows),
        mlp_ratio=sd["layers.0.blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
        qkv_bias=("layers.0.blocks.0.attn.qkv.bias" in sd) or ("layers.0.blocks.0.attn.q_bias" in sd),
        ape="absolute_pos_embed" in sd, patch_norm="patch_embed.norm.weight" in sd,
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
        pretrained_window_sizes=(0,) * stages,
    )
    if version == 2:
        cfg = cfg.replace(pretrained_window_sizes=_v2_pretrained_windows(sd, cfg))
    return cfg


def _v2_window(sd: dict[str, torch.Tensor], prefix: str) -> int | None:
    if prefix + "relative_coords_table" in sd:
        return (sd[prefix + "relative_coords_table"].shape[1] + 1) // 2
    if prefix + "relative_position_index" in sd:
        return int(round(math.sqrt(sd[prefix + "relative_position_index"].shape[0])))
    return None


def _detect_resolution(sd, depths, windows, patch, has_buffers) -> int | None:
    for i in range(len(depths)):
        for j in range(depths[i]):
            mask = sd.get(f"layers.{i}.blocks.{j}.attn_mask")
            if mask is not None:  # nW windows of side w: the stage grid is sqrt(nW) * w
                return int(round(math.sqrt(mask.shape[0]))) * windows[i] * 2**i * patch
    if "absolute_pos_embed" in sd:
        return int(round(math.sqrt(sd["absolute_pos_embed"].shape[1]))) * patch
    if has_buffers and depths.get(0, 0) >= 2:  # stage 0 unshifted: its grid fits in one (clamped) window
        return windows[0] * patch
    return None


def _v2_pretrained_windows(sd: dict[str, torch.Tensor], cfg: SwinConfig) -> tuple[int, ...]:
    """Invert the log-spaced normalisation: the largest offset w-1 maps to log2(8 (w-1)/(p-1) + 1) / 3."""
    out = []
    for i in range(cfg.num_stages):
        table = sd.get(f"layers.{i}.blocks.0.attn.relative_coords_table")
        w = cfg.stage_window(i)
        if table is None or w < 2:
            out.append(0)
            continue
        top = float(table[..., 0].max().double())
        pretrained = round(8 * (w - 1) / (2 ** (3 * top) - 1)) + 1
        out.append(0 if pretrained == w else pretrained)
    return tuple(out)


def expected_shapes(cfg: SwinConfig) -> dict[str, tuple]:
    """Official key -> shape for `cfg`, buffers included (built on the meta device, no memory)."""
    shapes = parameter_shapes(cfg)
    shapes.update({k: tuple(v.shape) for k, v in official_buffers(cfg).items()})
    return shapes


def check_against(sd: dict[str, torch.Tensor], cfg: SwinConfig, arch: str) -> None:
    """Raise naming the first key where the file contradicts `--arch` (both shapes in the message)."""
    expected = expected_shapes(cfg)
    for key, value in sd.items():
        if key not in expected:
            raise SwinzooError(f"--arch {arch} contradicts the checkpoint: it has {key} {tuple(value.shape)}, "
                               f"which {arch} does not have")
        if tuple(value.shape) != expected[key]:
            raise SwinzooError(f"--arch {arch} contradicts the checkpoint: {key} is {tuple(value.shape)} in the file "
                               f"but {expected[key]} for {arch}")
    params, _ = drop_buffers(expected)
    missing = [k for k in params if k not in sd]
    if missing:
        raise SwinzooError(f"--arch {arch} contradicts the checkpoint: it lacks {missing[0]} {expected[missing[0]]}")


def from_official(sd: dict[str, torch.Tensor], arch: SwinConfig | None = None, arch_name: str = "",
                  source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], SwinConfig]:
    """(canonical state dict, source config). `arch` (from --arch) replaces detection; the head still sets the
    class count, and the file is checked against it."""
    _require_official(sd, source)
    if arch is not None:
        classes = sd["head.weight"].shape[0] if "head.weight" in sd else 0
        cfg = arch.replace(num_classes=classes, class_names=None)
        check_against(sd, cfg, arch_name or "the given architecture")
    else:
        cfg = detect_config(sd, source)
    canonical, _ = drop_buffers(sd)
    return canonical, cfg


# ---------------------------------------------------------------------------------------------- export
def official_buffers(cfg: SwinConfig) -> dict[str, torch.Tensor]:
    """The persistent buffers an official model of `cfg` keeps in its state dict."""
    out = {}
    for i in range(cfg.num_stages):
        w, shift, res = cfg.stage_window(i), cfg.stage_shift(i), cfg.stage_resolution(i)
        mask = shift_mask(res, w, shift) if shift else None
        index = relative_position_index(w)
        coords = log_spaced_coords(w, cfg.pretrained_window_sizes[i]) if cfg.version == 2 else None
        for j in range(cfg.depths[i]):
            prefix = f"layers.{i}.blocks.{j}."
            if mask is not None and j % 2 == 1:
                out[prefix + "attn_mask"] = mask.clone()
            if coords is not None:
                out[prefix + "attn.relative_coords_table"] = coords.clone()
            out[prefix + "attn.relative_position_index"] = index.clone()
    return out


def to_official(state_dict: dict[str, torch.Tensor], cfg: SwinConfig) -> dict[str, dict[str, torch.Tensor]]:
    """`{'model': sd}` with the buffers, in the official key order, so the official model loads it strictly."""
    buffers = official_buffers(cfg)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = BLOCK_KEY.match(key)
        if m and key.endswith(".norm1.weight"):
            out.update({k: v for k, v in buffers.items() if k == m.group(0) + "attn_mask"})
        if m and (key.endswith(".attn.qkv.weight") and cfg.version == 1 or key.endswith(".attn.cpb_mlp.0.weight")):
            out.update({k: v for k, v in buffers.items() if k.startswith(m.group(0) + "attn.")})
        out[key] = value
    return {"model": out}


# ---------------------------------------------------------------------------------------------- script
def main(argv: list[str] | None = None) -> None:
    from swinzoo.io import save_state_dict
    from swinzoo.zoo import zoo_config

    p = argparse.ArgumentParser(description="Convert an official Swin .pth to a swinzoo .safetensors file.")
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--arch", help="zoo name giving the architecture when the file cannot")
    p.add_argument("--trust-checkpoint", action="store_true", help="allow a full (unsafe) torch.load")
    args = p.parse_args(argv)
    sd = read_official(args.src, args.trust_checkpoint)
    arch = zoo_config(args.arch) if args.arch else None
    canonical, cfg = from_official(sd, arch, args.arch or "", args.src)
    save_state_dict(canonical, cfg, args.out, {"source": str(args.src), "format": "official"})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
