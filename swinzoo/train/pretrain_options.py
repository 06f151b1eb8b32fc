"""What a SimMIM pretraining run is given (`PretrainOptions`, the arguments of `swinzoo.pretrain`) and returns
(`PretrainResult`). No torch or Lightning here: the CLI's parser reads it to build `--help` fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from swinzoo.train.options import RunOptions

DEFAULT_RECIPE = "simmim_pretrain"
# the fine-tune recipe a pretrained model names for `swinzoo finetune` (unless its recipe names one), by Swin version
FINETUNE_RECIPES = {1: "simmim_finetune", 2: "simmim_finetune_v2"}


@dataclass
class PretrainOptions(RunOptions):
    """The arguments of `pretrain` (see there), one typed record; the CLI fills it from its flags."""

    mask_ratio: float | None = None
    mask_patch_size: int | None = None
    norm_targets: bool | None = None


@dataclass
class PretrainResult:
    """Where the run wrote its outputs and what it measured (on the global-zero process; None elsewhere)."""

    out: Path
    metrics: dict
