"""What a fine-tuning run is given and records: `FinetuneOptions` (the arguments of `swinzoo.finetune`),
`Plan` (OUT/run.json, read back strictly by `read_plan`) and `FinetuneResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

RUN_FILE = "run.json"
CKPT_FILE = "last.ckpt"
OUT_ENV = "SWINZOO_RUN_OUT"
SAVE_DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class Plan:
    """Everything a run needs, JSON-serialisable (OUT/run.json)."""

    out: str
    source: str
    config: dict
    recipe: dict
    data: str
    devices: str | int = "auto"
    accelerator: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    lr: float | None = None
    num_workers: int | None = None
    ckpt_every: int | None = None
    trainer: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    command: str = ""
    save_dtype: str = "float32"


@dataclass
class FinetuneOptions:
    """The arguments of `finetune` (see there), one typed record; the CLI fills it from its flags."""

    source: str | None = None
    res: int | None = None
    window: int | None = None
    data: str | None = None
    recipe: str | None = None
    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
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
    scratch: bool = False
    save_dtype: str = "float32"
    from_format: str = "auto"
    arch: str | None = None
    trust_checkpoint: bool = False
    trainer: dict = field(default_factory=dict)
    push_to: str | None = None
    command: str = ""


@dataclass
class FinetuneResult:
    """Where the run wrote its outputs and what it measured (on the global-zero process; None elsewhere)."""

    out: Path
    metrics: dict
