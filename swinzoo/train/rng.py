"""Randomness a run can replay: every random draw of training is seeded by where it happens, not by how much of a
shared stream came before it.

A resume restores weights, optimizer, schedule and loop counters, but not the global RNGs (Lightning saves none),
and the loader prefetches a batch past each checkpoint; worker processes restart with fresh seeds. So draws from
the global streams (crops, flips, RandAugment, erasing, MixUp/CutMix, drop path, dropout) differ after a resume,
and with the worker count. Here instead:
- each training image's augmentation is drawn from (run seed, epoch, image), in whichever process loads it:
  `sampling.EpochOrder` gives the keys (index, seed, epoch) to the `SeededSamples` datasets;
- each training step's draws (MixUp/CutMix, drop path, dropout) from (seed, rank, global step, micro-batch):
  `seeded(step_seed(...))` around the forward pass.
The global RNGs of the training process are left as they were, so other code that draws from them sees no change.
"""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
from torch.utils.data import Dataset

# the streams one seed feeds, apart from each other: SimMIM's training and validation masks, each image's
# augmentation, each training step's MixUp / drop path / dropout
TRAIN_MASK_STREAM, VAL_MASK_STREAM, AUGMENT_STREAM, STEP_STREAM = 0, 1, 2, 3


def stream_seed(*entropy: int) -> int:
    """A well-mixed 63-bit seed from small integers (numpy's SeedSequence), for `Generator.manual_seed`."""
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(2, np.uint64)[0] >> np.uint64(1))


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None):
    """Inside: the CPU generator (and `device`'s, when it is a CUDA device), Python's `random` and numpy's global
    RandomState seeded from `seed` (the official augmentation draws from all three: `swinzoo.train.augment`);
    after: all as before (in a DataLoader worker, torch's only). The three get unrelated states: torch's from
    `seed`, the others from a SeedSequence of it (numpy's int seeding and torch's would otherwise start the same
    Mersenne Twister)."""
    cuda = device is not None and device.type == "cuda"
    words = [int(w) for w in np.random.SeedSequence(seed).generate_state(3)]
    # a loader worker's global generators serve its samples alone, each seeded here: saving and restoring numpy's
    # and Python's would cost ~100 us an image (numpy's state goes to a tuple and back) for nothing
    with rngs_kept([device] if cuda else [], host=torch.utils.data.get_worker_info() is None):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        random.seed(words[0] << 32 | words[1])
        np.random.seed(words[2])
        yield


@contextlib.contextmanager
def rngs_kept(cuda_devices: list, host: bool = True):
    """Inside, anything may draw from or seed the global generators; after, torch's CPU generator and those of
    `cuda_devices` are as before, and with `host` Python's `random` and numpy's global RandomState too."""
    py_state, np_state = (random.getstate(), np.random.get_state()) if host else (None, None)
    try:
        with torch.random.fork_rng(devices=cuda_devices, device_type="cuda"):
            yield
    finally:
        if host:
            random.setstate(py_state)
            np.random.set_state(np_state)


# what Lightning's `seed_everything` leaves for the processes a DDP launcher starts; the caller's own
# `seed_everything()` without a seed, and the DDP setup of its later Trainers (`reset_seed`), would read them
SEED_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")


@contextlib.contextmanager
def caller_state_kept(env: tuple[str, ...] = ()):
    """Around a run in the caller's process (`swinzoo.finetune` in a notebook or a sweep): the run seeds the global
    RNGs with its recipe's seed; after it, they are as before (torch's CPU generator, the CUDA ones where CUDA was
    initialised before the run, numpy's and Python's), and so are SEED_ENV and the environment variables `env`.
    A random search drawing each trial's values from them would otherwise draw the same values after every run."""
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    saved = {name: os.environ.get(name) for name in (*SEED_ENV, *env)}
    try:
        with rngs_kept(cuda):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def step_seed(module, base: int, batch_idx: int, stream: int = STEP_STREAM) -> int:
    """The seed of a training step's draws of `stream`: (base, rank, optimizer step, micro-batch within the
    accumulation)."""
    micro = batch_idx % max(1, module.trainer.accumulate_grad_batches)
    return stream_seed(base, stream, module.global_rank, module.global_step, micro)


class SeededSamples(Dataset):
    """A dataset that can be read by keys (index, run seed, epoch): the sample is made with the global RNGs (torch's,
    Python's and numpy's: `seeded`) seeded by (run seed, AUGMENT_STREAM, epoch, index), so its random augmentation
    does not depend on the process or what it loaded before. Plain indices read it as any dataset. Subclasses
    define `sample(index)`."""

    def sample(self, index: int):
        raise NotImplementedError

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            return self.sample(key)
        index, seed, epoch = key
        # drawn here, in the loader's worker: the sampler runs in the training process, between steps
        with seeded(stream_seed(seed, AUGMENT_STREAM, epoch, index)):
            return self.sample(index)
