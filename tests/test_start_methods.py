"""Data loading under the start methods other than Linux's fork: spawn (macOS and Windows) and forkserver (Linux from
Python 3.14). Their loader workers get the dataset pickled, not inherited, so everything a worker reads must pickle,
and each image's augmentation must still be the one the seed gives (`rng.SeededSamples`), whichever process makes
it."""

import multiprocessing
import pickle
import subprocess
import sys

import pytest
import torch

from swinzoo.train.data import SwinDataModule, train_transform
from swinzoo.train.hf_data import DataOptions
from swinzoo.train.rng import seeded
from swinzoo.train.shapes import render
from swinzoo.train.simmim_data import SimMIMDataModule
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


def test_a_worker_reads_its_dataset_without_importing_lightning(tmp_path):
    """A spawned or forkserver worker imports what unpickling its dataset takes. The datasets lived beside the
    Lightning data modules, so every worker imported Lightning, about as long as torch and torchvision together,
    at each loader's start (train, validation, each `evaluate`)."""
    data = image_folder(tmp_path / "data")
    finetune = SwinDataModule(str(data), 32, 4, "finetune", num_workers=1, data_options=DataOptions(train_fraction=0.5))
    finetune.check()
    pretrain = [SimMIMDataModule(name, 32, 2, num_workers=1) for name in (str(data / "train"), "shapes")]
    for dm in pretrain:
        dm.check()
    sets = [dm.train_dataloader().dataset for dm in (finetune, *pretrain)] + [finetune.val_dataloader().dataset,
                                                                              pretrain[0].val_dataloader().dataset]
    code = ("import pickle, sys; sets = pickle.loads(sys.stdin.buffer.read()); [s[(0, 1, 0)] for s in sets]; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'pytorch_lightning', "
            "'lightning_fabric', 'torchmetrics'}))")
    done = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(sets), capture_output=True, check=True)
    assert done.stdout.decode().strip() == "[]"


def test_a_script_without_a_main_guard_is_told_so_by_its_spawned_workers(tmp_path):
    """Under spawn (forkserver too) a loader worker runs the user's script again: without `if __name__ ==
    "__main__":` its finetune() call ran in every worker and stopped on the run's own lock, "--out ... is in use"."""
    script = tmp_path / "train.py"
    script.write_text(
        "import multiprocessing\nimport swinzoo\n"
        "multiprocessing.set_start_method('spawn', force=True)\n"
        f"swinzoo.finetune('swin_n_64', data='shapes', out={str(tmp_path / 'run')!r}, max_steps=1, batch_size=4,\n"
        "                 num_workers=1, trainer={'limit_val_batches': 1})\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode != 0
    assert 'if __name__ == "__main__":' in done.stderr and "in use" not in done.stderr, done.stderr[-3000:]
