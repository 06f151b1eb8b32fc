"""swinzoo's LightningModules in a user's own Trainer, with their own data: built from zoo weights, fitted, validated,
tested, predicted, reloaded from checkpoints, and their checkpoints read back by swinzoo (CPU, nano model, a few
steps each)."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.datasets import FakeData
from torchvision.transforms import v2

import swinzoo
from swinzoo import SwinzooError
from swinzoo.train.data import SwinDataModule
from swinzoo.train.module import SwinClassifier
from swinzoo.train.recipes import load_recipe
from swinzoo.train.simmim_data import SimMIMDataModule
from swinzoo.train.simmim_module import SimMIMPretrainer
from tests.conftest import run_cli

TO_TENSOR = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


class FakeImages(L.LightningDataModule):
    """A user's own DataModule: torchvision's FakeData, 10 classes, (image, label) batches."""

    def __init__(self, res: int = 64, batch_size: int = 8, n: int = 16) -> None:
        super().__init__()
        self.res, self.batch_size, self.n = res, batch_size, n

    def loader(self, offset: int) -> DataLoader:
        data = FakeData(self.n, (3, self.res, self.res), 10, transform=TO_TENSOR, random_offset=offset)
        return DataLoader(data, batch_size=self.batch_size)

    def train_dataloader(self):
        return self.loader(0)

    def val_dataloader(self):
        return self.loader(1000)

    def test_dataloader(self):
        return self.loader(2000)

    def predict_dataloader(self):
        return self.loader(3000)


def trainer(tmp_path, **kw) -> L.Trainer:
    kw = {"max_steps": 2, "accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False,
          "default_root_dir": tmp_path, "logger": L.pytorch.loggers.CSVLogger(tmp_path), **kw}
    return L.Trainer(**kw)


def test_from_pretrained_moves_zoo_weights_as_create_model_does():
    module = SwinClassifier.from_pretrained("swin_n_64", num_classes=10, res=96, total_batch=64)
    reference = swinzoo.create_model("swin_n_64", pretrained=True, num_classes=10, img_size=96)
    ours, theirs = module.model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    config = module.model.config
    assert (config.img_size, config.window_size, config.num_classes) == (96, reference.config.window_size, 10)
    recipe = load_recipe("nano_finetune")  # what `swinzoo finetune --from swin_n_64` picks: the one it names
    assert module.recipe.name == "nano_finetune" and config.drop_path_rate == recipe.drop_path_rate
    assert module.peak_lr == pytest.approx(recipe.base_lr * 64 / 512)  # the recipe's rate is per 512 images
    named = SwinClassifier.from_pretrained("swin_n_64", num_classes=10, recipe="finetune", total_batch=64)
    assert named.recipe.name == "finetune" and named.model.config.img_size == 64


def test_from_pretrained_model_saves_with_where_it_came_from(tmp_path):
    module = SwinClassifier.from_pretrained("swin_n_64", num_classes=10)
    saved = swinzoo.load_model(swinzoo.save_model(module.model, tmp_path / "m.safetensors"))
    assert saved.provenance["source"] == "swin_n_64" and saved.provenance["recipe"]["name"] == "nano_finetune"
    assert saved.provenance["parent"]["dataset"] == "shapes"  # the zoo weights' own record
    # a later fine-tune of these weights defaults to the recipe their training used, as after `swinzoo finetune`
    assert saved.provenance["finetune_recipe"] == "nano_finetune"


def test_from_pretrained_refuses_what_it_cannot_train():
    with pytest.raises(SwinzooError, match="unknown recipe 'nope'"):
        SwinClassifier.from_pretrained("swin_n_64", recipe="nope")
    with pytest.raises(SwinzooError, match="at least 2 classes") as refused:
        SwinClassifier.from_pretrained("swin_n_64", num_classes=1)
    assert str(refused.value).startswith("num_classes=1: ")  # what was asked for, not swin_n_64's 10 classes
    with pytest.raises(SwinzooError, match="simmim_pretrain is a pretraining recipe"):
        SwinClassifier.from_pretrained("swin_n_64", recipe="simmim_pretrain")


def test_own_trainer_validates_fits_tests_and_predicts(tmp_path):
    module = SwinClassifier.from_pretrained("swin_n_64", num_classes=10)  # total_batch: what the Trainer runs
    data = FakeImages()
    t = trainer(tmp_path, max_steps=2, accumulate_grad_batches=2)
    before = t.validate(module, datamodule=data, verbose=False)[0]  # a baseline first, then the fit
    assert before["val/n"] == 16
    t.fit(module, datamodule=data)
    assert t.global_step == 2 and {"train/loss", "lr", "val/top1"} <= set(t.callback_metrics)
    # the recipe's rate per 512 images, scaled by the loader's batch 8 x 2 accumulated
    assert module.peak_lr == pytest.approx(module.recipe.base_lr * 16 / 512)
    tested = t.test(module, datamodule=data, verbose=False)[0]
    test_images, test_labels = (torch.cat(parts) for parts in zip(*data.test_dataloader()))
    module.eval()
    with torch.no_grad():
        logits = module(test_images)
    # the scores of these weights on the 16 test images, computed here from their logits
    assert tested["test/n"] == 16
    assert tested["test/top1"] == pytest.approx((logits.argmax(-1) == test_labels).double().mean().item())
    top5 = (logits.topk(5, dim=-1).indices == test_labels[:, None]).any(-1)
    assert tested["test/top5"] == pytest.approx(top5.double().mean().item())
    assert tested["test/loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, test_labels).item(), rel=1e-5)
    batches = t.predict(module, datamodule=data)
    images = torch.cat([x for x, _ in data.predict_dataloader()])
    module.eval()
    with torch.no_grad():
        expected = module(images)
    assert torch.allclose(torch.cat(batches), expected, atol=1e-5)
    bare = t.predict(module, DataLoader(images[:4], batch_size=2))  # batches of images alone
    assert torch.allclose(torch.cat(bare), expected[:4], atol=1e-5)


def test_an_unbounded_trainer_is_refused_in_one_line(tmp_path):
    module = SwinClassifier.from_pretrained("swin_n_64", num_classes=10, total_batch=8)
    with pytest.raises(SwinzooError, match="give the Trainer max_steps or max_epochs"):
        trainer(tmp_path, max_steps=-1, max_epochs=-1).fit(module, datamodule=FakeImages())


def test_own_checkpoint_reloads_and_swinzoo_reads_it(tmp_path, capsys):
    module = SwinClassifier.from_pretrained("swin_n_64", num_classes=10, class_names=[f"c{i}" for i in range(10)])
    t = trainer(tmp_path, max_steps=2, limit_val_batches=1)
    t.fit(module, datamodule=FakeImages())
    ckpt = t.checkpoint_callback.best_model_path
    loaded = SwinClassifier.load_from_checkpoint(ckpt)  # Lightning 2.6's defaults: weights_only loading
    images = torch.rand(2, 3, 64, 64)
    module.eval(), loaded.eval()
    with torch.no_grad():
        logits = module(images)
        assert torch.equal(loaded(images), logits)
        assert torch.allclose(swinzoo.load_model(ckpt)(images), logits, atol=1e-6)
    assert swinzoo.read_checkpoint(ckpt).config == module.model.config  # class names and preprocessing kept
    assert swinzoo.read_checkpoint(ckpt, from_format="swinzoo").provenance["lightning"]["global_step"] == 2
    code, _, err = run_cli(["export", ckpt, "--to", "timm", "-o", tmp_path / "timm"], capsys)
    assert code == 0, err
    exported = swinzoo.load_model(tmp_path / "timm")
    with torch.no_grad():
        assert torch.allclose(exported(images), logits, atol=1e-5)
    assert exported.config.class_names == [f"c{i}" for i in range(10)]


def test_finetune_run_checkpoints_reload_in_lightning(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["finetune", "--from", "swin_n_64", "--max-steps", "2", "--batch-size", "4",
                            "--num-workers", "0", "--precision", "32-true", "--out", out,
                            "--trainer.limit_val_batches", "1", "--trainer.enable_model_summary", "false"], capsys)
    assert code == 0, err
    saved = swinzoo.load_model(out)
    images = torch.rand(2, 3, 64, 64)
    saved.eval()
    with torch.no_grad():
        expected = saved(images)
    for name in ("last.ckpt", "best.ckpt"):  # one validation: the best weights are the last ones
        module = SwinClassifier.load_from_checkpoint(out / name).eval()
        with torch.no_grad():
            assert torch.allclose(module(images), expected, atol=1e-6), name
        assert module.model.config == saved.config
    module = SwinClassifier.load_from_checkpoint(out / "last.ckpt")
    scores = trainer(tmp_path, logger=False).validate(module, datamodule=FakeImages(), verbose=False)[0]
    assert scores["val/n"] == 16


def test_simmim_pretrainer_in_own_trainer_and_its_checkpoint(tmp_path):
    recipe = load_recipe("simmim_pretrain").replace(mask_ratio=0.5)
    module = SimMIMPretrainer(swinzoo.create_model("swin_n_64").config.to_dict(), recipe.to_dict(), 8)
    images = DataLoader(torch.rand(16, 3, 64, 64), batch_size=8)
    t = trainer(tmp_path, max_steps=2, limit_val_batches=1)
    t.validate(module, images, verbose=False)  # a baseline first, then the fit
    t.fit(module, images, images)
    simmim = swinzoo.load_simmim(t.checkpoint_callback.best_model_path)
    assert simmim.mask_ratio == 0.5
    for key, value in module.model.state_dict().items():
        assert torch.equal(simmim.state_dict()[key], value), key


def test_data_modules_take_a_recipe_by_name():
    """As `from_pretrained` and `--recipe` do (and LightningCLI's YAML can give: a name or a mapping of keys)."""
    recipe = load_recipe("nano_finetune")
    for given in ("nano_finetune", recipe.to_dict(), recipe):
        data = SwinDataModule("shapes", 32, 4, recipe=given, num_workers=0, train_size=8, val_size=4)
        data.setup("fit")
        crop = next(t for t in data.train_dataloader().dataset.transform.transforms
                    if isinstance(t, v2.RandomResizedCrop))
        assert data.recipe == recipe and crop.scale == recipe.crop_scale
    pretrain = SimMIMDataModule("shapes", 32, 4, recipe="simmim_pretrain", num_workers=0)
    assert pretrain.recipe == load_recipe("simmim_pretrain")


def test_from_pretrained_picks_the_22k_to_1k_recipe_as_finetune_does(tmp_path):
    """An ImageNet-22k source at 224 px moved to 1000 classes is the official 22k -> 1k fine-tune, the recipe
    `swinzoo finetune` chooses from the source's 21841 classes (not from the 1000 it trains)."""
    from swinzoo import SwinConfig, SwinTransformer

    config = SwinConfig(img_size=224, window_size=7, num_classes=21841, embed_dim=8, depths=(1, 1, 1, 1),
                        num_heads=(1, 1, 1, 1))
    source = swinzoo.save_model(SwinTransformer(config), tmp_path / "in22k.safetensors")
    module = SwinClassifier.from_pretrained(source, num_classes=1000, total_batch=64)
    assert module.recipe.name == "swin_22kto1k" and module.model.config.num_classes == 1000


def test_from_pretrained_records_what_the_transfer_did_as_create_model_does():
    """A new class count re-initialises the head: the model's provenance says so (what `swinzoo.save_model`
    writes), as create_model's and a `swinzoo finetune` output's do."""
    module = SwinClassifier.from_pretrained("swin_n_64", num_classes=7, total_batch=64)
    reference = swinzoo.create_model("swin_n_64", pretrained=True, num_classes=7)
    reinitialized = module.model.provenance["transfer"]["reinitialized"]
    assert reinitialized == reference.provenance["transfer"]["reinitialized"]
    assert any(r.startswith("head.weight (10, 256) -> (7, 256)") for r in reinitialized)


def test_test_step_counts_each_image_once_under_ddp_padding(monkeypatch):
    """Under DDP Lightning's DistributedSampler pads the test set as it pads the validation set (3 images on 2
    ranks: rank 1 reads image 1 and a copy of image 0): test/n and the scores count the set's own images, as
    val/ do. The rank's view is simulated; the deal is torch's DistributedSampler's."""
    from types import SimpleNamespace

    from torch.utils.data import DistributedSampler, TensorDataset

    config, recipe = swinzoo.create_model("swin_n_64").config, load_recipe("nano_finetune")
    module = SwinClassifier(config.to_dict(), recipe.to_dict(), 8)
    data = TensorDataset(torch.rand(3, 3, 64, 64), torch.tensor([0, 1, 2]))
    loader = DataLoader(data, batch_size=2, sampler=DistributedSampler(data, 2, rank=1, shuffle=False))
    module._trainer = SimpleNamespace(testing=True, test_dataloaders=loader, val_dataloaders=None)
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    batch = next(iter(loader))
    assert batch[1].tolist() == [1, 0]  # its own image, then the padding's copy
    with torch.no_grad():
        module.eval().test_step(batch, 0)
    assert module.val_n.compute() == 1


def test_simmim_from_pretrained_continues_a_simmim_model_with_its_masks():
    """A SimMIM model (the shipped swin_n_64.simmim) continues whole: encoder, mask token and decoder, with the
    mask settings its run recorded (16 px), as `swinzoo pretrain --from` it does; a recipe given sets them."""
    module = SimMIMPretrainer.from_pretrained("swin_n_64.simmim", total_batch=64)
    reference = swinzoo.load_simmim("swin_n_64.simmim")
    ours, theirs = module.model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key].float()), key
    assert (module.recipe.name, module.model.mask_patch_size) == ("simmim_pretrain", reference.mask_patch_size) == (
        "simmim_pretrain", 16)
    assert module.peak_lr == pytest.approx(module.recipe.base_lr * 64 / 512)
    assert module.model.provenance["simmim"]["start"].startswith("a SimMIM checkpoint")
    official = SimMIMPretrainer.from_pretrained("swin_n_64.simmim", recipe="simmim_pretrain")
    assert official.model.mask_patch_size == 32


def test_simmim_from_pretrained_starts_from_a_classifiers_encoder_and_trains(tmp_path):
    """A classifier's encoder (its head dropped) at a new resolution, a fresh mask token and decoder; fitted in a
    user's Trainer with the lr scaled for its loader's batch; the model saves as a pretraining output does."""
    module = SimMIMPretrainer.from_pretrained("swin_n_64", res=96, recipe={"mask_patch_size": 16})
    reference = swinzoo.create_model("swin_n_64", pretrained=True, num_classes=0, img_size=96).state_dict()
    encoder = {k[len("encoder."):]: v for k, v in module.model.state_dict().items() if k.startswith("encoder.")}
    assert set(encoder) - set(reference) == {"mask_token"}
    for key in reference:
        assert torch.equal(encoder[key], reference[key]), key
    assert module.model.config.img_size == 96 and module.model.mask_patch_size == 16
    t = trainer(tmp_path, max_steps=2, limit_val_batches=1)
    images = DataLoader(torch.rand(16, 3, 96, 96), batch_size=8)
    t.fit(module, images, images)
    assert t.global_step == 2 and module.peak_lr == pytest.approx(module.recipe.base_lr * 8 / 512)
    saved = swinzoo.load_simmim(swinzoo.save_model(module.model, tmp_path / "m.safetensors"))
    assert saved.mask_patch_size == 16 and saved.provenance["source"] == "swin_n_64"
    assert saved.provenance["finetune_recipe"] == "nano_finetune"  # what `finetune --from` it picks, as after a run


def test_simmim_from_pretrained_refuses_what_it_cannot_pretrain(tmp_path):
    backbone = swinzoo.save_model(swinzoo.load_model("swin_n_64", features_only=True), tmp_path / "bb.safetensors")
    with pytest.raises(SwinzooError, match="is a detection backbone"):
        SimMIMPretrainer.from_pretrained(backbone)
    with pytest.raises(SwinzooError, match="nano_finetune is a fine-tuning recipe"):
        SimMIMPretrainer.from_pretrained("swin_n_64", recipe="nano_finetune")
    with pytest.raises(SwinzooError, match="mask patch 32 does not divide the input 80x80"):
        SimMIMPretrainer.from_pretrained("swin_n_64", res=80)


def test_own_trainer_draws_the_runs_curves_with_its_callback(tmp_path):
    """The callback that draws a `swinzoo finetune` run's curves.png takes any Trainer's SwinClassifier fit."""
    from PIL import Image

    from swinzoo.train.curves import TrainingCurves

    curves = TrainingCurves(tmp_path / "curves.png")
    t = trainer(tmp_path, max_steps=4, val_check_interval=2, callbacks=[curves])
    t.fit(SwinClassifier.from_pretrained("swin_n_64", num_classes=10), datamodule=FakeImages())
    assert [p[0] for p in curves.train] == [1, 2, 3, 4] and [p[0] for p in curves.val] == [2, 4]
    assert Image.open(tmp_path / "curves.png").size == (900, 750)  # three panels: loss, validation, lr
