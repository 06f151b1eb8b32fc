"""The built-in `shapes` dataset: deterministic, any resolution, balanced, the same scene at every resolution."""

import torch
import torch.nn.functional as F

from swinzoo.train.shapes import SHAPE_CLASSES, ShapesDataset, render


def test_deterministic_and_balanced():
    ds = ShapesDataset("train", 32, size=40)
    a, la = ds[7]
    b, lb = ShapesDataset("train", 32, size=40)[7]
    assert torch.equal(a, b) and la == lb == 7
    assert a.shape == (3, 32, 32) and a.dtype == torch.uint8
    assert [ds[i][1] for i in range(len(ds))].count(3) == 4
    assert not torch.equal(ds[0][0], ShapesDataset("val", 32, size=40)[0][0])  # splits differ
    assert len(SHAPE_CLASSES) == 10


def test_same_scene_at_any_resolution():
    low, high = render(8, 48, seed=3).float(), render(8, 96, seed=3).float()
    other = render(8, 48, seed=4).float()
    down = F.avg_pool2d(high.unsqueeze(0), 2).squeeze(0)
    assert (down - low).abs().mean() < 0.5 * (other - low).abs().mean()
