"""A model held in memory as a source, as timm's `push_to_hub(model, ...)` and transformers' `model.push_to_hub`
take one: swinzoo's models (classifier, backbone, SimMIM), the wrappers a training script leaves around them
(`torch.compile`, `DataParallel` / DDP, a Lightning module holding one as `.model`) and a `Checkpoint` become a
`Checkpoint` here, a copy on the CPU in the dtype the model holds (what timm's push writes). The provenance keeps the
model's own (where it was loaded from) and adds `in_memory`: which object the weights were read from, and their
dtype, since they may have been trained or edited since they were loaded. timm and transformers models are read by
their keys in `swinzoo.converters.read_object`.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn

from swinzoo.converters.common import Checkpoint
from swinzoo.errors import SwinzooError
from swinzoo.models import SimMIM, SwinBackbone, SwinTransformer

SWINZOO_MODELS = (SwinTransformer, SwinBackbone, SimMIM)
# what the verbs take besides a path: a module (swinzoo's, a wrapper of one, timm's, transformers'), a Checkpoint or a
# state dict; anything else is refused in one line (`not_a_source`)
Source = nn.Module | Checkpoint | dict
ACCEPTED = ("a path, zoo name or hf-hub: reference, a swinzoo SwinTransformer, SwinBackbone or SimMIM (also inside "
            "torch.compile, DataParallel or a Lightning module's .model), a swinzoo.Checkpoint, a timm or "
            "transformers Swin model, or a state dict of tensors")
SIMMIM_SETTINGS = ("mask_patch_size", "mask_ratio", "norm_targets")  # what `load_simmim` reads back


def is_path(src: object) -> bool:
    return isinstance(src, (str, os.PathLike))


def source_name(src: object) -> str:
    """How messages and provenance name a source: the path as given, or the object it is."""
    if is_path(src):
        return os.fspath(src)
    found = unwrap(src, foreign=True)
    return f"the in-memory {found[1] if found else type(src).__name__}"


def foreign_library(obj: object) -> str | None:
    """'timm' or 'transformers' for a model of theirs (read by its keys), else None."""
    library = type(obj).__module__.split(".")[0]
    return library if isinstance(obj, nn.Module) and library in ("timm", "transformers") else None


def timm_model_config(model: nn.Module) -> dict | None:
    """The timm config.json a timm Swin model object amounts to (architecture, model_args, pretrained_cfg), its
    geometry read from its modules: V2 weights do not tell the window, nor the resolution after `set_input_size`.
    None for a model of another shape."""
    try:
        attns = [layer.blocks[0].attn for layer in model.layers]
        args = {"img_size": tuple(model.patch_embed.img_size), "window_size": tuple(attns[0].window_size),
                "embed_dim": int(model.patch_embed.proj.out_channels),
                "depths": tuple(len(layer.blocks) for layer in model.layers),
                "num_heads": tuple(int(a.num_heads) for a in attns)}
        if hasattr(attns[0], "pretrained_window_size"):  # V2: the window each stage's position bias was trained at
            args["pretrained_window_sizes"] = tuple(int(a.pretrained_window_size[0]) for a in attns)
    except (AttributeError, TypeError, IndexError):
        return None
    pretrained_cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    v2 = "pretrained_window_sizes" in args
    architecture = pretrained_cfg.get("architecture") or (
        "swinv2_tiny_window8_256" if v2 else "swin_tiny_patch4_window7_224")  # a class built by hand: args say all
    return {"architecture": architecture, "model_args": args, "pretrained_cfg": pretrained_cfg}


def unwrap(obj: object, foreign: bool = False) -> tuple[nn.Module, str] | None:
    """(the swinzoo model inside `obj`, how it was found, e.g. `SwinClassifier.model`), or None; `foreign`: a timm
    or transformers model is found too. Duck-typed: the Lightning modules live in swinzoo.train, above this layer,
    and any module holding a model as `.model` (the user's own LightningModule) is read as they are."""
    if isinstance(obj, SWINZOO_MODELS):
        return obj, type(obj).__name__
    if foreign and foreign_library(obj):
        return obj, f"{type(obj).__name__} ({foreign_library(obj)})"
    if not isinstance(obj, nn.Module):
        return None
    compiled = getattr(obj, "_orig_mod", None)  # torch.compile's OptimizedModule: its keys carry `_orig_mod.`
    if isinstance(compiled, nn.Module):
        found = unwrap(compiled, foreign)
        return (found[0], f"torch.compile({found[1]})") if found else None
    if isinstance(obj, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        found = unwrap(obj.module, foreign)
        return (found[0], f"{type(obj).__name__}({found[1]})") if found else None
    inner = getattr(obj, "model", None)
    found = unwrap(inner, foreign) if isinstance(inner, nn.Module) else None
    if found is None:
        return None
    held = f"{type(obj).__name__}.model"
    return found[0], held if found[1] == type(found[0]).__name__ else f"{held} = {found[1]}"


def dtype_names(state_dict: dict[str, torch.Tensor]) -> str:
    return ", ".join(sorted({str(t.dtype).removeprefix("torch.") for t in state_dict.values()}))


def copied(state_dict: dict, name: str) -> dict[str, torch.Tensor]:
    """The tensors detached and copied to the CPU (a later step of the caller's training leaves them as they are)."""
    if any(t.is_meta for t in state_dict.values()):
        raise SwinzooError(f"{name} has its weights on the meta device (shapes without values): load its weights "
                           "first (load_state_dict(..., assign=True), or swinzoo.load_model), then pass it")
    return {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}


def in_memory_record(provenance: dict, what: str, state_dict: dict) -> dict:
    provenance = copy.deepcopy(provenance)
    provenance["in_memory"] = {"object": what, "dtype": dtype_names(state_dict)}
    return provenance


def swinzoo_checkpoint(obj: object) -> Checkpoint | None:
    """The Checkpoint of a swinzoo model or Checkpoint in memory (see the module docstring), or None for any other
    object."""
    if isinstance(obj, Checkpoint):
        state_dict = copied(obj.state_dict, "the in-memory Checkpoint")
        return Checkpoint(state_dict, obj.config, in_memory_record(obj.provenance, "Checkpoint", state_dict),
                          list(obj.notes))
    found = unwrap(obj)
    if found is None:
        return None
    model, what = found
    if isinstance(model, SwinTransformer) and (model.global_pool != "avg" or isinstance(model.norm, nn.Identity)):
        # the config has no place for either: the file would reload as a model that pools and norms
        raise SwinzooError(f"the in-memory {what} has no final norm or no token pooling (prune_intermediate_layers, "
                           "or reset_classifier with global_pool=\"\"), which a swinzoo file cannot record: save it "
                           "before pruning (or after reset_classifier(n, \"avg\")), or torch.save(model.state_dict(), "
                           "...)")
    state_dict = copied(model.state_dict(), f"the in-memory {what}")
    provenance = in_memory_record(getattr(model, "provenance", None) or {}, what, state_dict)
    recipe = getattr(getattr(obj, "hparams", None), "get", lambda _: None)("recipe")
    if isinstance(recipe, dict) and "recipe" not in provenance:  # a Lightning module built without from_pretrained
        provenance["recipe"] = recipe
    if isinstance(model, SimMIM):  # the masks it trains with, as a `swinzoo pretrain` output records them
        provenance["simmim"] = {**(provenance.get("simmim") or {}),
                                **{k: getattr(model, k) for k in SIMMIM_SETTINGS}}
    return Checkpoint(state_dict, model.config, provenance)


def not_a_source(obj: object) -> SwinzooError:
    return SwinzooError(f"this {type(obj).__name__} object is not a model swinzoo reads; give {ACCEPTED}")
