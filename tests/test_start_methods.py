"""Data loading under the start methods other than Linux's fork: spawn (macOS and Windows) and forkserver (Linux from
Python 3.14). Their loader workers get the dataset pickled, not inherited, so everything a worker reads must pickle,
and each image's augmentation must still be the one the seed gives (`rng.SeededSamples`), whichever process makes
it."""

import multiprocessing
import pickle

import pytest
import torch

from swinzoo.train.data import SwinDataModule, train_transform
from swinzoo.train.rng import seeded
from swinzoo.train.shapes import render
from tests.test_finetune import image_folder


@pytest.fixture(params=["spawn", "forkserver"])
def start_method(request):
    """The default start method set for the test (as Python 3.14 sets forkserver), then put back."""
    before = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method(request.param, force=True)
    yield request.param
    multiprocessing.set_start_method(before, force=True)


def test_the_official_train_transform_pickles():
    """RandAugment held its ops as lambdas and closures: a loader worker started by spawn or forkserver could not be
    given the transform, and every fine-tune with an official recipe failed at its first batch."""
    tf = train_transform(32, rand_augment=9, random_erasing=0.5)
    image = render(3, 48, seed=0)
    copy = pickle.loads(pickle.dumps(tf))
    for seed in range(8):
        with seeded(seed):
            a = tf(image)
        with seeded(seed):
            assert torch.equal(copy(image), a), seed


def batches(data, workers: int, epochs: int = 2) -> list[torch.Tensor]:
    dm = SwinDataModule(str(data), 32, 4, "finetune", num_workers=workers)
    dm.check()
    loader, out = dm.train_dataloader(), []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        out += [images for images, _ in loader]
    return out


def test_an_official_recipes_training_batches_in_workers_are_the_seeds(start_method, tmp_path):
    """The training loader of the `finetune` recipe (RandAugment, erasing) in a worker of each start method gives the
    batches of loading in the training process (which fork's workers give: test_reproducibility), epoch by epoch."""
    data = image_folder(tmp_path / "data")
    here, there = batches(data, 0), batches(data, 1)
    assert len(here) == len(there) == 6
    assert all(torch.equal(a, b) for a, b in zip(here, there))
    assert not torch.equal(here[0], here[3])  # another epoch, other augmentations
