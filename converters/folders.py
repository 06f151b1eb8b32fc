"""Hub-style model folders (timm's and transformers' layout): one `model.safetensors` beside JSON files, written
atomically, and whose folder a config.json describes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from swinzoo.errors import SwinzooError
from swinzoo.io import atomic_dir, read_small_text, safetensors_write_errors
from swinzoo.state_dicts import for_safetensors
from swinzoo.weight_files import SHARD_INDEXES, WEIGHT_CHOICES, weight_map

# the files each kind of folder export writes (timm: config.json and weights; transformers also its preprocessing)
EXPORT_FILES = {"timm": {"config.json", "model.safetensors"},
                "transformers": {"config.json", "model.safetensors", "preprocessor_config.json"}}


def write_model_folder(out_dir: str | Path, tensors: dict[str, torch.Tensor], json_files: dict[str, dict],
                       overwrite: bool = False) -> Path:
    """A Hub-style folder, written atomically: `model.safetensors` (contiguous CPU tensors) and the JSON files.
    An existing folder is refused unless it holds only such files (see `io.atomic_dir`) or `overwrite`."""
    tensors = for_safetensors(tensors)
    earlier = folder_kind(Path(out_dir) / "config.json")
    if not overwrite and earlier not in (None, folder_kind(json_files.get("config.json"))):
        what = {"other": "a config.json that is neither timm's nor transformers'",
                "unreadable": "a config.json that is not JSON"}.get(earlier, f"a {earlier} export")
        raise SwinzooError(f"{out_dir} holds {what}, whose files this export would replace; choose a new or empty "
                           "folder, or pass --overwrite to replace them")
    owned = {*json_files, "model.safetensors"}
    if overwrite:  # an export of the other kind is replaced whole: its files would describe another model
        owned |= EXPORT_FILES.get(earlier, set())
    with atomic_dir(out_dir, owned=owned, overwrite=overwrite) as tmp:
        for name, content in json_files.items():
            (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
        with safetensors_write_errors(out_dir):
            save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    return Path(out_dir)


def config_kind(config: dict | None) -> str | None:
    """Whose config.json this is: "timm" (timm names an `architecture`), "hf" (transformers a `model_type`), or
    None. What format detection and a folder export's check of an existing folder both go by (timm first, as
    detection always tried it first)."""
    if isinstance(config, dict) and "architecture" in config:
        return "timm"
    if isinstance(config, dict) and "model_type" in config:
        return "hf"
    return None


def folder_kind(config) -> str | None:
    """Whose folder a config.json (a path or its content) describes: "transformers", "timm" (`config_kind`),
    "other", "unreadable", or None when there is none."""
    if isinstance(config, Path):
        if not config.is_file():
            return None
        try:
            config = json.loads(read_small_text(config))
        except (OSError, ValueError):
            return "unreadable"
    return {"hf": "transformers", "timm": "timm"}.get(config_kind(config), "other")


def weights_in_folder(folder: Path) -> Path:
    """The weight file of a Hub-style folder, in transformers' order: model.safetensors, its shards' index, then
    pytorch_model.bin and its index (then the .pth names some uploads use)."""
    for name in (*WEIGHT_CHOICES, "pytorch_model.pth", "model.pth"):
        if (folder / name).exists():
            return folder / name
    raise SwinzooError(f"{folder} has no model.safetensors or pytorch_model.bin (nor a sharded model's "
                       f"{SHARD_INDEXES[0]}); give the folder holding the weights")


def is_shard_index(path: str | Path) -> bool:
    return Path(path).name.endswith(".index.json")


def shards_of(index: Path) -> tuple[list[Path], list[str]]:
    """(the shard files a sharded model's index names, the tensor names it maps). The index comes with someone
    else's folder: each shard must be a file name beside it, never a path to follow."""
    try:
        text = read_small_text(index)
    except UnicodeDecodeError:  # not JSON either: said as such below
        text = ""
    tensors = weight_map(text, str(index), "download or save the model again")
    shards = []
    for name in dict.fromkeys(tensors.values()):
        if not (index.parent / name).is_file():
            raise SwinzooError(f"{index.parent}: shard {name} is missing (the index names it); the download or copy "
                               "is incomplete: fetch the whole folder again")
        shards.append(index.parent / name)
    return shards, list(tensors)


def read_config_json(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.exists():
        raise SwinzooError(f"{folder} has no config.json; give a timm or transformers model folder, or the weight "
                           "file itself with --arch NAME")
    try:
        config = json.loads(read_small_text(path))
    except json.JSONDecodeError as e:
        raise SwinzooError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(config, dict):
        raise SwinzooError(f"{path} holds a JSON {type(config).__name__}, not the object of keys a model config is")
    return config
