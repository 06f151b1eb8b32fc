"""The device and autocast of an evaluation (`runtime`), and the precision a fine-tune's figures were measured
under, which `swinzoo eval RUN` takes when none is given (`run_precision`), so it reproduces the run's top-1."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from swinzoo.errors import SwinzooError
from swinzoo.hardware import native_bf16_matmul, resolve_device

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def runtime(device: str | None, precision: str) -> tuple[torch.device, torch.dtype | None]:
    """The device (None: cuda when a GPU is visible, else cpu) and the autocast dtype of an eval or predict run."""
    if precision not in PRECISIONS:
        raise SwinzooError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    dev = resolve_device(device)
    if precision == "fp16" and dev.type == "cpu":
        raise SwinzooError("fp16 needs a GPU; on a CPU use --precision bf16 (or fp32)")
    return dev, PRECISIONS[precision]


# eval's autocast for the Lightning precision a fine-tune validated under (fp16: on a GPU only)
RUN_PRECISIONS = {"bf16-mixed": "bf16", "bf16-true": "bf16", "16-mixed": "fp16", "16-true": "fp16"}


def run_precision(model, device: torch.device, provenance: dict) -> tuple[str, str | None]:
    """(eval precision, a note or None) of `model` when none is given: the one its fine-tune's metrics.json (the
    run folder's, or beside its model.safetensors) says its figures were measured under, else fp32."""
    if not isinstance(model, (str, os.PathLike)):
        return "fp32", None
    from swinzoo.upload import run_metrics  # (the metrics.json these very weights were scored in)

    ran = str((run_metrics(Path(model), provenance) or {}).get("precision", "32-true"))
    chosen = RUN_PRECISIONS.get(ran, "fp32")
    if chosen == "fp16" and device.type == "cpu":
        return "fp32", f"precision fp32: the run validated under {ran}, which needs a GPU (--device cuda for it)"
    if chosen == "bf16" and device.type == "cpu" and native_bf16_matmul() is None:
        # the run's CPU (or GPU) had bf16 matmul; emulated here, bf16 would be several times slower than fp32
        return "fp32", (f"precision fp32: the run validated under {ran}, and this CPU has no bf16 matmul "
                        "(--precision bf16 for it anyway)")
    if chosen == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return "fp32", (f"precision fp32: the run validated under {ran}, and this GPU has no bf16 (before Ampere; "
                        "--precision bf16 for it anyway)")
    return chosen, (f"precision {chosen}, as the run validated ({ran}); --precision fp32 for float32"
                    if chosen != "fp32" else None)
