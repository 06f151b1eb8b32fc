"""Anything a user may name as weights -> a `Checkpoint`: the first arrow of the one path every weight takes.

A source is a local file or folder in any format `swinzoo.converters` reads, `hf-hub:ORG/NAME[@REV]` (fetched
into the Hugging Face cache first), or a zoo name (`swin_b_224.in22k`): shipped with the package (the nano
models) or fetched from its Hub repo and checked against the zoo architecture. `load_model` builds a classifier or a
detection backbone, `load_simmim` a SimMIM pretraining model.
"""

from __future__ import annotations

import difflib
import json
import operator
import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, overload

import torch

from swinzoo import converters, hub
from swinzoo.config import SwinConfig
from swinzoo.converters import Checkpoint
from swinzoo.converters.dense import check_features_only, check_window, to_backbone
from swinzoo.converters.native import PROVENANCE_KEY
from swinzoo.converters.objects import Source, is_path, source_name
from swinzoo.converters.simmim import DECODER_KEYS, MASK_TOKEN, is_simmim
from swinzoo.errors import SwinzooError, python_api
from swinzoo.io import safetensors_metadata
from swinzoo.models import SimMIM, SwinBackbone, SwinTransformer, count_macs, count_params
from swinzoo.models.simmim import NORM_TARGET_KERNEL
from swinzoo.state_dicts import load_strict
from swinzoo.zoo import ZOO, Weights, get_entry, hub_weights, is_zoo_name, split_name, zoo_config


@python_api()
def read_checkpoint(src: str | os.PathLike | Source, *, from_format: str = "auto", arch: str | None = None,
                    trust_checkpoint: bool = False, allow_nonfinite: bool = False,
                    ema: bool | None = None) -> Checkpoint:
    """(canonical state dict, config, provenance) of a file, folder, `hf-hub:` reference or zoo name, or a copy of the
    weights of a model in memory (on the CPU, in the dtype it holds; provenance `in_memory` names the object): a
    SwinTransformer, SwinBackbone or SimMIM, also inside `torch.compile`, `DataParallel` or a Lightning module's
    `.model`; a `Checkpoint`; a timm or transformers Swin model, or a state dict, read by its keys as a weight file.

    `from_format` names the format instead of detecting it; `arch` (a zoo name) gives the architecture where the
    file cannot; `trust_checkpoint` allows a full (unsafe) torch.load of files holding Python objects. Weights
    must be floating point and finite: the first NaN/Inf tensor is an error unless `allow_nonfinite`. `ema`: a
    training checkpoint's EMA weights (True) or trained ones (False); by default the EMA where there is one, as
    timm's load_checkpoint (provenance["checkpoint_entry"] says which).
    """
    if not is_path(src):  # a model in memory: a copy of its weights (converters.objects)
        if ema:
            raise SwinzooError("--ema reads the EMA weights of a local training checkpoint; a model in memory holds "
                               "its own weights: pass the EMA model itself")
        checkpoint = converters.read_object(src, from_format, arch)
        check_weights(checkpoint.state_dict, source_name(src), allow_nonfinite, in_memory=True)
        return checkpoint
    src = os.fspath(src)
    checkpoint = _read(src, from_format, arch, trust_checkpoint, ema)
    check_weights(checkpoint.state_dict, src, allow_nonfinite)
    return checkpoint


def check_weights(state_dict: dict, source: str, allow_nonfinite: bool = False, in_memory: bool = False) -> None:
    """Corrupt weights fail here, not as chance accuracy or `nan` probabilities later; `in_memory`: they are a
    model object's, not a file's."""
    corrupt = ("the model's weights are broken (a diverged step or an edit)" if in_memory
               else "the file is corrupt (download or convert it again)")
    for key, value in state_dict.items():
        dtype = str(value.dtype).replace("torch.", "")
        if not value.is_floating_point():
            raise SwinzooError(f"{source}: {key} holds {dtype} values where weights are floating point; the file is "
                               "corrupt or not a Swin checkpoint")
        if value.element_size() == 1:  # float8: torch cannot even test it for NaN, and its scales are not weights
            raise SwinzooError(f"{source}: {key} holds {dtype} values, quantised weights whose scales (if any) swinzoo "
                               "does not read; give the weights in float32, float16 or bfloat16")
        if not allow_nonfinite and not bool(torch.isfinite(value).all()):
            # only convert / export take the flag: the other verbs have no use for weights that compute NaN
            raise SwinzooError(f"{source}: {key} holds NaN or Inf values; {corrupt}, or copy it as it is with "
                               "`swinzoo convert SRC -o OUT --allow-nonfinite` (e.g. to inspect it)")


def _read(src: str, from_format: str, arch: str | None, trust_checkpoint: bool, ema: bool | None = None
          ) -> Checkpoint:
    if from_format != "auto":
        converters.get_format(from_format)  # an unknown format fails before anything is fetched
    if ema and (hub.is_hub_ref(src) or not Path(src).exists()):
        raise SwinzooError(f"--ema reads the EMA weights of a local training checkpoint; {src} is not one")
    if hub.is_hub_ref(src):
        return _read_hub(src, from_format, arch, trust_checkpoint)
    path = packaged_file(src) or Path(src)
    if not path.exists():
        if looks_like_name(src):
            get_entry(src)  # an unknown name fails here, with the closest names
            if arch is not None:
                converters.check_arch_agrees(zoo_config(src), arch, src)
            checkpoint = _read_hub(hub.zoo_repo(src), "auto", src, trust_checkpoint)
            checkpoint.provenance["zoo"] = src
            return checkpoint
        raise SwinzooError(f"{src} does not exist; check the path")
    return converters.read(path, from_format, arch, trust_checkpoint, ema)


def _read_hub(src: str, fmt: str, arch: str | None, trust_checkpoint: bool) -> Checkpoint:
    folder = hub.fetch(src)
    checkpoint = converters.read(folder, fmt, arch, trust_checkpoint)
    repo, revision = hub.parse_ref(src)
    checkpoint.provenance = {**checkpoint.provenance, "source": src, "hub_repo": repo, "revision": revision,
                             "local_path": str(folder)}
    weights = hub_weights(repo)  # a zoo name, or the Hub repo of zoo weights spelled out
    return with_zoo_class_names(checkpoint, weights) if weights else checkpoint


def with_zoo_class_names(checkpoint: Checkpoint, weights: Weights) -> Checkpoint:
    """Zoo weights with an ImageNet-1k head get its class names: timm's Hub repos do not carry them."""
    names = weights.class_names
    if names and checkpoint.config.class_names is None and checkpoint.config.num_classes == len(names):
        checkpoint.config = checkpoint.config.replace(class_names=names)
    return checkpoint


# what `features_only` builds, for type checkers. By default a classifier file gives a SwinTransformer, a detector a
# SwinBackbone: `SwinTransformer | Any` (typeshed's idiom) checks the common case without making every caller narrow
@overload
def load_model(src: str | os.PathLike | Source, *, features_only: Literal[True],
               out_indices: int | tuple[int, ...] | None = ..., frozen_stages: int = ..., window: int | None = ...,
               from_format: str = ..., arch: str | None = ..., trust_checkpoint: bool = ..., ema: bool | None = ...,
               **config_overrides: Any) -> SwinBackbone: ...
@overload
def load_model(src: str | os.PathLike | Source, *, features_only: Literal[False],
               out_indices: int | tuple[int, ...] | None = ..., frozen_stages: int = ..., window: int | None = ...,
               from_format: str = ..., arch: str | None = ..., trust_checkpoint: bool = ..., ema: bool | None = ...,
               **config_overrides: Any) -> SwinTransformer: ...
@overload
def load_model(src: str | os.PathLike | Source, *, features_only: None = ..., out_indices: None = ...,
               frozen_stages: int = ..., window: int | None = ..., from_format: str = ..., arch: str | None = ...,
               trust_checkpoint: bool = ..., ema: bool | None = ...,
               **config_overrides: Any) -> SwinTransformer | Any: ...
@overload
def load_model(src: str | os.PathLike | Source, *, features_only: bool | None = ...,
               out_indices: int | tuple[int, ...] | None = ..., frozen_stages: int = ..., window: int | None = ...,
               from_format: str = ..., arch: str | None = ..., trust_checkpoint: bool = ..., ema: bool | None = ...,
               **config_overrides: Any) -> SwinTransformer | SwinBackbone: ...
@python_api()
def load_model(src: str | os.PathLike | Source, *, features_only: bool | None = None,
               out_indices: int | tuple[int, ...] | None = None, frozen_stages: int = -1, window: int | None = None,
               from_format: str = "auto", arch: str | None = None, trust_checkpoint: bool = False,
               ema: bool | None = None, **config_overrides: Any) -> SwinTransformer | SwinBackbone:
    """A model from anything `read_checkpoint` reads: a swinzoo .safetensors file, an official .pth, a timm /
    transformers / torchvision checkpoint or folder, an OpenMMLab detector / segmentor, `hf-hub:ORG/NAME`, or a
    zoo name, or a model in memory (a new model holding a float32 copy of its weights; see `read_checkpoint`).
    The model carries `.config` and `.provenance`; `config_overrides` are `SwinConfig` fields that do not
    change what the weights mean (e.g. `drop_path_rate=0.2`): a new resolution, window or head is a transfer
    (`swinzoo.convert`, `create_model(name, pretrained=True, ...)`), and is refused here.

    `features_only=True` returns a `SwinBackbone` (official detection numerics, NCHW maps of the stages in
    `out_indices`, default all, read as timm does: an int n is the last n stages, a negative index counts from the
    end; `frozen_stages` as the official backbone): from a classifier, its head and final norm are dropped and the
    output norms start fresh. A backbone checkpoint (a detector) loads as a backbone by default
    (`features_only=None`). `window` gives a backbone a new fixed window, as the official detection
    loader does from a classifier: V1 bias tables resized bicubically, V2 CPB MLPs kept as they are.
    `from_format`, `arch`, `trust_checkpoint` and `ema` read `src` as `read_checkpoint` does.
    """
    name = source_name(src)
    check_window(window, features_only)  # before anything is fetched
    check_override_names(config_overrides, "load_model", ("features_only", "out_indices", "frozen_stages", "window",
                                                          "from_format", "arch", "trust_checkpoint", "ema"))
    checkpoint = read_checkpoint(src, from_format=from_format, arch=arch, trust_checkpoint=trust_checkpoint, ema=ema)
    out_indices = stage_indices(out_indices, checkpoint.config.num_stages)
    if is_simmim(checkpoint.state_dict):
        raise SwinzooError(f"{name} is a SimMIM pretraining checkpoint: load it with swinzoo.load_simmim, or "
                           "fine-tune/convert it (the encoder moves to the classifier)")
    if check_features_only(checkpoint.config, features_only, out_indices, name, window):
        checkpoint, _ = to_backbone(checkpoint, out_indices, window)
    elif frozen_stages != -1:
        raise SwinzooError("frozen_stages applies to backbones only: pass features_only=True as well")
    check_weight_overrides(config_overrides, checkpoint.config, "load_model")
    config = checkpoint.config.replace(**config_overrides) if config_overrides else checkpoint.config
    model = SwinBackbone(config, frozen_stages) if config.is_backbone else SwinTransformer(config)
    load_strict(model, checkpoint.state_dict, name)
    model.provenance = checkpoint.provenance
    return model


# SwinConfig fields the weights do not depend on; the others describe the tensors or the geometry they were trained
# at, which only a transfer (convert, create_model(pretrained=True)) may change
WEIGHT_FREE_FIELDS = ("drop_rate", "drop_path_rate", "class_names", "preprocess")
GEOMETRY_FIELDS = ("img_size", "window_size", "pretrained_window_sizes")


def check_override_names(overrides: dict, caller: str, keywords: tuple[str, ...]) -> None:
    """A one-line error for a keyword that is neither one of `caller`'s own `keywords` nor a `SwinConfig` field."""
    valid = [f.name for f in fields(SwinConfig) if f.name not in keywords]
    for key in overrides:
        if key not in valid:
            close = difflib.get_close_matches(key, [*keywords, *valid], n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise SwinzooError(f"{caller} has no argument {key!r}; {hint}it takes {', '.join(keywords)} and the "
                               f"SwinConfig fields {', '.join(valid)}")


def check_weight_overrides(overrides: dict, config: SwinConfig, caller: str) -> None:
    """A one-line error for an override that would change what the loaded weights mean: the architecture, the
    geometry (V1 bias tables, V2 windows) or the head. Overrides equal to the checkpoint's own values are kept."""
    for key, value in overrides.items():
        if key in WEIGHT_FREE_FIELDS or same_value(config, key, value):
            continue
        if key == "window_size" and config.is_backbone:
            raise SwinzooError(f"{caller} gives a backbone a new window with window={value!r}, not window_size")
        if key in GEOMETRY_FIELDS:
            raise SwinzooError(f"{caller} loads the weights at their own geometry, so {key}={value!r} is refused: move "
                               "them with swinzoo.convert(src, out, res=..., window=...) and load the result, or use "
                               "create_model(name, pretrained=True, img_size=..., window_size=...) for a zoo name")
        if key == "num_classes":
            raise SwinzooError(f"{caller} keeps the checkpoint's head ({config.num_classes} classes), so "
                               f"num_classes={value!r} is refused: use create_model(name, pretrained=True, "
                               f"num_classes={value!r}) or swinzoo.convert(src, out, num_classes={value!r}) (CLI: "
                               f"swinzoo convert --num-classes {value!r})")
        raise SwinzooError(f"{key} is part of the architecture the weights belong to ({getattr(config, key)!r}), so "
                           f"{caller} cannot change it: create_model(name, {key}=...) builds fresh weights of "
                           "another architecture")


def same_value(config: SwinConfig, key: str, value) -> bool:
    """Whether `value` is what `config` already holds for `key`, as the config spells it (a list as a tuple)."""
    try:
        return getattr(config.replace(**{key: value}), key) == getattr(config, key)
    except SwinzooError:
        return False


def stage_indices(value, num_stages: int) -> tuple[int, ...] | None:
    """`out_indices` as timm reads it: None (all stages), an int n (the last n stages), or stage numbers where a
    negative one counts from the end; as the sorted absolute stage numbers, or a one-line error."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= num_stages:
            raise SwinzooError(f"out_indices={value} asks for the last {value} stages, but this model has "
                               f"{num_stages}: give 1..{num_stages}, or a list of stage numbers")
        return tuple(range(num_stages - value, num_stages))
    try:  # whole numbers only: 1.0, "1" or True is a mistake, not a stage
        items = [operator.index(i) for i in value]
        if any(isinstance(i, bool) for i in value):
            raise TypeError
    except TypeError:
        raise SwinzooError(f"out_indices must be a number of last stages or a list of stage numbers "
                           f"(0..{num_stages - 1}, or -{num_stages}..-1 from the end), got {value!r}") from None
    wrong = [i for i in items if not -num_stages <= i < num_stages]
    if not items or wrong:
        raise SwinzooError(f"out_indices {list(value)} out of range: this model has {num_stages} stages, so pick from "
                           f"0..{num_stages - 1} or -{num_stages}..-1 (e.g. out_indices=(1, 2, 3) or 3 for the last 3)")
    return tuple(sorted({i % num_stages for i in items}))


@python_api()
def load_simmim(src: str | os.PathLike | Source, *, norm_targets: bool | None = None,
                norm_target_kernel: int = NORM_TARGET_KERNEL, mask_patch_size: int | None = None,
                mask_ratio: float | None = None, from_format: str = "auto", arch: str | None = None,
                trust_checkpoint: bool = False, ema: bool | None = None, **config_overrides: Any) -> SimMIM:
    """A SimMIM pretraining model (`models.simmim.SimMIM`, official numerics) from a SimMIM checkpoint (an official
    pretraining .pth, or swinzoo's own file holding one), or built around the encoder of any classification source
    `read_checkpoint` reads (a zoo name, file, folder or `hf-hub:` reference): its head is dropped, the mask token
    starts from the official truncated normal(0.02) and the decoder from PyTorch's default init, and the
    provenance says so. The model carries `.config` (the encoder's) and `.provenance`.

    `norm_targets` / `norm_target_kernel`: the loss compares with locally normalised images (official NORM_TARGET);
    `mask_patch_size`, `mask_ratio`: what `model.mask_generator()` draws. Not given, they are what the checkpoint's
    `swinzoo pretrain` run used (its provenance), else the official 32 px, 0.6 and raw targets. `config_overrides`
    are `SwinConfig` fields that do not change the weights (e.g. `drop_path_rate=0.1`). `from_format`, `arch`,
    `trust_checkpoint` and `ema` read `src` as `read_checkpoint` does.
    """
    name = source_name(src)
    check_override_names(config_overrides, "load_simmim", ("norm_targets", "norm_target_kernel", "mask_patch_size",
                                                           "mask_ratio", "from_format", "arch", "trust_checkpoint",
                                                           "ema"))
    checkpoint = read_checkpoint(src, from_format=from_format, arch=arch, trust_checkpoint=trust_checkpoint, ema=ema)
    check_weight_overrides(config_overrides, checkpoint.config, "load_simmim")
    config, provenance = checkpoint.config, dict(checkpoint.provenance)
    if config.is_backbone:
        raise SwinzooError(f"{name} is a detection backbone (no final norm): SimMIM pretrains a classification "
                           "encoder; give a classifier or a SimMIM checkpoint")
    fresh = not is_simmim(checkpoint.state_dict)
    if fresh:
        dropped = [k for k in checkpoint.state_dict if k.startswith("head.")]
        provenance["simmim"] = {"encoder_from": name, "dropped": dropped,
                                "initialised": [f"{MASK_TOKEN} (truncated normal, std 0.02, as the official)",
                                                "decoder.0 (PyTorch's default Conv2d init, as the official)"]}
    config = config.replace(**config_overrides) if config_overrides else config  # SimMIM drops the head
    recorded = {} if fresh else simmim_settings(provenance)
    model = SimMIM(config, norm_targets=recorded.get("norm_targets", False) if norm_targets is None else norm_targets,
                   norm_target_kernel=norm_target_kernel,
                   mask_patch_size=recorded.get("mask_patch_size", 32) if mask_patch_size is None else mask_patch_size,
                   mask_ratio=recorded.get("mask_ratio", 0.6) if mask_ratio is None else mask_ratio)
    state_dict = checkpoint.state_dict
    if fresh:
        own = model.state_dict()
        state_dict = {MASK_TOKEN: own[MASK_TOKEN], **{k: own[k] for k in DECODER_KEYS},
                      **{"encoder." + k: v for k, v in state_dict.items() if not k.startswith("head.")}}
    load_strict(model, state_dict, name)
    model.provenance = provenance
    return model


SIMMIM_SETTINGS = ("mask_patch_size", "mask_ratio", "norm_targets")


def simmim_settings(provenance: dict) -> dict:
    """The mask and target settings a `swinzoo pretrain` run recorded in its model's provenance (none: {})."""
    recorded = provenance.get("simmim")
    return {k: recorded[k] for k in SIMMIM_SETTINGS if k in recorded} if isinstance(recorded, dict) else {}


def packaged_file(src: str | os.PathLike) -> Path | None:
    """The file shipped inside swinzoo for a zoo name whose weights are package data (the nano models), or None."""
    src = os.fspath(src)
    if not looks_like_name(src) or Path(src).exists() or split_name(src)[0] not in ZOO:
        return None
    entry, tag = ZOO[split_name(src)[0]], split_name(src)[1]
    weights = next((w for w in entry.weights if w.tag == (tag or entry.default_tag)), None)
    return weights.package_path() if weights else None


def shipped_provenance(src: str | os.PathLike) -> dict:
    """The provenance of the weights shipped inside swinzoo for a zoo name ({} for any other source)."""
    path = packaged_file(src)
    return json.loads(safetensors_metadata(path).get(PROVENANCE_KEY, "{}")) if path is not None else {}


def looks_like_name(src: str | os.PathLike) -> bool:
    """A bare word such as `swin_b_224.in22k`, not a path: no folder separator and no checkpoint suffix."""
    src = os.fspath(src)
    suffixes = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
    return "/" not in src and "\\" not in src and Path(src).suffix not in suffixes


@python_api()
def model_info(src: str | os.PathLike | Source, *, from_format: str = "auto", arch: str | None = None,
               trust_checkpoint: bool = False, ema: bool | None = None) -> dict:
    """`swinzoo info`: {name, config, params, gmacs, ...} of a zoo name (paper numbers, weights) or a checkpoint
    (its provenance); `from_format`, `arch`, `trust_checkpoint` and `ema` read it as `read_checkpoint` does."""
    name = source_name(src)
    if is_path(src) and is_zoo_name(name):
        src = name
        entry, tag = get_entry(src)
        cfg = entry.config(tag)
        if arch is not None:
            converters.check_arch_agrees(cfg, arch, src)
        w = entry.weights_for(tag)
        extra = {"tag": w.tag, "top1": w.top1, "hub_repo": w.hub_repo, "official_url": w.official_url,
                 "paper_params_m": entry.params_m, "paper_gmacs": entry.gmacs}
    else:
        checkpoint = read_checkpoint(src, from_format=from_format, arch=arch, trust_checkpoint=trust_checkpoint,
                                     ema=ema)
        cfg = checkpoint.config
        extra = {"provenance": checkpoint.provenance}
    return {"name": name, "config": cfg.to_dict(), "params": count_params(cfg), "gmacs": count_macs(cfg) / 1e9,
            **extra}
