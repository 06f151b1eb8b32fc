"""Checkpoint formats, installed as `swinzoo.converters`: one module per format, registered in one table.

Every weight takes one path: file -> format module -> `Checkpoint` (canonical state dict with official key
names and no buffers, its `SwinConfig`, provenance) -> transfer -> model. Each format module (official, native,
timm, hf, torchvision, mmdet, simmim) ends with `FORMAT = Format(...)`: how to recognise the format, `read` and
`write`. Adding a format is adding one module and one row to `FORMATS`; `swinzoo convert`, `export`, `push`,
`download` and every loader go through `detect`, `read` and `write` below. A SimMIM pretraining checkpoint
(`simmim`, transformers' `...ForMaskedImageModeling` folder in `hf`, and swinzoo's own file holding one) keeps its
`encoder.` / `decoder.0.` keys: `simmim.is_simmim` tells it apart.
"""

from __future__ import annotations

import json
from pathlib import Path

from swinzoo.config import SwinConfig
from swinzoo.converters import hf, hf_mim, mmdet, native, objects, official, simmim, timm, torchvision
from swinzoo.converters.common import Checkpoint, Format, read_weights, unwrap
from swinzoo.converters.folders import read_config_json
from swinzoo.converters.foreign import is_module_checkpoint
from swinzoo.converters.training import TrainingWeights, is_tensor_dict
from swinzoo.errors import SwinzooError
from swinzoo.io import read_small_text
from swinzoo.models import parameter_shapes
from swinzoo.run_folder import CKPT_FILE, PRETRAIN_TASK, RUN_FILE
from swinzoo.state_dicts import verify_state_dict
from swinzoo.zoo import get_entry, timm_archs, zoo_config

FORMATS: dict[str, Format] = {f.name: f for f in (
    native.FORMAT,
    official.FORMAT,
    timm.FORMAT,
    hf.FORMAT,
    torchvision.FORMAT,
    mmdet.FORMAT,
    simmim.FORMAT,
)}
# Key layouts are told apart most specific first: official keys also match parts of the others' patterns.
KEY_DETECTION_ORDER = ("simmim", "mmdet", "torchvision", "hf", "timm", "official")
EXPORT_FORMATS = tuple(name for name, f in FORMATS.items() if f.write is not None and name != "swinzoo")

__all__ = ["EXPORT_FORMATS", "FORMATS", "Checkpoint", "Format", "detect", "get_format", "read", "read_object",
           "write"]


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise SwinzooError(f"unknown format {name!r}; choose one of auto, {', '.join(FORMATS)}")
    return FORMATS[name]


def unfinished_run(folder: Path) -> SwinzooError:
    """The error for a swinzoo run folder without its model.safetensors: killed, or still training."""
    try:  # the verb that continues it: a pretraining run records its task
        task = json.loads(read_small_text(folder / RUN_FILE)).get("provenance", {}).get("task")
    except (OSError, ValueError, AttributeError, SwinzooError):
        task = None
    verb, kind = ("pretrain", "pretraining") if task == PRETRAIN_TASK else ("finetune", "fine-tuning")
    latest = (f"; its latest weights are in {folder / CKPT_FILE}, which every command reads"
              if (folder / CKPT_FILE).is_file() else "")
    return SwinzooError(f"{folder} is a {kind} run that has not finished (no model.safetensors yet): continue it "
                        f"with `swinzoo {verb} --resume {folder}`{latest}")


def unknown_folder(folder: Path) -> SwinzooError:
    """The error for a folder no format claims: named for what it is where that is recognisable."""
    if not any(folder.iterdir()):
        return SwinzooError(f"{folder} is an empty folder, not a checkpoint file; give the model file or folder itself")
    if (folder / ".metadata").is_file() and any(folder.glob("*.distcp")):  # FSDP's sharded save, Lightning's too
        return SwinzooError(f"{folder} is a sharded torch.distributed.checkpoint folder; consolidate it into one "
                            "file first: python -m torch.distributed.checkpoint.format_utils dcp_to_torch "
                            f"{folder} model.pth")
    return SwinzooError(f"{folder} has no config.json, so its format and geometry are unknown; give a timm or "
                        "transformers model folder, or the weight file inside with --from-format and --arch")


def detect(path: Path, trust_checkpoint: bool = False, ema: bool | None = None) -> tuple[Format, dict | None]:
    """(format of a local file or folder, the raw state dict when reading the file was needed to tell; `ema`: which
    weights of a training checkpoint, see `training.take_weights`)."""
    if path.is_dir():
        config_json = read_config_json(path) if (path / "config.json").exists() else None
        for fmt in FORMATS.values():
            if fmt.claims_folder(path, config_json):
                return fmt, None
        if config_json is not None:
            raise SwinzooError(f"{path / 'config.json'} is neither a timm config (no 'architecture') nor a "
                               "transformers config (no 'model_type'); pass --from-format")
        if (path / RUN_FILE).is_file():
            raise unfinished_run(path)
        raise unknown_folder(path)
    if native.has_metadata(path):
        return native.FORMAT, None
    raw = read_weights(path, trust_checkpoint, module_checkpoint=True, ema=ema)
    if is_module_checkpoint(raw):  # SwinClassifier's or SimMIMPretrainer's: the config is in it
        return native.FORMAT, raw
    for name in KEY_DETECTION_ORDER:
        if FORMATS[name].claims_keys(raw):
            return FORMATS[name], raw
    if any(k.startswith("backbone.") for k in raw):
        raise SwinzooError(f"{path} is a detector / segmentor checkpoint whose backbone is not a Swin (first backbone "
                           f"keys: {', '.join([k for k in raw if k.startswith('backbone.')][:3])}); swinzoo reads "
                           "Swin backbones only")
    raise SwinzooError(f"{path} is not a Swin checkpoint swinzoo recognises (official, timm, transformers, "
                       f"torchvision, OpenMMLab or SimMIM keys); first keys seen: {', '.join(list(raw)[:4]) or 'none'}")


def read(path: str | Path, fmt: str = "auto", arch: str | None = None, trust_checkpoint: bool = False,
         ema: bool | None = None) -> Checkpoint:
    """Read a local checkpoint file or folder in format `fmt` (`auto`: detected); `arch`, a zoo name, gives the
    architecture where the file cannot reveal it; `ema` picks a training checkpoint's EMA weights (True) or its
    trained ones (False), by default the EMA where there is one (`training.take_weights`)."""
    path = Path(path)
    raw = None
    if fmt == "auto":
        format_, raw = detect(path, trust_checkpoint, ema)
    else:
        format_ = get_format(fmt)
        if ema is not None and path.is_file() and format_ is not native.FORMAT:  # the format's reader takes the default
            raw = read_weights(path, trust_checkpoint, ema=ema)
    if ema and not getattr(raw, "taken", ""):
        raise SwinzooError(f"{path} is not a training checkpoint holding EMA weights (timm's state_dict_ema, "
                           "torchvision's or the official code's model_ema); drop --ema")
    if arch is not None:
        get_entry(arch)  # unknown names fail here, with suggestions
    checkpoint = format_.read(path, zoo_config(arch) if arch else None, arch or "", trust_checkpoint, raw)
    if arch is not None:  # a file carrying its own config (swinzoo's, a transformers folder) takes that over --arch
        check_arch_agrees(checkpoint.config, arch, str(path))
    if format_ is native.FORMAT:
        return checkpoint
    checkpoint.provenance = {"source": str(path), "format": format_.name, **checkpoint.provenance}
    if getattr(raw, "taken", ""):
        checkpoint.provenance["checkpoint_entry"] = raw.taken
        checkpoint.notes.append(f"read {raw.taken}")
    block = _swinzoo_block(path) if arch is None else None
    if block:  # a folder swinzoo pushed: its full config and history ride along in config.json
        checkpoint.config = SwinConfig.from_dict(block["config"])
        verify_state_dict(parameter_shapes(checkpoint.config), checkpoint.state_dict, str(path))
        checkpoint.provenance = {**block.get("provenance", {}), "loaded_from": str(path)}
    return checkpoint


def read_object(obj: object, fmt: str = "auto", arch: str | None = None) -> Checkpoint:
    """A model in memory (see `objects`); a timm or transformers model, or a state dict, read by its keys as a bare
    weight file of that format is (a transformers model with its `config` as config.json), so where the keys do not
    tell the geometry, `arch` does. Anything else is one line naming what is accepted."""
    checkpoint = objects.swinzoo_checkpoint(obj)
    if checkpoint is not None:
        if arch is not None:
            check_arch_agrees(checkpoint.config, arch, "the in-memory model")
        return checkpoint
    found = objects.unwrap(obj, foreign=True)  # inside torch.compile, DataParallel, a LightningModule's .model
    library = objects.foreign_library(found[0]) if found else None
    if found and library:
        obj, what = found
        raw = obj.state_dict()
    elif isinstance(obj, dict) and obj and is_tensor_dict(obj):
        what, raw = "state dict", obj
    else:
        raise objects.not_a_source(obj)
    name = f"the in-memory {what}"
    raw = unwrap(objects.copied(raw, name), name)  # DDP / torch.compile prefixes off
    format_ = get_format(fmt) if fmt != "auto" else next(
        (FORMATS[f] for f in KEY_DETECTION_ORDER if FORMATS[f].claims_keys(raw)), None)
    if format_ is None or format_ is native.FORMAT:
        raise SwinzooError(f"{name} holds no Swin weights swinzoo recognises (first keys: {', '.join(list(raw)[:4])})"
                           f"; give {objects.ACCEPTED}")
    stated = objects.timm_model_config(obj) if library == "timm" and arch is None else None
    if stated is not None and stated["architecture"] in timm_archs():
        raw = TrainingWeights(raw)  # read as a train.py checkpoint stating its arch and model_kwargs is
        raw.timm_config = stated
    elif arch is not None:
        get_entry(arch)
    elif format_ is timm.FORMAT and any(k.endswith("attn.logit_scale") for k in raw):
        raise SwinzooError(f"{name}: V2 weights do not reveal the window, nor does a timm model object; pass arch=NAME "
                           "(its zoo architecture, e.g. swinv2_t_256_w8), or save it with timm.models.save_for_hf("
                           "model, DIR, model_args={'img_size': ..., 'window_size': ...}) and give DIR")
    config_json = getattr(getattr(obj, "config", None), "to_dict", None) if library == "transformers" else None
    if format_ is hf.FORMAT and config_json is not None and arch is None:
        config = config_json()
        fields = {**hf.config_from_hf(config, f"{name}'s config"), "preprocess": None}  # no image processor here
        checkpoint = hf.from_weights(raw, fields, hf_mim.says_mim(config), name)
    else:
        checkpoint = format_.read(Path(name), zoo_config(arch) if arch else None, arch or "", False, raw)
    checkpoint.provenance = objects.in_memory_record({"format": format_.name, **checkpoint.provenance}, what,
                                                     checkpoint.state_dict)
    return checkpoint


def _swinzoo_block(path: Path) -> dict | None:
    """The `swinzoo` block (config, provenance, metrics) of a pushed folder's config.json, if any."""
    config_json = path / "config.json" if path.is_dir() else None
    if config_json is None or not config_json.exists():
        return None
    block = json.loads(read_small_text(config_json)).get("swinzoo")
    return block if isinstance(block, dict) and isinstance(block.get("config"), dict) else None


def write(checkpoint: Checkpoint, fmt: str, out: str | Path, allow_numeric_change: bool = False,
          overwrite: bool = False) -> str:
    """Write `checkpoint` in format `fmt` at `out` (a file or a folder, as the format makes); returns how to load
    the result in that format's own library."""
    format_ = get_format(fmt)
    if format_.write is None:
        raise SwinzooError(f"swinzoo reads {fmt} but does not write it")
    if simmim.is_simmim(checkpoint.state_dict) and format_ not in (simmim.FORMAT, native.FORMAT, hf.FORMAT):
        # the other layouts hold a classifier or a backbone: a SimMIM encoder + decoder would be written half
        # (hf writes it as transformers' ...ForMaskedImageModeling)
        raise SwinzooError(f"this is a SimMIM pretraining model (encoder + decoder), which {fmt} cannot hold: write "
                           "it as simmim, hf or swinzoo")
    if checkpoint.config.is_backbone and format_ not in (official.FORMAT, mmdet.FORMAT, native.FORMAT):
        # timm, transformers and torchvision hold classifiers: their writers would fail on a missing head or norm
        raise SwinzooError(f"this is a detection backbone (no head), which {fmt} cannot hold: write it as official, "
                           "mmdet or swinzoo, or as a graph (onnx, pt2)")
    return format_.write(checkpoint, out, allow_numeric_change=allow_numeric_change, overwrite=overwrite)


# what `--arch` names; the geometry (img_size, window_size) is left out: a fine-tune at another resolution keeps
# its architecture, and weights that do not tell their geometry are checked against --arch key by key instead
ARCH_FIELDS = ("version", "patch_size", "in_chans", "embed_dim", "depths", "num_heads", "mlp_ratio", "qkv_bias", "ape",
               "patch_norm")


def check_arch_agrees(config: SwinConfig, arch: str, source: str) -> None:
    """One line when `source` names an architecture of its own other than `--arch`'s, where --arch went unheard."""
    expected = zoo_config(arch)
    differ = [f"{key} {getattr(config, key)!r}, not {getattr(expected, key)!r}" for key in ARCH_FIELDS
              if getattr(config, key) != getattr(expected, key)]
    if differ:
        raise SwinzooError(f"--arch {arch} contradicts {source}, which gives its own architecture "
                           f"({'; '.join(differ[:3])}); drop --arch: it is for weights that do not tell their "
                           "architecture (bare V2 weights, official .pth files)")
