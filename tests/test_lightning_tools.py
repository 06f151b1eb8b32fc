"""Lightning's own tools on swinzoo's LightningModules in a user's Trainer: the Tuner (lr_find, scale_batch_size),
an lr changed in `module.hparams` between fits, LightningCLI with `from_pretrained` (CPU, nano model, a few steps)."""

import lightning as L
import pytest
import torch
from lightning.pytorch.tuner import Tuner
from torch.utils.data import DataLoader

from swinzoo.train.module import SwinClassifier
from swinzoo.train.simmim_module import SimMIMPretrainer
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


@pytest.mark.parametrize("cls", [SwinClassifier, SimMIMPretrainer])
def test_a_batch_size_found_after_a_fit_scales_the_next_fits_lr(tmp_path, cls):
    """Tuner.scale_batch_size trains (and so configures the optimizer) at trial batches, then changes the
    DataModule's batch_size: the fit that follows scales the recipe's lr for the batch it runs, not a trial's."""
    if cls is SwinClassifier:
        module, data = cls.from_pretrained("swin_n_64", num_classes=10), FakeImages()
    else:
        module, data = cls.from_pretrained("swin_n_64.simmim"), FakeMaskedImages()
    trainer(tmp_path, max_steps=1, limit_val_batches=1).fit(module, datamodule=data)
    assert module.peak_lr == pytest.approx(module.recipe.base_lr * 8 / 512)
    data.batch_size = 4  # what BatchSizeFinder leaves
    trainer(tmp_path, max_steps=1, limit_val_batches=1).fit(module, datamodule=data)
    assert module.peak_lr == pytest.approx(module.recipe.base_lr * 4 / 512)


def test_an_lr_set_in_hparams_is_the_next_fits_peak_lr(tmp_path):
    """Tuner.lr_find(update_attr=True) writes its suggestion to `module.hparams.lr` (the attribute Lightning looks
    for); a user may too. The fit after it runs that peak rate, the warmup and min keeping the recipe's ratios."""
    module = SwinClassifier.from_pretrained("swin_n_64", num_classes=10, total_batch=64)
    module.hparams.lr = 1e-3
    t = trainer(tmp_path, max_steps=1, limit_val_batches=1)
    t.fit(module, datamodule=FakeImages())
    r = module.recipe
    assert (module.peak_lr, module.warmup_lr, module.min_lr) == pytest.approx(
        (1e-3, 1e-3 * r.warmup_lr / r.base_lr, 1e-3 * r.min_lr / r.base_lr))
    assert t.optimizers[0].param_groups[-1]["initial_lr"] == pytest.approx(1e-3)
