"""Lightning's own tools on swinzoo's LightningModules in a user's Trainer: the Tuner (lr_find, scale_batch_size),
an lr changed in `module.hparams` between fits, LightningCLI with `from_pretrained` (CPU, nano model, a few steps)."""

import lightning as L
import torch
from lightning.pytorch.tuner import Tuner
from torch.utils.data import DataLoader

from swinzoo.train.module import SwinClassifier
from tests.test_lightning_api import FakeImages, trainer


class FakeMaskedImages(L.LightningDataModule):
    """Image batches alone, as SimMIMPretrainer takes them; `batch_size` is what BatchSizeFinder scales."""

    def __init__(self, batch_size: int = 8) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.images = torch.rand(32, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def train_dataloader(self):
        return DataLoader(self.images, batch_size=self.batch_size)

    def val_dataloader(self):
        return DataLoader(self.images[:8], batch_size=8)


def test_lr_finder_trains_the_classifier_before_its_fit_starts(tmp_path):
    """Tuner.lr_find runs its steps from the LearningRateFinder callback's on_fit_start, before the module's own
    on_fit_start: the training step's seed was not drawn yet (TypeError on None)."""
    module = SwinClassifier.from_pretrained("swin_n_64", num_classes=10)
    finder = Tuner(trainer(tmp_path, max_steps=4)).lr_find(module, datamodule=FakeImages(n=32), num_training=3,
                                                           update_attr=False)
    assert len(finder.results["lr"]) == 3
    t = trainer(tmp_path, max_steps=1, limit_val_batches=1)
    t.fit(module, datamodule=FakeImages())  # the fit after it draws its seed as any fit does
    assert t.global_step == 1 and module.step_seed is not None
