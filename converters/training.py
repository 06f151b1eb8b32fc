"""The training checkpoints of other tools: which entry holds the model (and its EMA twin), and what the file says of
the architecture. The weights inside are in a format's key layout (timm, torchvision, official), which detection
then tells apart as for any state dict.

- timm's train.py (`checkpoint-N.pth.tar`, `model_best.pth.tar`, `last.pth.tar`): `state_dict`, `state_dict_ema`
  with --model-ema, `arch` (the timm model name) and `args.model_kwargs` (what create_model was given).
- torchvision's references/classification (`checkpoint.pth`, `model_N.pth`): `model`, and `model_ema` with
  --model-ema (an AveragedModel's state dict: `module.` keys and an `n_averaged` count).
- the official Swin code (`ckpt_epoch_N.pth`): `model` (and `model_ema` where its EMA was on).
- Lightning, for the user's own LightningModule (`*.ckpt`; swinzoo's own modules' are the swinzoo format): the
  module's `state_dict`, where the one Swin inside is found by its first key (`model.patch_embed.proj.weight`: the
  prefix `model.`); the module's other state (a loss's weights, metrics) is left out, and said so.

With EMA weights present, they are taken unless `ema=False`, as timm's `load_checkpoint` does (`use_ema=True`), and
what timm's train.py ranked `model_best` by (it validates the EMA when there is one).
"""

from __future__ import annotations

import torch

from swinzoo.errors import SwinzooError

# (the trained weights, their EMA), by tool: torchvision's references and the official code; timm's train.py
ENTRIES = (("model", "model_ema"), ("state_dict", "state_dict_ema"))
# what wraps a model's keys: DDP (`module.`), torch.compile (`_orig_mod.`), in either order (timm strips both)
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
AVERAGING_COUNT = "n_averaged"  # torch.optim.swa_utils.AveragedModel's buffer, beside the averaged `module.*`


class TrainingWeights(dict):
    """A state dict taken from a training checkpoint, remembering which entry it was (`taken`, said in the
    provenance and the report) and the timm config.json its `arch` and `args` amount to (`timm_config`, or None)."""

    taken: str = ""
    timm_config: dict | None = None


def take_weights(obj: object, source: str, ema: bool | None = None) -> object:
    """The model's state dict in a torch file: a training checkpoint's entry (`ema`: True the EMA, False the trained
    weights, None the EMA where there is one), `{'model': sd}` / `{'state_dict': sd}`, or sd itself; wrapper prefixes
    removed. Anything else is returned as it is, for the caller to refuse."""
    if not isinstance(obj, dict):
        return obj
    entry = next(((raw, averaged) for raw, averaged in ENTRIES if isinstance(obj.get(raw), dict)
                  or isinstance(obj.get(averaged), dict)), None)
    if entry is None:
        if ema:
            raise SwinzooError(f"{source} holds no EMA weights (no state_dict_ema or model_ema entry); drop --ema")
        return without_wrappers(obj)
    raw, averaged = entry
    has_ema = isinstance(obj.get(averaged), dict)
    if ema and not has_ema:
        raise SwinzooError(f"{source} holds no EMA weights (no {averaged} entry, only {raw}); drop --ema")
    key = averaged if has_ema and ema is not False else raw
    if not isinstance(obj.get(key), dict):
        raise SwinzooError(f"{source} has no {key} entry, only {averaged}; drop --no-ema to read the EMA weights")
    weights = TrainingWeights(without_wrappers(obj[key]))
    if has_ema:
        weights.taken = (f"{key}, the EMA weights (as timm's load_checkpoint takes them; --no-ema reads {raw})"
                         if key == averaged else f"{key}, the trained weights (--ema reads {averaged})")
    weights.timm_config = timm_config(obj)
    return weights


# the first key of a Swin in each layout (official, timm, SimMIM's encoder; transformers; torchvision), by which
# a model is found inside a LightningModule's state dict: what precedes it is the model's attribute path
MODEL_MARKERS = ("patch_embed.proj.weight", "swin.embeddings.patch_embeddings.projection.weight",
                 "swinv2.embeddings.patch_embeddings.projection.weight", "features.1.0.attn.qkv.weight")


def lightning_model(obj: dict, source: str, ema: bool | None = None) -> TrainingWeights:
    """The one Swin in a Lightning checkpoint of the user's own module, without its attribute prefix."""
    sd = obj.get("state_dict")
    if not isinstance(sd, dict):
        raise SwinzooError(f"{source} is a Lightning checkpoint without a state_dict; it holds no weights")
    if ema:
        raise SwinzooError(f"{source} is a Lightning checkpoint, which holds its module's weights only (no EMA "
                           "entry); drop --ema")
    prefixes = sorted({key[:-len(marker)] for key in sd if isinstance(key, str) for marker in MODEL_MARKERS
                       if key.endswith(marker) and (key == marker or key[:-len(marker)].endswith("."))})
    if not prefixes:
        raise SwinzooError(f"{source} is a Lightning checkpoint whose module holds no Swin (no *patch_embed.proj."
                           f"weight or transformers / torchvision equivalent; first keys: {', '.join(list(sd)[:4])})")
    if len(prefixes) > 1:
        first = prefixes[0]
        raise SwinzooError(
            f"{source} is a Lightning checkpoint holding {len(prefixes)} Swin models (under "
            f"{', '.join(p or '(no prefix)' for p in prefixes)}); save the one you want as its own file and read that: "
            f"sd = torch.load(PATH, weights_only=True)['state_dict']; torch.save({{k[{len(first)}:]: v for k, v in "
            f"sd.items() if k.startswith({first!r})}}, 'model.pth')")
    prefix = prefixes[0]
    weights = TrainingWeights(without_wrappers({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}))
    others = [k for k in sd if not k.startswith(prefix)]
    left_out = f"; left out the module's {len(others)} other keys: {', '.join(others[:3])}" if others else ""
    weights.taken = f"the Swin under {prefix or '(no prefix)'} of a Lightning checkpoint{left_out}"
    return weights


def without_wrappers(sd: dict) -> dict:
    """`sd` without the prefixes DDP and torch.compile put on every key, and an AveragedModel's count."""
    sd = {k: v for k, v in sd.items() if k != AVERAGING_COUNT} if AVERAGING_COUNT in sd else dict(sd)
    while sd and (prefix := next((p for p in WRAPPER_PREFIXES if all(str(k).startswith(p) for k in sd)), None)):
        sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def timm_config(obj: dict) -> dict | None:
    """The timm config.json a train.py checkpoint amounts to: `arch` as the architecture, `args.model_kwargs` as
    its model_args (what create_model was given), or None when `arch` names no model (not timm's checkpoint)."""
    arch = obj.get("arch")
    if not isinstance(arch, str) or not isinstance(obj.get("state_dict"), dict):
        return None
    args = obj.get("args")
    kwargs = getattr(args, "model_kwargs", None) if args is not None else None
    return {"architecture": arch, "model_args": dict(kwargs) if isinstance(kwargs, dict) else {}}


def is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values())


# a Swin state dict's first key in each layout (MODEL_MARKERS, and OpenMMLab's), by which one is found nested
NESTED_MARKERS = (*MODEL_MARKERS, "patch_embed.projection.weight")
NESTING_DEPTH = 4


def nested_weights(obj: object, source: str) -> TrainingWeights:
    """The one Swin state dict inside `obj` under keys of the training script's own (`model_state_dict`, as the
    PyTorch tutorial saves, or `['checkpoint']['net']`), remembering where; a one-line error where there are several
    (a teacher and a student) or none, saying what the file holds instead."""
    found = list(_swin_dicts(obj, ()))
    if len(found) > 1:
        where = [spelled(path) for path, _ in found]
        raise SwinzooError(f"{source} holds {len(found)} Swin state dicts (under {', '.join(where[:4])}); save the "
                           f"one you want on its own and read that: torch.save(torch.load('{source}', "
                           f"weights_only=True){where[0]}, 'model.pth')")
    if not found:
        raise SwinzooError(f"{source} holds no state dict of tensors ({described(obj)}); expected a Swin checkpoint")
    path, sd = found[0]
    weights = TrainingWeights(without_wrappers(sd))
    weights.taken = f"the Swin state dict under {spelled(path)}"
    return weights


def _swin_dicts(obj: object, path: tuple):
    if not isinstance(obj, dict) or len(path) > NESTING_DEPTH:
        return
    if path and obj and is_tensor_dict(obj) and any(str(k).endswith(NESTED_MARKERS) for k in obj):
        yield path, obj
        return
    for key, value in obj.items():
        yield from _swin_dicts(value, (*path, key))


def spelled(path: tuple) -> str:
    return "".join(f"[{key!r}]" for key in path)


def described(obj: object) -> str:
    """What a torch file holds, in a few words."""
    if isinstance(obj, torch.Tensor):
        return f"a single tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, dict):
        keys = [str(k) for k in obj]
        return f"a dict of {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}" if keys else "an empty dict"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} item{'s' if len(obj) != 1 else ''}"
    return f"a {type(obj).__name__}"
