"""What an eval-mode cache derived from parameters (the attention term, a packed weight) is keyed on, and how the
models' caches (terms, window plans, parameter shapes) take a new entry.

A parameter's data pointer and in-place version counter change with `load_state_dict`, `.to()` and any in-place op
autograd tracks, but torch's fused optimizers (`AdamW(..., fused=True)`, fused SGD) write parameters without
bumping their version counters. So the key also holds a count of optimizer steps, taken in the whole process, that
a global step hook advances: a cache filled before a step is never used after it, whichever optimizer took it.
"""

from __future__ import annotations

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

_optimizer_steps = 0


def _count_step(optimizer, args, kwargs) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_step)


def param_key(*tensors: torch.Tensor) -> tuple:
    """Equal only while none of `tensors` can have changed: their data pointers and versions, and the steps."""
    return (_optimizer_steps, *((t.data_ptr(), t._version) for t in tensors))


def with_newest(entries: dict, key, value, at_most: int) -> dict:
    """A new dict of the newest `at_most - 1` of `entries` and `key: value`. A cache is replaced by it whole, never
    changed in place: threads sharing a model may read the old one meanwhile, and many input sizes (or configs) in one
    process keep the newest."""
    return {**dict(list(entries.items())[-(at_most - 1):]), key: value}
