"""A run's curves.png: training loss, validation and learning rate against the step, drawn again after each
validation (watch it mid-run) and at the end of the fit. The points travel in last.ckpt, so a resumed run's picture
holds the steps before the resume. Pillow only, as the other plots (`swinzoo.plot`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from PIL import Image, ImageDraw

from swinzoo.errors import SwinzooError
from swinzoo.plot import PALETTE, legend_entry, save_png

VAL_KEYS = ("val/loss", "val/top1", "val/top5")  # what SwinClassifier validates; SimMIMPretrainer has the loss alone
# at most about this many training-loss points per run: reading the loss is a device sync, so a long run records
# every k-th step (never sparser than Lightning's logging, every 50 steps)
MAX_POINTS = 1000
PANEL_H, WIDTH, LEFT, RIGHT, TOP, GAP = 190, 900, 80, 200, 50, 40


class Series(NamedTuple):
    """One line of a panel: (step, value) points, its width, and whether each point gets a dot."""

    label: str
    points: list[tuple[float, float]]
    width: int
    dots: bool = False


class TrainingCurves(Callback):
    """Records (step, train/loss, lr) every few steps and each validation's metrics (`val_keys`: SwinClassifier's by
    default; ("val/loss",) for SimMIMPretrainer), on global rank zero; writes `path` after each validation of the
    fit and at its end. Any Trainer fitting a module that logs these names can take it."""

    def __init__(self, path: str | Path, val_keys: tuple[str, ...] = VAL_KEYS, title: str = "") -> None:
        self.path, self.val_keys, self.title = Path(path), val_keys, title
        self.train: list[list[float]] = []  # [step, loss, lr]
        self.val: list[list[float]] = []  # [step, *val_keys]
        self.every = 1
        self.drawn: tuple | None = None  # what the picture last written holds: point counts, the last validation

    def on_train_start(self, trainer, pl_module) -> None:
        total = int(trainer.estimated_stepping_batches)
        self.every = max(1, min(trainer.log_every_n_steps, math.ceil(total / MAX_POINTS)))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step % self.every or (self.train and self.train[-1][0] == step):
            return  # the last check: a step of gradient accumulation ends several batches
        metrics = trainer.callback_metrics
        if "train/loss" in metrics:
            self.train.append([step, float(metrics["train/loss"]), float(metrics.get("lr", math.nan))])

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.state.fn != TrainerFn.FITTING:
            return  # after the fit, swinzoo validates the kept weights again: not a point of the curve
        metrics = trainer.callback_metrics
        if self.val_keys and self.val_keys[0] in metrics:
            if self.val and self.val[-1][0] == trainer.global_step:
                self.val.pop()
            self.val.append([trainer.global_step, *(float(metrics.get(k, math.nan)) for k in self.val_keys)])
            self.draw(int(trainer.estimated_stepping_batches))

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.draw(int(trainer.estimated_stepping_batches))

    def state_dict(self) -> dict:
        return {"train": self.train, "val": self.val}

    def load_state_dict(self, state_dict: dict) -> None:
        self.train, self.val = list(state_dict.get("train", [])), list(state_dict.get("val", []))

    def draw(self, total_steps: int) -> None:
        holds = (len(self.train), len(self.val), tuple(self.val[-1]) if self.val else ())
        if self.drawn == holds:
            return  # the fit ended at a validation: the picture already holds every point
        self.drawn = holds
        try:
            draw_curves(self.train, self.val, self.val_keys, self.path, total_steps, self.title)
        except (OSError, SwinzooError):  # a picture that cannot be written (disk full) must not end the training
            pass


def draw_curves(train: list, val: list, val_keys: tuple[str, ...], path: Path, total_steps: int,
                title: str = "") -> Path:
    """The PNG: a loss panel (training loss, its moving average, validation loss when recorded), a panel of the
    other validation figures (top-1 / top-5), a learning-rate panel; x is the step, up to `total_steps`."""
    losses = [(s, v) for s, v, _ in train]
    panels: dict[str, list[Series]] = {"loss": [Series("train loss", losses, 1),
                                                Series("moving average", moving_average(losses), 3)]}
    for i, key in enumerate(val_keys):  # validations are few, each a measurement: dotted
        series = Series(key.replace("/", " ").replace("top", "top-"), [(p[0], p[1 + i]) for p in val], 2, True)
        panels.setdefault("loss" if key.endswith("loss") else "validation", []).append(series)
    panels["learning rate"] = [Series("lr", [(s, lr) for s, _, lr in train], 2)]
    steps = [s for s, *_ in train] + [p[0] for p in val]
    x_max = max([total_steps, *steps, 1])
    height = TOP + len(panels) * (PANEL_H + GAP) + 10
    img = Image.new("RGB", (WIDTH, height), "white")
    pen = ImageDraw.Draw(img)
    pen.text((LEFT, 12), title, fill="black")
    color = 0
    for n, (name, series) in enumerate(panels.items()):
        top = TOP + n * (PANEL_H + GAP)
        color = draw_panel(pen, top, name, series, x_max, color)
    pen.text((LEFT + 250, height - 22), "step", fill="black")
    return save_png(img, path)


def draw_panel(pen: ImageDraw.ImageDraw, top: int, name: str, series: list[Series], x_max: int, color: int) -> int:
    """One panel at `top`: its frame, y ticks over the finite values, each series a line (a dot where it has one
    point). Returns the next palette index."""
    bottom, right = top + PANEL_H, WIDTH - RIGHT
    values = [v for line in series for _, v in line.points if math.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if name == "learning rate":
        lo = 0.0
    ticks = nice_ticks(lo, hi)
    lo, hi = ticks[0], ticks[-1]

    def at(step: float, value: float) -> tuple[float, float]:
        return LEFT + (right - LEFT) * step / x_max, bottom - (bottom - top) * (value - lo) / (hi - lo)

    pen.rectangle([LEFT, top, right, bottom], outline="black")
    pen.text((8, top - 16), name, fill="black")
    for value in ticks:
        _, y = at(0, value)
        pen.line([LEFT - 4, y, LEFT, y], fill="black")
        pen.text((8, y - 6), f"{value:.4g}", fill="black")
    for i in range(6):
        x, _ = at(x_max * i / 5, lo)
        pen.line([x, bottom, x, bottom + 4], fill="black")
        pen.text((x - 10, bottom + 6), f"{round(x_max * i / 5)}", fill="black")
    for k, line in enumerate(series):
        rgb = PALETTE[(color + k) % len(PALETTE)]
        for run in finite_runs(line.points):
            coords = [at(s, v) for s, v in run]
            if len(coords) > 1:
                pen.line(coords, fill=rgb, width=line.width)
            if len(coords) == 1 or line.dots:
                for x, y in coords:
                    pen.ellipse([x - 3, y - 3, x + 3, y + 3], fill=rgb)
        legend_entry(pen, WIDTH - RIGHT + 12, top + 6 + 20 * k, rgb, line.label, line.width)
    return color + len(series)


def nice_ticks(lo: float, hi: float, most: int = 6) -> list[float]:
    """Ticks at a round step (1, 2 or 5 times a power of ten) from below `lo` to above `hi`, at most `most`."""
    if hi - lo < 1e-12 * max(1.0, abs(hi)):
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    power = 10 ** math.floor(math.log10((hi - lo) / most))
    steps = (k * power * 10**j for j in range(3) for k in (1, 2, 5))
    step = next(t for t in steps if math.ceil(hi / t) - math.floor(lo / t) < most)
    first, last = math.floor(lo / step), math.ceil(hi / step)
    return [round(i * step, 12) for i in range(first, last + 1)]


def finite_runs(points: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """`points` cut where a value is not finite (a diverged loss): the line breaks there instead of the picture."""
    runs: list[list[tuple[float, float]]] = [[]]
    for step, value in points:
        if math.isfinite(value):
            runs[-1].append((step, value))
        elif runs[-1]:
            runs.append([])
    return [run for run in runs if run]


def moving_average(points: list[tuple[float, float]], window: int = 0) -> list[tuple[float, float]]:
    """The mean of the last `window` finite values at each point (default: a 20th of the points, at least 1)."""
    window = window or max(1, len(points) // 20)
    out, recent = [], []
    for step, value in points:
        if math.isfinite(value):
            recent = (recent + [value])[-window:]
            out.append((step, sum(recent) / len(recent)))
    return out
