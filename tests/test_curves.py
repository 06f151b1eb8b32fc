"""A run's curves.png: training loss, validation figures and learning rate against the step, drawn after each
validation and at the end; the points travel in last.ckpt, so a resume's picture continues the run's."""

import math

import pytest
import torch
from PIL import Image

import swinzoo
from swinzoo.run_folder import CURVES_FILE
from swinzoo.train import curves
from swinzoo.train.curves import draw_curves, finite_runs, moving_average, nice_ticks
from tests.test_resume import RUN, CrashAt, data, tiny  # noqa: F401 (fixtures)


def curve_state(out) -> dict:
    callbacks = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)["callbacks"]
    (state,) = [v for k, v in callbacks.items() if k.startswith("TrainingCurves")]
    return state


def test_a_finetune_draws_its_curves_and_a_resume_continues_them(tiny, data, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    trainer = {**RUN["trainer"], "callbacks": [CrashAt(4)]}
    with pytest.raises(RuntimeError, match="crash"):
        swinzoo.finetune(str(tiny), data=str(data), out=str(out), max_steps=9, **{**RUN, "trainer": trainer})
    picture = Image.open(out / CURVES_FILE)  # drawn at the first epoch's validation, before the crash
    assert picture.format == "PNG" and picture.width == 900 and picture.height > 600
    state = curve_state(out)
    assert [p[0] for p in state["train"]] == [1, 2, 3] and [p[0] for p in state["val"]] == [3]
    assert all(math.isfinite(v) for p in state["train"] for v in p) and len(state["val"][0]) == 4  # loss, top-1/5
    swinzoo.finetune(resume=str(out), max_steps=6, trainer={"limit_val_batches": 1})
    state = curve_state(out)
    assert [p[0] for p in state["train"]] == [1, 2, 3, 4, 5, 6] and [p[0] for p in state["val"]] == [3, 6]


def test_a_pretraining_draws_loss_and_learning_rate(tiny, data, tmp_path, monkeypatch):  # noqa: F811
    out = tmp_path / "pre"
    drawn = []
    monkeypatch.setattr(curves, "draw_curves", lambda *a: drawn.append(len(a[0])) or draw_curves(*a))
    swinzoo.pretrain(str(tiny), data=str(data), out=str(out), max_steps=2, batch_size=4, num_workers=0,
                     trainer={"limit_val_batches": 1})
    state = curve_state(out)
    assert [p[0] for p in state["train"]] == [1, 2] and [len(p) for p in state["val"]] == [2]  # step, val loss
    assert Image.open(out / CURVES_FILE).height < Image.open(out / CURVES_FILE).width  # two panels, not three
    assert drawn == [2]  # the fit's end adds no point after the last validation: the picture is not drawn again


def test_the_picture_survives_diverged_losses_and_single_points(tmp_path):
    """A loss gone to NaN or inf breaks its line rather than the picture; one point is a dot; no validation, no
    panel for it."""
    train = [[1, 2.3, 1e-4], [2, math.nan, 2e-4], [3, math.inf, 3e-4], [4, 1.9, 4e-4]]
    for val in ([], [[4, math.nan, 0.5, 0.9]], [[2, 1.0, 0.25, 0.5]]):
        path = draw_curves(train, val, ("val/loss", "val/top1", "val/top5"), tmp_path / "c.png", 10)
        assert Image.open(path).size[0] == 900
    draw_curves([], [], ("val/loss",), tmp_path / "empty.png", 0)
    assert finite_runs([(1, 1.0), (2, math.nan), (3, 2.0), (4, 3.0)]) == [[(1, 1.0)], [(3, 2.0), (4, 3.0)]]
    assert moving_average([(1, 1.0), (2, math.nan), (3, 3.0)], window=2) == [(1, 1.0), (3, 2.0)]


@pytest.mark.parametrize("lo, hi, expected", [
    (0.379, 1.77, [0.0, 0.5, 1.0, 1.5, 2.0]),
    (0.0, 0.00105, [0.0, 0.0005, 0.001, 0.0015]),
    (0.701, 1.0, [0.7, 0.8, 0.9, 1.0]),
])
def test_ticks_are_round_and_cover_the_values(lo, hi, expected):
    assert nice_ticks(lo, hi) == expected
    for lo, hi in ((0.5, 0.5), (0, 0), (-3, 1e6), (2.30258, 2.30259)):
        ticks = nice_ticks(lo, hi)
        assert ticks[0] <= lo and ticks[-1] >= hi and 2 <= len(ticks) <= 6 and ticks[0] < ticks[-1]
