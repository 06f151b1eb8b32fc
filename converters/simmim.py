"""Official SimMIM pretraining checkpoints (.pth) <-> a canonical SimMIM state dict.

The official file (`utils_simmim.save_checkpoint` of microsoft/Swin-Transformer) is `{"model": sd, "optimizer",
"lr_scheduler", "epoch", "config", ...}` where sd holds every encoder tensor under `encoder.` (the official
classification names, the persistent buffers and `encoder.mask_token`) and the decoder's 1x1 convolution as
`decoder.0.weight` / `decoder.0.bias`. Released SwinV2 files name the CPB MLP `rpe_mlp`, the code `cpb_mlp`
(microsoft/Swin-Transformer #271): reading renames it.

Canonical SimMIM keys are the official ones without buffers, i.e. what `models.simmim.SimMIM.state_dict()`
holds; the config is the encoder's (`num_classes` 0). The geometry comes from the encoder's buffers, read as for
an official classifier (`official.from_official`). swinzoo's own safetensors stores the same keys and config, so
`is_simmim` tells a SimMIM checkpoint of any format apart by its keys.

Script: `python -m swinzoo.converters simmim SRC.pth OUT.safetensors` (or `--export SRC.safetensors OUT.pth`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from swinzoo.config import SwinConfig
from swinzoo.converters.common import Checkpoint, Format, first_keys, read_weights
from swinzoo.converters.official import from_official, with_buffers
from swinzoo.errors import SwinzooError
from swinzoo.io import save_torch

ENCODER = "encoder."
MASK_TOKEN = "encoder.mask_token"
DECODER_KEYS = ("decoder.0.weight", "decoder.0.bias")
OLD_CPB, CPB = ".attn.rpe_mlp.", ".attn.cpb_mlp."
# `swinzoo finetune --from` a SimMIM checkpoint picks the official fine-tune recipe that follows its pretraining
FINETUNE_RECIPES = {1: "simmim_finetune", 2: "simmim_finetune_v2"}


def is_simmim(sd: dict) -> bool:
    """Keys of a SimMIM model (official file or canonical): an `encoder.` Swin and the decoder's convolution."""
    return "decoder.0.weight" in sd and "encoder.patch_embed.proj.weight" in sd


def from_simmim(raw: dict[str, torch.Tensor], arch: SwinConfig | None = None, arch_name: str = "",
                source: str = "checkpoint") -> Checkpoint:
    """(canonical SimMIM state dict, encoder config, provenance) of an official SimMIM state dict."""
    encoder, renamed = {}, 0
    for key, value in raw.items():
        if key.startswith(ENCODER):
            renamed += OLD_CPB in key
            encoder[key[len(ENCODER):].replace(OLD_CPB, CPB)] = value
        elif key not in DECODER_KEYS:
            raise SwinzooError(f"{source}: unexpected key {key!r} in a SimMIM checkpoint (expected encoder.* and "
                               "decoder.0.*)")
    missing = [k for k in (MASK_TOKEN, *DECODER_KEYS) if k not in raw]
    if missing:
        raise SwinzooError(f"{source} is an incomplete SimMIM checkpoint: it lacks {missing[0]}")
    mask_token = encoder.pop("mask_token")
    if any(k.startswith("head.") for k in encoder):
        raise SwinzooError(f"{source}: a SimMIM encoder has no head, but this one holds encoder.head.*; the file is "
                           "not an official SimMIM checkpoint")
    state_dict, cfg = from_official(encoder, arch, arch_name, source)
    out = {ENCODER + k: v for k, v in state_dict.items()}
    out[MASK_TOKEN] = mask_token
    out.update({k: raw[k] for k in DECODER_KEYS})
    check_decoder(out, cfg, source)
    provenance = {"layout": "official SimMIM pretraining (encoder + decoder)",
                  "finetune_recipe": FINETUNE_RECIPES[cfg.version]}
    if renamed:
        provenance["renamed"] = f"{renamed} keys rpe_mlp -> cpb_mlp (released SwinV2 SimMIM files)"
    return Checkpoint(out, cfg, provenance)


def check_decoder(sd: dict[str, torch.Tensor], cfg: SwinConfig, source: str) -> None:
    """The decoder must map the last stage's features to one stride x stride x colours pixel block per token."""
    stride = cfg.patch_size * 2 ** (cfg.num_stages - 1)
    expected = (stride**2 * cfg.in_chans, cfg.num_features, 1, 1)
    got = tuple(sd["decoder.0.weight"].shape)
    if got != expected:
        raise SwinzooError(f"{source}: decoder.0.weight is {got}, but a SimMIM decoder of this encoder is {expected} "
                           f"(encoder stride {stride}); the file is not an official Swin SimMIM checkpoint")


def read(path: Path, arch: SwinConfig | None = None, arch_name: str = "", trust_checkpoint: bool = False,
         raw: dict | None = None) -> Checkpoint:
    sd = raw if raw is not None else read_weights(path, trust_checkpoint)
    if not is_simmim(sd):
        raise SwinzooError(f"{path} is not a SimMIM checkpoint (expected encoder.patch_embed.* and decoder.0.weight; "
                           f"first keys seen: {first_keys(sd)})")
    return from_simmim(sd, arch, arch_name, str(path))


# ---------------------------------------------------------------------------------------------- export
def to_simmim(checkpoint: Checkpoint) -> dict[str, dict[str, torch.Tensor]]:
    """`{"model": sd}` as the official code saves it: encoder keys with the official buffers, in the official
    order (the encoder's own parameters `absolute_pos_embed` and `mask_token` first), then the decoder."""
    sd, cfg = checkpoint.state_dict, checkpoint.config
    if not is_simmim(sd):
        raise SwinzooError("this is not a SimMIM model (no encoder.* / decoder.0.*): build one with "
                           "swinzoo.load_simmim(SRC) and save that")
    encoder = {k[len(ENCODER):]: v for k, v in sd.items() if k.startswith(ENCODER) and k != MASK_TOKEN}
    official = with_buffers(encoder, cfg)
    first = {k: official.pop(k) for k in ("absolute_pos_embed",) if k in official}
    first["mask_token"] = sd[MASK_TOKEN]
    model = {ENCODER + k: v for k, v in {**first, **official}.items()}
    model.update({k: sd[k] for k in DECODER_KEYS})
    return {"model": model}


def write(checkpoint: Checkpoint, out: str | Path, *, allow_numeric_change: bool = False,
          overwrite: bool = False) -> str:
    save_torch(to_simmim(checkpoint), out, overwrite)
    return "the official SimMIM(...).load_state_dict(torch.load(OUT)['model']), or swinzoo.load_simmim(OUT)"


FORMAT = Format("simmim", "official SimMIM pretraining .pth (`{'model': {encoder.*, decoder.0.*}}`)", read, write,
                claims_keys=is_simmim)
