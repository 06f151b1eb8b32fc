"""swinzoo's own format: one safetensors file whose metadata holds the config, written atomically.

Metadata keys: `format` ("pt", so other safetensors tools read it as PyTorch), `swinzoo_config` (the `SwinConfig`
as JSON) and `swinzoo_provenance` (JSON: where the weights came from and the surgery done to them). A folder
holding such a `model.safetensors` (a fine-tuning output) loads the same way, and so does a Lightning checkpoint
of swinzoo's `SwinClassifier` or `SimMIMPretrainer` (`.ckpt`, from `swinzoo finetune` or the user's own Trainer):
the config is its hyper-parameters', the weights its model's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from swinzoo.config import SwinConfig
from swinzoo.converters.common import Checkpoint, Format, read_weights
from swinzoo.converters.folders import config_kind
from swinzoo.converters.foreign import is_module_checkpoint
from swinzoo.converters.objects import swinzoo_checkpoint
from swinzoo.errors import SwinzooError
from swinzoo.io import atomic_path, is_safetensors, read_safetensors, safetensors_metadata, safetensors_write_errors
from swinzoo.json_text import strict_dumps
from swinzoo.models import parameter_shapes
from swinzoo.state_dicts import for_safetensors

CONFIG_KEY = "swinzoo_config"
PROVENANCE_KEY = "swinzoo_provenance"


def has_metadata(path: Path) -> bool:
    """A safetensors file that carries a swinzoo config."""
    return path.is_file() and is_safetensors(path) and CONFIG_KEY in safetensors_metadata(path)


def save_state_dict(state_dict: dict[str, torch.Tensor], config: SwinConfig, path: str | Path,
                    provenance: dict | None = None, overwrite: bool = True) -> Path:
    """Write a swinzoo safetensors checkpoint atomically (`overwrite`: see `io.atomic_path`)."""
    tensors = for_safetensors(state_dict)
    metadata = {"format": "pt", CONFIG_KEY: config.to_json(), PROVENANCE_KEY: strict_dumps(provenance or {})}
    with atomic_path(path, overwrite) as tmp, safetensors_write_errors(path):
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def save_model(model: torch.nn.Module | Checkpoint, path: str | Path, provenance: dict | None = None) -> Path:
    """Save a swinzoo model (its parameters, in the dtype it holds, and its `config`) to a safetensors file: a
    SwinTransformer, SwinBackbone or SimMIM, also inside `torch.compile`, `DataParallel` or a Lightning module's
    `.model`, or a `Checkpoint`. `provenance` (default: the model's own, plus which object was saved) is recorded."""
    checkpoint = swinzoo_checkpoint(model)
    if checkpoint is None:
        hint = ("; a timm or transformers model: swinzoo.convert(model, path) reads it by its keys"
                if isinstance(model, torch.nn.Module) else "")
        raise SwinzooError(f"save_model saves a swinzoo model: a SwinTransformer, SwinBackbone or SimMIM (also inside "
                           f"torch.compile, DataParallel or a Lightning module's .model) or a swinzoo.Checkpoint, not "
                           f"a {type(model).__name__}{hint}")
    provenance = provenance if provenance is not None else checkpoint.provenance
    return save_state_dict(checkpoint.state_dict, checkpoint.config, path, provenance)


def model_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.exists():
        raise SwinzooError(f"{path} does not exist; give a swinzoo .safetensors file or a folder holding one")
    return path


def read(path: str | Path, arch: SwinConfig | None = None, arch_name: str = "", trust_checkpoint: bool = False,
         raw: dict | None = None) -> Checkpoint:
    """(state dict, config, provenance) of a swinzoo checkpoint file or folder, or of a Lightning checkpoint of
    swinzoo's modules (`raw`: the checkpoint, when detecting read it); the file's config wins over --arch."""
    if raw is None and Path(path).is_file() and not is_safetensors(Path(path)) and Path(path).suffix != ".safetensors":
        raw = read_weights(path, trust_checkpoint, module_checkpoint=True)  # --from-format swinzoo on a .ckpt
    if raw is not None:
        return read_module_checkpoint(raw, Path(path))
    path = model_file(path)
    tensors, meta = read_safetensors(path, "; re-create it with `swinzoo convert`")
    if CONFIG_KEY not in meta:
        raise SwinzooError(f"{path} has no swinzoo config in its metadata; convert it with `swinzoo convert`")
    try:
        config = SwinConfig.from_json(meta[CONFIG_KEY])
        provenance = json.loads(meta.get(PROVENANCE_KEY, "{}") or "{}")
    except (SwinzooError, json.JSONDecodeError) as e:
        raise SwinzooError(f"{path}: unreadable swinzoo metadata: {e}") from None
    check_weights_match(tensors, config, path)
    return Checkpoint(tensors, config, provenance if isinstance(provenance, dict) else {"provenance": provenance})


SIMMIM_SETTINGS = ("mask_patch_size", "mask_ratio", "norm_targets")  # the recipe keys `load_simmim` reads back


def read_module_checkpoint(obj: dict, path: Path) -> Checkpoint:
    """The model of a Lightning checkpoint of `SwinClassifier` or `SimMIMPretrainer`: weights under `model.`, config,
    recipe and (SimMIM) mask settings from the hyper-parameters; the optimizer and loop state are left out."""
    if not is_module_checkpoint(obj):
        raise SwinzooError(f"{path} is neither a swinzoo .safetensors file nor a Lightning checkpoint of swinzoo's "
                           "SwinClassifier or SimMIMPretrainer; drop --from-format swinzoo to detect its format")
    hparams = obj["hyper_parameters"]
    try:
        config = SwinConfig.from_dict(hparams["config"])
    except (SwinzooError, TypeError, ValueError) as e:
        raise SwinzooError(f"{path}: unreadable model config in its hyper-parameters: {e}") from None
    state_dict = {k[len("model."):]: v for k, v in obj["state_dict"].items() if k.startswith("model.")}
    check_weights_match(state_dict, config, path)
    recipe = hparams.get("recipe") if isinstance(hparams.get("recipe"), dict) else {}
    provenance = {"source": str(path), "format": "lightning checkpoint",
                  "lightning": {k: obj.get(k) for k in ("epoch", "global_step")}}
    if recipe:
        provenance["recipe"] = recipe
        if recipe.get("finetune_recipe"):
            provenance["finetune_recipe"] = recipe["finetune_recipe"]
    if any(k.startswith("encoder.") for k in state_dict):  # SimMIMPretrainer's: keep the masks it trained with
        provenance["simmim"] = {k: recipe[k] for k in SIMMIM_SETTINGS if k in recipe}
    return Checkpoint(state_dict, config, provenance)


def check_weights_match(tensors: dict[str, torch.Tensor], config: SwinConfig, path: Path) -> None:
    """The config in the metadata must describe the tensors: a transfer would otherwise "repair" an edited or
    mismatched file by resizing its bias tables (keys the config does not know, as a SimMIM decoder's, pass). Every
    tensor it describes must be there (a SimMIM file's under `encoder.`, but the head): a config declaring millions
    of classes or a position embedding the file lacks would be built, gigabytes of fresh weights, before a check
    noticed."""
    expected = parameter_shapes(config)
    prefix = "encoder." if any(k.startswith("encoder.") for k in tensors) else ""
    for key, tensor in tensors.items():
        shape = expected.get(key.removeprefix(prefix))
        if shape is not None and tuple(tensor.shape) != tuple(shape):
            raise SwinzooError(f"{path}: its metadata contradicts its weights: {key} is {tuple(tensor.shape)} but "
                               f"its config ({config.img_size} px, window {config.window_size}) gives "
                               f"{tuple(shape)}; re-create the file with `swinzoo convert`")
    # SimMIM's encoder has no head (its config may keep the class count of the encoder's source)
    missing = [k for k in expected if prefix + k not in tensors and not (prefix and k.startswith("head."))]
    if missing:
        raise SwinzooError(f"{path}: its config describes {len(missing)} tensors the file does not hold (first "
                           f"{prefix + missing[0]}, {tuple(expected[missing[0]])}); the file is incomplete or its "
                           "metadata edited: re-create it with `swinzoo convert`")


def write(checkpoint: Checkpoint, out: str | Path, *, allow_numeric_change: bool = False,
          overwrite: bool = False) -> str:
    save_state_dict(checkpoint.state_dict, checkpoint.config, out, checkpoint.provenance, overwrite)
    return f'swinzoo.load_model("{out}")'


def claims_folder(folder: Path, config_json: dict | None) -> bool:
    if config_kind(config_json) is not None:
        return False
    return has_metadata(folder / "model.safetensors")


FORMAT = Format("swinzoo", "swinzoo .safetensors: weights + config (+ provenance) in one file", read, write,
                claims_folder=claims_folder)
