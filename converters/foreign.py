"""Files a user may take for weights but that hold something else, told apart before a reader misnames them:
a torch.export program (`.pt2`, a zip like torch.save's, so it read as a damaged checkpoint). A Lightning
checkpoint of swinzoo's own modules (`is_module_checkpoint`) carries the config and is read as swinzoo's format;
one of the user's own module, the Swin inside it (`training.lightning_model`)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from swinzoo.errors import SwinzooError

# entries of torch.export.save's archive (`archive_format` from torch 2.6, `serialized_exported_program.json` before)
PT2_MARKERS = ("/archive_format", "serialized_exported_program.json")


def check_not_a_program(path: str | Path) -> None:
    """A one-line error for a torch.export program: it holds a graph, which runs but is not read back as weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return
    if any(name.endswith(PT2_MARKERS) for name in names):
        raise SwinzooError(f"{path} is a torch.export program (a .pt2 graph), not a checkpoint: run it with "
                           "torch.export.load(path).module()(pixel_values), or give the weights it was exported from")


LIGHTNING_KEY = "pytorch-lightning_version"  # in every checkpoint Lightning writes


def is_module_checkpoint(obj: object) -> bool:
    """A Lightning checkpoint of swinzoo's `SwinClassifier` or `SimMIMPretrainer` (or a subclass): the model's config
    in its hyper-parameters (`save_hyperparameters`), the model's weights under `model.`."""
    if not isinstance(obj, dict) or LIGHTNING_KEY not in obj:
        return False
    hparams, state_dict = obj.get("hyper_parameters"), obj.get("state_dict")
    return (isinstance(hparams, dict) and isinstance(hparams.get("config"), dict) and isinstance(state_dict, dict)
            and any(isinstance(k, str) and k.startswith("model.") for k in state_dict))
