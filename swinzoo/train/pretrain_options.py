"""What a SimMIM pretraining run is given (`PretrainOptions`, the arguments of `swinzoo.pretrain`) and returns
(`PretrainResult`). No torch or Lightning here: the CLI's parser reads it to build `--help` fast."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_RECIPE = "simmim_pretrain"
TASK = "simmim_pretrain"  # run.json provenance["task"]: tells a pretraining folder from a fine-tuning one on --resume
# the fine-tune recipe a pretrained model names for `swinzoo finetune` (unless its recipe names one), by Swin version
FINETUNE_RECIPES = {1: "simmim_finetune", 2: "simmim_finetune_v2"}


@dataclass
class PretrainOptions:
    """The arguments of `pretrain` (see there), one typed record; the CLI fills it from its flags."""

    source: str | None = None
    scratch: bool = False
    res: int | None = None
    window: int | None = None
    data: str | None = None
    train_split: str | None = None
    val_split: str | None = None
    val_fraction: float | None = None
    image_column: str | None = None
    label_column: str | None = None
    split_seed: int | None = None
    recipe: str | dict | None = None
    recipe_overrides: dict | None = None
    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    mask_ratio: float | None = None
    mask_patch_size: int | None = None
    norm_targets: bool | None = None
    devices: str | int = "auto"
    accelerator: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str | None = None
    out: str | None = None
    resume: str | None = None
    num_workers: int | None = None
    ckpt_every: int | None = None
    seed: int | None = None
    save_dtype: str = "float32"
    from_format: str = "auto"
    arch: str | None = None
    trust_checkpoint: bool = False
    trainer: dict = field(default_factory=dict)
    logger: str = "csv"
    command: str = ""


@dataclass
class PretrainResult:
    """Where the run wrote its outputs and what it measured (on the global-zero process; None elsewhere)."""

    out: Path
    metrics: dict
