"""Files a user may take for weights but that hold something else, told apart before a reader misnames them:
a torch.export program (`.pt2`, a zip like torch.save's, so it read as a damaged checkpoint) and a Lightning
training checkpoint (`last.ckpt`: weights under `model.`, optimizer and loop state, no config)."""

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


def check_not_training_state(obj: object, path: str | Path) -> None:
    """A one-line error for a Lightning checkpoint: its model is the run folder's model.safetensors."""
    if isinstance(obj, dict) and "pytorch-lightning_version" in obj:
        run = Path(path).parent
        raise SwinzooError(f"{path} is a Lightning training checkpoint (weights with optimizer and loop state): read "
                           f"the run's weights from {run / 'model.safetensors'}, or continue the run with swinzoo "
                           f"finetune --resume {run} (a SimMIM run: swinzoo pretrain --resume {run})")
