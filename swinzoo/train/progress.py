"""Progress of a fit: the rich bar on a terminal (titled for step-bound runs), or timed lines for a log file."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.trainer.states import TrainerFn


class StepBoundProgressBar(RichProgressBar):
    """Lightning's rich bar titles a step-bound run (max_epochs = -1) "Epoch 0/-2"; this one says "Epoch 0"."""

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs is not None and self.trainer.max_epochs < 0:
            return f"{f'Epoch {current_epoch}':{len(self.validation_description)}}"
        return super()._get_train_description(current_epoch)


class ProgressLines(Callback):
    """Progress for a log file (a fine-tune piped or redirected): a line every `every` seconds of training and one
    per validation, where a bar redrawn in place would show nothing until the end."""

    def __init__(self, console, every: float = 15.0) -> None:
        self.console, self.every = console, every
        self.start = self.last = 0.0
        self.start_step = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = self.last = time.monotonic()
        self.start_step = trainer.global_step
        if trainer.is_global_zero:
            self.say(f"training from step {trainer.global_step} to {trainer.estimated_stepping_batches}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now, total = time.monotonic(), trainer.estimated_stepping_batches
        if not trainer.is_global_zero or (now - self.last < self.every and trainer.global_step < total):
            return
        self.last = now
        done = trainer.global_step - self.start_step
        rate = done / max(now - self.start, 1e-9)
        left = (total - trainer.global_step) / rate if rate > 0 else float("nan")
        loss, lr = trainer.callback_metrics.get("train/loss"), trainer.callback_metrics.get("lr")
        self.say(f"step {trainer.global_step}/{total} epoch {trainer.current_epoch}"
                 + (f" loss {float(loss):.4f}" if loss is not None else "")
                 + (f" lr {float(lr):.3g}" if lr is not None else "")
                 + f" {rate:.2f} steps/s, {_minutes(left)} left")

    def on_validation_end(self, trainer, pl_module) -> None:
        metrics = trainer.callback_metrics
        if trainer.sanity_checking or not trainer.is_global_zero or "val/top1" not in metrics:
            return
        if trainer.state.fn != TrainerFn.FITTING:  # after the fit: maybe another step's (kept best) weights
            return
        self.say(f"validation at step {trainer.global_step}: top1 {float(metrics['val/top1']):.4f}, top5 "
                 f"{float(metrics['val/top5']):.4f}")

    def say(self, text: str) -> None:
        self.console.print(text, soft_wrap=True, highlight=False)


def _minutes(seconds: float) -> str:
    if seconds != seconds:  # NaN: no step done yet
        return "?"
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
