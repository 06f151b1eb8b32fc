"""Lightning's own tools on swinzoo's LightningModules in a user's Trainer: the Tuner (lr_find, scale_batch_size),
an lr changed in `module.hparams` between fits, LightningCLI with `from_pretrained` (CPU, nano model, a few steps)."""

import lightning as L
import pytest
import torch
from lightning.pytorch.tuner import Tuner
from torch.utils.data import DataLoader

from swinzoo.errors import SwinzooError
from swinzoo.train.module import SwinClassifier
from swinzoo.train.simmim_module import SimMIMPretrainer
from tests.test_lightning_api import FakeImages, trainer


class FakeMaskedImages(L.LightningDataModule):
    """Image batches alone, as SimMIMPretrainer takes them; `batch_size` is what BatchSizeFinder scales."""

    def __init__(self, batch_size: int = 8) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.images = torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(0))

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


def test_lightning_cli_builds_the_classifier_from_a_zoo_name(tmp_path):
    """LightningCLI takes a callable returning a LightningModule: `SwinClassifier.from_pretrained`'s arguments
    become `--model.*` / YAML keys, and the checkpoint it writes holds the constructor's hparams, so
    `load_from_checkpoint` and swinzoo read it as any other."""
    from lightning.pytorch.cli import _JSONARGPARSE_SIGNATURES_AVAILABLE, LightningCLI

    if not _JSONARGPARSE_SIGNATURES_AVAILABLE:
        pytest.skip("LightningCLI needs jsonargparse[signatures] (the test extra)")
    import swinzoo

    config = tmp_path / "config.yaml"
    config.write_text("model:\n  source: swin_n_64\n  num_classes: 10\n  recipe: nano_finetune\n"
                      f"trainer:\n  max_steps: 1\n  limit_val_batches: 1\n  default_root_dir: {tmp_path}\n")
    cli = LightningCLI(SwinClassifier.from_pretrained, FakeImages, seed_everything_default=0,
                       args=["fit", "--config", str(config), "--model.lr", "0.001", "--trainer.accelerator", "cpu",
                             "--trainer.enable_progress_bar", "false", "--trainer.gradient_clip_val", "5"])
    assert isinstance(cli.model, SwinClassifier) and cli.trainer.global_step == 1
    assert cli.model.recipe.name == "nano_finetune" and cli.model.peak_lr == pytest.approx(1e-3)
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    reloaded = SwinClassifier.load_from_checkpoint(ckpt)
    assert reloaded.hparams.lr == 1e-3 and reloaded.model.config == cli.model.model.config
    assert swinzoo.load_model(ckpt).config == cli.model.model.config


def test_checkpoint_and_early_stopping_on_the_documented_metric_and_a_resume(tmp_path):
    """ModelCheckpoint / EarlyStopping monitor `val/top1` (max) as docs/config.md says, the filename pattern it gives
    for a metric name holding a `/` stays one file, and `fit(ckpt_path="last")` continues the run."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    def callbacks():
        best = ModelCheckpoint(tmp_path / "ckpt", monitor="val/top1", mode="max", save_last=True,
                               auto_insert_metric_name=False, filename="epoch{epoch}-top1{val/top1:.3f}")
        return [best, EarlyStopping(monitor="val/top1", mode="max", patience=5)]

    t = trainer(tmp_path, max_steps=-1, max_epochs=1, callbacks=callbacks())
    t.fit(SwinClassifier.from_pretrained("swin_n_64", num_classes=10), datamodule=FakeImages())
    best = t.checkpoint_callback
    assert best.best_model_score == t.callback_metrics["val/top1"]
    named = f"epoch0-top1{best.best_model_score:.3f}.ckpt"
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"last.ckpt", named}
    resumed = trainer(tmp_path, max_steps=-1, max_epochs=2, callbacks=callbacks())
    module = SwinClassifier.from_pretrained("swin_n_64", num_classes=10)
    resumed.fit(module, datamodule=FakeImages(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert resumed.global_step == 4 and module.step_seed == torch.load(best.last_model_path)["step_seed"]


@pytest.mark.parametrize("cls", [SwinClassifier, SimMIMPretrainer])
def test_batch_size_finder_validates_after_a_baseline_validation(tmp_path, cls):
    """After `trainer.validate` (inference mode) the metrics' reset states are inference tensors; a fit resets
    them in its on_fit_start, but Tuner.scale_batch_size's trial fits validate (under no_grad) from its callback's
    on_fit_start, before the module's: "Inplace update to inference tensor outside InferenceMode"."""
    if cls is SwinClassifier:
        module, data = cls.from_pretrained("swin_n_64", num_classes=10), FakeImages(n=16)
    else:
        module, data = cls.from_pretrained("swin_n_64.simmim"), FakeMaskedImages()
    t = trainer(tmp_path, max_steps=4)
    t.validate(module, datamodule=data, verbose=False)
    # one trial of 16 images: a batch an epoch, each step ends an epoch and validates
    size = Tuner(t).scale_batch_size(module, datamodule=data, init_val=16, max_trials=1, steps_per_trial=2)
    assert size == data.batch_size == 16


def test_from_pretrained_sets_a_mapping_of_some_keys_over_the_recipe_it_picks():
    """`recipe={"mixup": 0.8}` (LightningCLI: `--model.recipe '{"mixup": 0.8}'` or YAML keys under model.recipe)
    changes the recipe `from_pretrained` picks, as `swinzoo finetune --recipe.mixup 0.8` and
    `SimMIMPretrainer.from_pretrained` do; it used to fill the rest from Recipe's defaults, swapping the nano
    recipe for the official 30-epoch ImageNet one (lr 2e-5, RandAugment, drop path 0.2). A full mapping (a run's
    recorded recipe) is taken as it is."""
    from swinzoo.train.recipes import load_recipe

    nano = load_recipe("nano_finetune")
    module = SwinClassifier.from_pretrained("swin_n_64", num_classes=10, recipe={"mixup": 0.8}, total_batch=64)
    assert module.recipe == nano.replace(mixup=0.8)
    full = load_recipe("finetune").to_dict()
    assert SwinClassifier.from_pretrained("swin_n_64", recipe=full).recipe == load_recipe("finetune")
    with pytest.raises(SwinzooError, match="unknown recipe key 'mixp'"):
        SwinClassifier.from_pretrained("swin_n_64", recipe={"mixp": 0.8})
