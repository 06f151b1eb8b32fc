"""`convert` and `export`: any source -> swinzoo's own file, or another library's format, optionally moved to a new
resolution, window or class count on the way (`transfer`, which reports what it did)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

from swinzoo import converters
from swinzoo.config import SwinConfig, geometry_problem, scaled_window, suggest_geometry
from swinzoo.converters import Checkpoint, graph
from swinzoo.converters.dense import backbone_config, check_features_only, to_backbone
from swinzoo.converters.mmdet import dropped_summary
from swinzoo.converters.objects import Source, source_name
from swinzoo.converters.simmim import is_simmim
from swinzoo.errors import SwinzooError, python_api
from swinzoo.io import check_new_file, check_writable_folder
from swinzoo.models import SwinBackbone, SwinTransformer, parameter_shapes
from swinzoo.models.resize import record_transfer
from swinzoo.models.timm_api import check_pool
from swinzoo.sources import check_override_names, check_weight_overrides, read_checkpoint, stage_indices
from swinzoo.state_dicts import load_strict, verify_state_dict
from swinzoo.weight_transfer import TransferReport, transfer
from swinzoo.zoo import zoo_config


@dataclass
class Converted:
    """What `convert` / `export` wrote: the output, its config, the transfer report and how to load it."""

    output: Path
    config: SwinConfig
    report: TransferReport
    how_to_load: str


def target_config(src: SwinConfig, res: int | None = None, window: int | None = None,
                  num_classes: int | None = None) -> SwinConfig:
    """The config the user asked for: the source with resolution, window and classes replaced. Without a window, a
    new resolution gets the source's window scaled with it (the official 224/w7 -> 384/w12 choice)."""
    for name, value in (("res", res), ("window", window), ("num_classes", num_classes)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise SwinzooError(f"{name} must be a positive integer, got {value!r}")
    img_size = res or src.img_size
    if window is None:
        window = src.window_size if img_size == src.img_size else scaled_window(src, img_size)
    problem = geometry_problem(img_size, window, src.patch_size, src.num_stages)
    if problem:
        raise SwinzooError(f"{problem}; {suggest_geometry(img_size, window, src.patch_size, src.num_stages)}")
    changes = {"img_size": img_size, "window_size": window}
    if num_classes is not None and num_classes != src.num_classes:
        changes.update(num_classes=num_classes, class_names=None)
    return src.replace(**changes)


def read_transferred(src: str | os.PathLike | Source, *, res: int | None = None, window: int | None = None,
                     num_classes: int | None = None, from_format: str = "auto", arch: str | None = None,
                     trust_checkpoint: bool = False, allow_nonfinite: bool = False,
                     keep_simmim: bool = False, ema: bool | None = None) -> tuple[Checkpoint, TransferReport]:
    """`src` read and moved to the target the arguments describe. Provenance records the surgery. A SimMIM
    pretraining checkpoint becomes a classifier by the official SimMIM fine-tune load, unless `keep_simmim`."""
    name = source_name(src)
    source = read_checkpoint(src, from_format=from_format, arch=arch, trust_checkpoint=trust_checkpoint,
                             allow_nonfinite=allow_nonfinite, ema=ema)
    if keep_simmim and is_simmim(source.state_dict):
        if res is not None or window is not None or num_classes is not None:
            raise SwinzooError("a SimMIM pretraining model is written at its own geometry: drop --res, --window and "
                               "--num-classes, or move its encoder to a classifier first (swinzoo convert SRC --res "
                               "... -o cls.safetensors) and export that")
        return source, TransferReport(kept=len(source.state_dict))
    if source.config.is_backbone:
        state_dict, dst, report = backbone_transfer(source, res, window, num_classes)
    else:
        dst = target_config(source.config, res, window, num_classes)
        state_dict, dst, report = transfer(source.state_dict, source.config, dst)
    verify_state_dict(parameter_shapes(dst), state_dict, name)
    report.notes[:0] = source.notes  # e.g. which of a training checkpoint's weights were read
    if source.provenance.get("dropped"):
        report.notes.insert(0, f"kept the backbone ({source.provenance.get('layout', 'OpenMMLab')} layout, outputs "
                               f"{list(dst.out_indices or ())}); dropped {len(source.provenance['dropped'])} other "
                               f"keys: {dropped_summary(source.provenance['dropped'])}")
    provenance = dict(source.provenance)
    provenance.setdefault("source", name)
    if report.changed:
        record_transfer(provenance, {"from": source.config.to_dict(), **report.to_dict()})
    return Checkpoint(state_dict, dst, provenance), report


def backbone_transfer(source: Checkpoint, res: int | None, window: int | None, num_classes: int | None
                      ) -> tuple[dict, SwinConfig, TransferReport]:
    """A backbone takes any input size and has no head: it is kept as it is (resolution, window and classes do not
    apply; its `img_size` is only where its absolute position embedding is stored)."""
    asked = [f"--{n.replace('_', '-')}" for n, v in (("res", res), ("window", window), ("num_classes", num_classes))
             if v is not None]
    if asked:
        raise SwinzooError(f"{' and '.join(asked)} cannot be applied to a detection backbone (it takes any input "
                           "size and has no head); convert it without them")
    return dict(source.state_dict), source.config, TransferReport(kept=len(source.state_dict))


@python_api()
def convert(src: str | os.PathLike | Source, output: str | os.PathLike, *, res: int | None = None,
            window: int | None = None, num_classes: int | None = None, from_format: str = "auto",
            arch: str | None = None, trust_checkpoint: bool = False, allow_nonfinite: bool = False,
            features: bool = False, out_indices: int | tuple[int, ...] | None = None, overwrite: bool = False,
            ema: bool | None = None) -> Converted:
    """Any supported checkpoint or model in memory (see `export`) -> a swinzoo .safetensors file (config and
    provenance inside); `features`: its detection backbone (see `export`); `overwrite`: replace `output` when it
    exists; `ema`: see `export`."""
    return export(src, "swinzoo", output, res=res, window=window, num_classes=num_classes, from_format=from_format,
                  arch=arch, trust_checkpoint=trust_checkpoint, allow_nonfinite=allow_nonfinite, features=features,
                  out_indices=out_indices, overwrite=overwrite, ema=ema)


FOLDER_FORMATS = ("timm", "hf")  # the rest write one file
FILE_EXAMPLES = {"swinzoo": "model.safetensors", "onnx": "model.onnx", "pt2": "model.pt2"}
# readers go by the suffix (swinzoo info, torch.export.load, onnxruntime): a torch zip named .safetensors reads as
# a damaged safetensors file, so a suffix of another format is refused before anything is written
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
FILE_SUFFIXES = {"swinzoo": (".safetensors",), "onnx": (".onnx",), "pt2": (".pt2",),
                 **dict.fromkeys(("official", "torchvision", "mmdet", "simmim"), TORCH_SUFFIXES)}
SUFFIX_FORMATS = {".safetensors": "swinzoo's own format, written by swinzoo convert", ".onnx": "written by --to onnx",
                  ".pt2": "written by --to pt2", ".ckpt": "a Lightning checkpoint",
                  **dict.fromkeys(TORCH_SUFFIXES, "a torch file, by --to official, torchvision, mmdet or simmim")}


def check_output_suffix(to: str, output: Path) -> None:
    """A one-line error when `output`'s suffix is another format's (a folder format: any file format's)."""
    suffix = output.suffix.lower()
    if to in FOLDER_FORMATS:
        if suffix in SUFFIX_FORMATS:
            raise SwinzooError(f"--to {to} writes a folder (config.json and model.safetensors), not a {suffix} file; "
                               f"give a folder name, e.g. {output.with_suffix('')}")
        return
    expected = FILE_SUFFIXES.get(to)
    # a format added to the registry names its own files; a suffix no format claims is the user's choice
    if expected is None or suffix in expected or suffix not in SUFFIX_FORMATS:
        return
    what = "swinzoo convert" if to == "swinzoo" else f"--to {to}"
    raise SwinzooError(f"{what} writes a {' / '.join(expected)} file, not {output.name!r} ({suffix}: "
                       f"{SUFFIX_FORMATS[suffix]}); name the output {output.with_suffix(expected[0]).name}")


@python_api()
def export(src: str | os.PathLike | Source, to: str, output: str | os.PathLike, *, res: int | None = None,
           window: int | None = None, num_classes: int | None = None, from_format: str = "auto",
           arch: str | None = None, trust_checkpoint: bool = False, allow_nonfinite: bool = False,
           allow_numeric_change: bool = False, overwrite: bool = False, features: bool = False,
           out_indices: int | tuple[int, ...] | None = None, ema: bool | None = None) -> Converted:
    """Any supported checkpoint, or a model in memory as `read_checkpoint` takes one (its provenance says so; the
    weights are written in the dtype it holds) -> format `to`: a weight format (official, timm, hf, torchvision,
    mmdet; see `swinzoo.converters`) or a graph with dynamic batch, height and width (`onnx`, `pt2`; see
    `converters.graph`).

    `allow_numeric_change`: torchvision only, export a V2 model with pretrained windows anyway (its biases change).
    `overwrite`: replace an existing output file, or write a folder format into a folder that holds other files or
    another kind of export (only the format's files are replaced).
    `features` / `out_indices`: export the detection backbone of a classifier (as `load_model(features_only=True)`).
    `ema`: a training checkpoint's EMA weights (True) or trained ones (False); by default the EMA where there is one.
    """
    # as given, not Path(...): a trailing slash says the user named a folder, which a file format refuses
    name, output = source_name(src), os.fspath(output)
    if not output.strip():  # an unset shell variable: else '.', a folder format's files written into it
        example = f"out_{to}" if to in FOLDER_FORMATS else FILE_EXAMPLES.get(to, "model.pth")
        raise SwinzooError(f"the output path (-o) is empty; give the path to write, e.g. -o {example}")
    if to not in graph.GRAPH_FORMATS:
        converters.get_format(to)  # an unknown format fails before anything is read
    check_output_suffix(to, Path(output))
    if to not in FOLDER_FORMATS:  # (a folder output is checked by its writer: earlier exports of its kind are its own)
        check_new_file(output, overwrite, FILE_EXAMPLES.get(to, "model.pth"))
    else:  # ... but where it goes is checked now, before the source is read and moved
        check_writable_folder(Path(output))
    if num_classes is not None and (features or out_indices is not None):
        raise SwinzooError("--num-classes does not apply to a backbone (--features drops the head); drop one of them")
    # for a backbone the window is the backbone's (bias tables resized to it), not a classifier transfer's
    backbone_window = window if features or out_indices is not None else None
    checkpoint, report = read_transferred(src, res=res, window=None if backbone_window else window,
                                          num_classes=num_classes, from_format=from_format, arch=arch,
                                          trust_checkpoint=trust_checkpoint, allow_nonfinite=allow_nonfinite,
                                          keep_simmim=to in ("simmim", "hf"), ema=ema)
    out_indices = stage_indices(out_indices, checkpoint.config.num_stages)
    if check_features_only(checkpoint.config, features or None, out_indices, name) and (
            not checkpoint.config.is_backbone or out_indices is not None or backbone_window is not None):
        checkpoint, notes = to_backbone(checkpoint, out_indices, backbone_window)
        report.notes.extend(notes)
    if to in graph.GRAPH_FORMATS:
        how = graph.write(checkpoint, to, output, overwrite)
    else:
        how = converters.write(checkpoint, to, output, allow_numeric_change, overwrite)
    return Converted(Path(output), checkpoint.config, report, how)


CREATE_KEYWORDS = ("pretrained", "num_classes", "img_size", "window_size", "features_only", "out_indices",
                   "frozen_stages")
# timm's create_model keywords a swinzoo classifier takes: its pooling, and the any-size inputs it always accepts
TIMM_KEYWORDS = ("global_pool", "dynamic_img_size", "strict_img_size")


def timm_keywords(overrides: dict) -> dict:
    """Take timm's keywords out of `overrides` (in place) and check them: a one-line error for what swinzoo cannot
    do (other pooling, a strict input size)."""
    given = {k: overrides.pop(k) for k in TIMM_KEYWORDS if k in overrides}
    if given.get("global_pool") is not None:
        check_pool(given["global_pool"])  # before any weights are read
    if given.get("strict_img_size") or given.get("dynamic_img_size", True) is False:
        raise SwinzooError("swinzoo models take any input size (masked padding; an absolute position embedding only "
                           "its img_size): drop strict_img_size / dynamic_img_size")
    return given


def check_create_arguments(num_classes, img_size, window_size, overrides: dict) -> None:
    """One line for an argument `create_model` cannot take, before any weights are read or built."""
    check_override_names(overrides, "create_model", CREATE_KEYWORDS)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 0):
        raise SwinzooError(f"num_classes must be a whole number of classes (0: no head, the pooled features), got "
                           f"{num_classes!r}")
    for what, value in (("img_size", img_size), ("window", window_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SwinzooError(f"{what} must be a positive integer, got {value!r}")


def without_head(checkpoint: Checkpoint) -> Checkpoint:
    """timm's `num_classes=0`: the pooled features, no classifier; the provenance says which head was dropped."""
    state_dict = {k: v for k, v in checkpoint.state_dict.items() if not k.startswith("head.")}
    provenance = dict(checkpoint.provenance)
    if len(state_dict) < len(checkpoint.state_dict):
        provenance["head_dropped"] = (f"the {checkpoint.config.num_classes}-class head (num_classes=0: the model "
                                      "returns the pooled features)")
    return Checkpoint(state_dict, checkpoint.config.replace(num_classes=0, class_names=None), provenance)


# what `features_only` builds, for type checkers: user code calls classifier or backbone methods without narrowing
@overload
def create_model(name: str | os.PathLike, *, pretrained: bool = ..., num_classes: int | None = ...,
                 img_size: int | None = ..., window_size: int | None = ..., features_only: Literal[False] = ...,
                 out_indices: int | tuple[int, ...] | None = ..., frozen_stages: int = ...,
                 **overrides: Any) -> SwinTransformer: ...
@overload
def create_model(name: str | os.PathLike, *, pretrained: bool = ..., num_classes: int | None = ...,
                 img_size: int | None = ..., window_size: int | None = ..., features_only: Literal[True],
                 out_indices: int | tuple[int, ...] | None = ..., frozen_stages: int = ...,
                 **overrides: Any) -> SwinBackbone: ...
@overload
def create_model(name: str | os.PathLike, *, pretrained: bool = ..., num_classes: int | None = ...,
                 img_size: int | None = ..., window_size: int | None = ..., features_only: bool,
                 out_indices: int | tuple[int, ...] | None = ..., frozen_stages: int = ...,
                 **overrides: Any) -> SwinTransformer | SwinBackbone: ...
@python_api()
def create_model(name: str | os.PathLike, *, pretrained: bool = False, num_classes: int | None = None,
                 img_size: int | None = None, window_size: int | None = None, features_only: bool = False,
                 out_indices: int | tuple[int, ...] | None = None, frozen_stages: int = -1,
                 **overrides: Any) -> SwinTransformer | SwinBackbone:
    """A zoo model (`swin_b_224`, `swinv2_b_384_w24.in22k_ft_in1k`, or timm's spelling of either): fresh weights,
    or with `pretrained=True` the released ones, moved to `num_classes` / `img_size` / `window_size` when given as
    `convert` would (head re-initialised or mapped 22k -> 1k, bias tables resized, V2 windows recorded).
    `num_classes=0` (timm's idiom): no head, the model returns the pooled features; pretrained, the head is dropped.
    A new `img_size` without `window_size` scales the window with it (224/w7 -> 384/w12), fresh weights too.
    Other `overrides` are `SwinConfig` fields that do not change the weights (e.g. `drop_path_rate=0.2`), with the
    official meanings: `drop_rate` is the dropout after the position embedding and in every block, not timm's
    dropout before the head only. timm's `global_pool` ("avg", or "": no pooling, the token map or per-token
    logits) and `dynamic_img_size=True` / `strict_img_size=False` (what swinzoo's models do anyway) are taken too.

    `features_only=True`: the zoo architecture as a `SwinBackbone` (see `load_model`) returning `out_indices`
    (default all stages); `window_size` alone resizes the pretrained classifier's bias tables once, straight to the
    backbone's window (`load_model(name, features_only=True, window=W)`); with `img_size` the classifier is moved
    first, as above."""
    name = os.fspath(name)
    timm_args = timm_keywords(overrides)
    check_create_arguments(num_classes, img_size, window_size, overrides)
    if features_only and timm_args.get("global_pool") is not None:
        raise SwinzooError("global_pool does not apply to a backbone (features_only=True has no head); drop it")
    if not pretrained and window_size is None and img_size is not None:
        # the window the pretrained path would scale to, so fresh and released weights share one geometry
        base = zoo_config(name, **overrides)
        window_size = base.window_size if img_size == base.img_size else scaled_window(base, img_size)
    out_indices = stage_indices(out_indices, zoo_config(name, **({} if pretrained else overrides)).num_stages)
    if check_features_only(zoo_config(name), features_only, out_indices, name):
        if num_classes is not None:
            raise SwinzooError("num_classes does not apply to a backbone (features_only=True has no head); drop it")
        if pretrained and img_size is None:  # straight to the backbone's window, as the official detection loader
            checkpoint, _ = to_backbone(read_checkpoint(name), out_indices, window_size)
        elif pretrained:  # a new pretraining resolution: the classifier moves first (window scaled with it)
            checkpoint, _ = to_backbone(read_transferred(name, res=img_size, window=window_size)[0], out_indices)
        else:
            given = {k: v for k, v in (("img_size", img_size), ("window_size", window_size)) if v is not None}
            checkpoint = Checkpoint({}, backbone_config(zoo_config(name, **given), out_indices),
                                    {"zoo": name, "weights": "initialised"})
        if pretrained:
            check_weight_overrides(overrides, checkpoint.config, "create_model(pretrained=True)")
        config = checkpoint.config.replace(**overrides) if overrides else checkpoint.config
        model = SwinBackbone(config, frozen_stages)
        if pretrained:
            load_strict(model, checkpoint.state_dict, name)
        model.provenance = checkpoint.provenance
        return model
    if frozen_stages != -1:
        raise SwinzooError("frozen_stages applies to backbones only: pass features_only=True as well")
    if not pretrained:
        given = {k: v for k, v in (("num_classes", num_classes), ("img_size", img_size),
                                   ("window_size", window_size)) if v is not None}
        model = SwinTransformer(zoo_config(name, **given, **overrides))
        model.provenance = {"zoo": name, "weights": "initialised"}
        return with_timm_keywords(model, timm_args)
    headless = num_classes == 0
    checkpoint, _ = read_transferred(name, res=img_size, window=window_size,
                                     num_classes=None if headless else num_classes)
    if headless:
        checkpoint = without_head(checkpoint)
    check_weight_overrides(overrides, checkpoint.config, "create_model(pretrained=True)")
    config = checkpoint.config.replace(**overrides) if overrides else checkpoint.config
    model = SwinTransformer(config)
    load_strict(model, checkpoint.state_dict, name)
    model.provenance = checkpoint.provenance
    return with_timm_keywords(model, timm_args)


def with_timm_keywords(model: SwinTransformer, timm_args: dict) -> SwinTransformer:
    if timm_args.get("dynamic_img_size") and model.config.ape:
        raise SwinzooError("this model has an absolute position embedding: it takes only its img_size "
                           f"({model.config.img_size} px) inputs; drop dynamic_img_size")
    if timm_args.get("global_pool") is not None:
        model.global_pool = timm_args["global_pool"]
    return model
