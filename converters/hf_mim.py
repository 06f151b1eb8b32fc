"""Hugging Face transformers `SwinForMaskedImageModeling` / `Swinv2ForMaskedImageModeling` folders <-> a canonical
SimMIM checkpoint (`encoder.<official key>`, `encoder.mask_token`, `decoder.0.*`; see `converters.simmim`).

The MIM model is the headless encoder under `swin.` (V2 `swinv2.`) with the classification models' key names
(`hf.TABLE_V1` / `TABLE_V2`), the mask token `swin.embeddings.mask_token` and the official SimMIM decoder
(`decoder.0`, a 1x1 convolution to encoder_stride^2 x colours, then a PixelShuffle); `config.json` names the
architecture `SwinForMaskedImageModeling` (`Swinv2...`) and sets `encoder_stride`. The numerics are the official
SimMIM's. Two differences leave converted weights alone: transformers creates the mask token as zeros (the
official as truncated normal(0.02)), and its loss reshapes the mask with `config.image_size`, so its loss takes
images of that size only. `hf.read` / `hf.write_hf_folder` hand the MIM parts to the functions here; the encoder
goes through `hf`'s key tables as a classifier's does.
"""

from __future__ import annotations

import torch

from swinzoo.config import SwinConfig
from swinzoo.converters.common import Checkpoint
from swinzoo.converters.simmim import DECODER_KEYS, ENCODER, FINETUNE_RECIPES, MASK_TOKEN, check_decoder
from swinzoo.errors import SwinzooError

ARCHITECTURES = {1: "SwinForMaskedImageModeling", 2: "Swinv2ForMaskedImageModeling"}
MASK_TOKENS = {1: "swin.embeddings.mask_token", 2: "swinv2.embeddings.mask_token"}


def says_mim(config_json: dict | None) -> bool:
    """A config.json whose `architectures` names a MaskedImageModeling model."""
    names = (config_json or {}).get("architectures") or ()
    return any(str(name).endswith("ForMaskedImageModeling") for name in names)


def looks_mim(sd: dict) -> bool:
    """transformers keys with a mask token or a decoder: only the MaskedImageModeling models hold them."""
    return "decoder.0.weight" in sd or any(k in sd for k in MASK_TOKENS.values())


def split(raw: dict[str, torch.Tensor], source: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the encoder's transformers keys, the mask token and decoder under their canonical SimMIM names)."""
    token = next((k for k in MASK_TOKENS.values() if k in raw), None)
    missing = [k for k in DECODER_KEYS if k not in raw]
    if token is None or missing:
        lacks = missing[0] if token else "swin.embeddings.mask_token (V2: swinv2.embeddings.mask_token)"
        raise SwinzooError(f"{source} is an incomplete transformers MaskedImageModeling checkpoint: it lacks {lacks}")
    if any(k.startswith("classifier.") for k in raw):
        raise SwinzooError(f"{source} holds both a SimMIM decoder and a classifier; a transformers "
                           "MaskedImageModeling model has no classifier, so the file is not one")
    extras = {MASK_TOKEN: raw[token], **{k: raw[k] for k in DECODER_KEYS}}
    return {k: v for k, v in raw.items() if k != token and k not in DECODER_KEYS}, extras


def checkpoint(encoder: dict[str, torch.Tensor], extras: dict[str, torch.Tensor], config: SwinConfig,
               source: str) -> Checkpoint:
    """The canonical SimMIM checkpoint of a canonical encoder state dict, its config and `split`'s extras."""
    sd = {ENCODER + k: v for k, v in encoder.items()}
    sd.update(extras)
    check_decoder(sd, config, source)
    provenance = {"layout": f"transformers {ARCHITECTURES[config.version]} (encoder + decoder)",
                  "finetune_recipe": FINETUNE_RECIPES[config.version]}
    return Checkpoint(sd, config, provenance)


def encoder_part(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The canonical encoder keys (official names) of a canonical SimMIM state dict."""
    return {k[len(ENCODER):]: v for k, v in sd.items() if k.startswith(ENCODER) and k != MASK_TOKEN}


def add_mim(config_json: dict, tensors: dict[str, torch.Tensor], sd: dict[str, torch.Tensor],
            config: SwinConfig) -> dict:
    """A classification config.json made the MaskedImageModeling one; the mask token and decoder join `tensors`."""
    check_decoder(sd, config, "this SimMIM model")
    out = {k: v for k, v in config_json.items() if k not in ("id2label", "label2id")}  # no classifier, no labels
    out["architectures"] = [ARCHITECTURES[config.version]]
    # transformers sizes the decoder's PixelShuffle by it: the stride of the last stage, 32 for every released Swin
    out["encoder_stride"] = config.patch_size * 2 ** (config.num_stages - 1)
    tensors[MASK_TOKENS[config.version]] = sd[MASK_TOKEN]
    tensors.update({k: sd[k] for k in DECODER_KEYS})
    return out
