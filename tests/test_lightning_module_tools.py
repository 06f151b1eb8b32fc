"""What a Lightning user calls on swinzoo's LightningModules directly, beyond fitting: ModelSummary's sizes,
`to_onnx` / `to_torchscript`, TensorBoard's graph, SimMIMPretrainer under `trainer.test` / `trainer.predict`, hparams
and freeze (CPU, nano model)."""

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.model_summary import ModelSummary
from torch.utils.data import DataLoader

import swinzoo
from swinzoo import SwinzooError
from swinzoo.train.module import SwinClassifier
from swinzoo.train.recipes import load_recipe
from swinzoo.train.simmim_module import SimMIMPretrainer


def trainer(tmp_path, **kw) -> L.Trainer:
    kw = {"max_steps": 2, "accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False,
          "default_root_dir": tmp_path, "logger": False, **kw}
    return L.Trainer(**kw)


def classifier() -> SwinClassifier:
    return SwinClassifier.from_pretrained("swin_n_64", num_classes=10, total_batch=8)


def pretrainer(mask_ratio: float = 0.5) -> SimMIMPretrainer:
    recipe = load_recipe("simmim_pretrain").replace(mask_ratio=mask_ratio)
    return SimMIMPretrainer(swinzoo.create_model("swin_n_64").config.to_dict(), recipe.to_dict(), 8)


def summary_sizes(module) -> dict[str, tuple[str, str]]:
    data = dict(ModelSummary(module, max_depth=1)._get_summary_data())
    assert "In sizes" in data, "no example input: ModelSummary shows no sizes"
    return {name: (i, o) for name, i, o in zip(data["Name"], data["In sizes"], data["Out sizes"])}


def test_model_summary_shows_the_classifiers_input_and_output_sizes():
    module = classifier()
    assert summary_sizes(module)["model"] == ("[1, 3, 64, 64]", "[1, 10]")
    assert module.training  # the summary's forward puts the module back as it found it
    assert "example_input_array" not in str(module.state_dict().keys())  # nothing in the checkpoint


def test_model_summary_shows_the_pretrainers_images_and_mask():
    module = pretrainer()
    images, mask = summary_sizes(module)["model"][0], None
    assert images == "[[1, 3, 64, 64], [1, 16, 16]]", images  # (images, mask), a mask entry per 4 px patch
    images, mask = module.example_input_array
    assert 0 < mask.float().mean() < 1  # a real mask: the loss of the summary's forward is finite


def test_example_input_follows_the_models_input_size():
    module = classifier()
    module.model.set_input_size(96)
    assert tuple(module.example_input_array.shape) == (1, 3, 96, 96)
    module.example_input_array = torch.zeros(2, 3, 64, 64)  # a user's own, as on any LightningModule
    assert tuple(module.example_input_array.shape) == (2, 3, 64, 64)


def test_trainer_summary_in_bf16_true_precision_runs(tmp_path, caplog):
    module = classifier()
    summary = L.pytorch.callbacks.ModelSummary(max_depth=1)  # the plain table (rich's is cut to the terminal)
    trainer(tmp_path, max_steps=1, precision="bf16-true", enable_model_summary=True, limit_val_batches=0,
            callbacks=[summary]).fit(module, DataLoader(list(zip(torch.rand(8, 3, 64, 64), torch.arange(8))),
                                                        batch_size=8))
    assert "[1, 3, 64, 64]" in caplog.text, "no sizes in the summary"


def test_to_onnx_without_an_input_sample(tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    module = classifier().eval()
    module.to_onnx(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = module(x)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert torch.allclose(torch.from_numpy(got), expected, atol=1e-4)


@pytest.mark.parametrize("make", [classifier, pretrainer])
def test_to_torchscript_is_refused_naming_what_works(make):
    with pytest.raises(SwinzooError, match=r"to_onnx.*torch\.export") as refused:
        make().to_torchscript()
    assert "\n" not in str(refused.value)


def test_pretrainer_test_mirrors_validation(tmp_path):
    module = pretrainer()
    images = DataLoader(torch.rand(6, 3, 64, 64), batch_size=4)
    t = trainer(tmp_path)
    tested = t.test(module, images, verbose=False)[0]
    assert not (tmp_path / "reconstructions").exists()  # the picture is validation's
    validated = t.validate(module, images, verbose=False)[0]
    assert set(tested) == {"test/loss", "test/n"} and tested["test/n"] == 6
    assert tested["test/loss"] == pytest.approx(validated["val/loss"])  # the same fixed masks, image by image


def test_pretrainer_predicts_reconstructions_with_the_validation_masks(tmp_path):
    module = pretrainer(mask_ratio=0.5)
    data = torch.rand(6, 3, 64, 64)
    t = trainer(tmp_path)
    out = t.predict(module, DataLoader(data, batch_size=4))
    assert [sorted(batch) for batch in out] == [["loss", "mask", "reconstruction"]] * 2
    assert [tuple(batch["reconstruction"].shape) for batch in out] == [(4, 3, 64, 64), (2, 3, 64, 64)]
    masks = torch.cat([batch["mask"] for batch in out])
    assert masks.shape == (6, 16, 16) and masks.float().mean() == 0.5
    # each image's mask is its place in the set's, at any batch size: what validation and test score
    again = torch.cat([batch["mask"] for batch in t.predict(module, DataLoader(data, batch_size=3))])
    assert torch.equal(again, masks)
    module.eval()
    with torch.no_grad():
        loss, reconstruction = module(data[4:], masks[4:])
    assert torch.allclose(out[1]["reconstruction"], reconstruction, atol=1e-6)
    assert out[1]["loss"] == pytest.approx(loss.item())


@pytest.mark.parametrize("make", [classifier, pretrainer])
def test_hparams_rebuild_the_module_and_freeze_stops_training(make):
    module = make()
    rebuilt = type(module)(**module.hparams)
    assert rebuilt.model.config == module.model.config and rebuilt.recipe == module.recipe
    module.freeze()
    assert not module.training and not any(p.requires_grad for p in module.parameters())
    module.unfreeze()
    assert module.training and all(p.requires_grad for p in module.parameters())


@pytest.mark.parametrize("make", [classifier, pretrainer])
def test_tensorboard_logs_the_graph_of_the_example_input(tmp_path, make):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = L.pytorch.loggers.TensorBoardLogger(tmp_path, log_graph=True)
    t = trainer(tmp_path, max_steps=1, limit_val_batches=0, logger=logger)
    images = torch.rand(8, 3, 64, 64)
    t.fit(make(), DataLoader(list(zip(images, torch.arange(8))) if make is classifier else images, batch_size=8))
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert len(events.Graph().node) > 100
