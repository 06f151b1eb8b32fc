"""Samplers: the training loader's order and position; which image each validation sample is, and the
copies DDP adds.

The training loader's order is drawn from (seed, epoch) alone, and its position is saved in the checkpoint, so
that a run resumed within an epoch reads the rest of that epoch as the straight run would have.

Lightning resumes a loader within an epoch only when the loader has `state_dict` / `load_state_dict`; otherwise
it warns and reads the epoch again in a fresh order, so the resumed run sees some images twice and others not at
all. DataLoader's default RandomSampler draws each epoch's order from the global RNG, which a resume does not
restore; DistributedSampler draws it from seed + epoch, on one process as on many (it is what Lightning puts in
under DDP, with the same seed).

Each sample's augmentation is seeded from (seed, epoch, image) (`rng.SeededSamples`), so a resumed run, or one with
another worker count, makes the same batches bit for bit.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from swinzoo.train.rng import SeededSamples


class EpochOrder(DistributedSampler):
    """This rank's share of a shuffle drawn from seed + epoch; for a `SeededSamples` dataset as keys (index, seed,
    epoch), from which the dataset draws the sample's augmentation. After a resume
    (`ResumableLoader.load_state_dict`) the next pass is epoch `resume_at`, `skip` samples in; `offset` then maps
    the epochs Lightning sets onto the run's."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = self.offset = 0
        self.resume_at: int | None = None

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch + self.offset)

    def __iter__(self):
        if self.resume_at is not None:
            # Lightning's epoch on a restart is not the run's: within an epoch stopped at --max-steps it counts the
            # epoch as done, and from a checkpoint at an epoch's end under --max-steps it counts that epoch twice
            self.offset += self.resume_at - self.epoch
            self.epoch, self.resume_at = self.resume_at, None
        order = list(super().__iter__())
        skip, self.skip = self.skip, 0
        if not isinstance(self.dataset, SeededSamples):
            return iter(order[skip:])
        seed, epoch = self.seed, self.epoch  # as they are now: the keys are made as the loader asks for them
        return ((i, seed, epoch) for i in order[skip:])


class ResumableLoader(DataLoader):
    """The training DataLoader of a run on `trainer` (None: one process, outside a run): shuffled by `EpochOrder`,
    batches dropped at the epoch's end (as the official loaders do), and stateful for Lightning.

    Its state is the epoch and how many of the epoch's batches were trained on: the trainer's count, not the
    loader's own, which runs ahead by the batches Lightning and the workers prefetch."""

    def __init__(self, dataset: Dataset, batch_size: int, num_workers: int, seed: int, trainer: L.Trainer | None,
                 sampler: Sampler | None = None, **kwargs) -> None:
        # `sampler` is for Lightning, which makes the loader again with a sampler of its own for
        # --trainer.overfit_batches; that loader has nothing to resume
        if sampler is None:
            replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
            sampler = EpochOrder(dataset, replicas, rank, seed)
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=num_workers,
                         persistent_workers=num_workers > 0, **kwargs)
        self.trainer = trainer

    def state_dict(self) -> dict[str, int]:
        if not isinstance(self.sampler, EpochOrder):
            return {}
        return {"epoch": self.sampler.epoch,
                "batches": self.trainer.fit_loop.epoch_loop.batch_progress.current.processed,
                "of": int(self.trainer.num_training_batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the saved epoch `skip` batches in (or, saved at its end, start the next one), whatever epoch
        Lightning sets before the next pass."""
        if not state or not isinstance(self.sampler, EpochOrder):
            return
        finished = state["batches"] >= state["of"]
        self.sampler.resume_at = state["epoch"] + finished
        self.sampler.skip = 0 if finished else state["batches"] * self.batch_size


def evaluated_loader(trainer: L.Trainer):
    """The loader of the evaluation running: the test set's under `trainer.test`, the predicted set's under
    `trainer.predict` (Lightning deals it out unpadded), else the validation set's."""
    if trainer.testing:
        return trainer.test_dataloaders
    return trainer.predict_dataloaders if trainer.predicting else trainer.val_dataloaders


def validation_indices(trainer: L.Trainer, batch_idx: int, size: int, device: torch.device) -> torch.Tensor:
    """The position in the validation (or test) set of each sample of this batch. The loader reads the set in
    order; under DDP, Lightning's DistributedSampler deals it out round-robin (rank r takes r, r + world, ...) and
    pads the deal with copies of the first images, so positions from the set's length on are copies."""
    loader = evaluated_loader(trainer)
    seen = getattr(getattr(loader, "batch_sampler", None), "seen_batch_indices", None)
    if seen is not None:  # Lightning's predict loader (batch_size None) records each batch's places in the set
        return torch.tensor(seen[batch_idx], device=device)
    sampler = getattr(loader, "sampler", None)
    position = batch_idx * loader.batch_size + torch.arange(size, device=device)
    if isinstance(sampler, DistributedSampler) and not sampler.shuffle:
        position = sampler.rank + position * sampler.num_replicas
    return position


def unpadded(trainer: L.Trainer, batch_idx: int, size: int, device: torch.device) -> torch.Tensor | None:
    """Which samples of this validation (or test) batch are the data's own (None: all of them): counted, DDP's
    padded copies would skew the figures and make n exceed the set (26 for 25 images)."""
    sampler = getattr(evaluated_loader(trainer), "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last or sampler.shuffle:
        return None
    length = len(sampler.dataset)
    if sampler.total_size == length:
        return None
    return validation_indices(trainer, batch_idx, size, device) < length
