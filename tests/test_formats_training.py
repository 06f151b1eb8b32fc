"""The training outputs of other tools, read as they are written: timm's train.py checkpoints, torchvision's
references, the official Swin code's ckpt_epoch_N.pth, Hugging Face Trainer folders, a Lightning checkpoint of the
user's own module. Every file is built here from a small random model, laid out as its tool saves it."""

from __future__ import annotations

import argparse
import sys
import types

import pytest
import torch

import swinzoo
from swinzoo.errors import SwinzooError

from .conftest import one_error_line, run_cli
from .formats_helpers import assert_logits_close, randomize

timm = pytest.importorskip("timm")

GEOMETRY = dict(img_size=64, window_size=4, embed_dim=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
FIXTURE = "tests/fixtures/swin_v1_tiny_w7_224.pth"


def timm_model(arch: str = "swin_tiny_patch4_window7_224", seed: int = 0, **kwargs):
    model = timm.create_model(arch, num_classes=5, **{**GEOMETRY, **kwargs})
    return randomize(model, seed).double().eval()


def timm_train_checkpoint(model, arch: str, ema=None, **kwargs) -> dict:
    """What timm's train.py writes (CheckpointSaver._save): its argparse arguments pickled whole."""
    model_kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in {**GEOMETRY, **kwargs}.items()}
    args = argparse.Namespace(model=arch, model_kwargs=model_kwargs, num_classes=5, img_size=None, lr=5e-4,
                              device="cpu", model_ema=ema is not None, epochs=3)
    state = {"epoch": 2, "arch": arch, "optimizer": {"state": {}, "param_groups": []}, "version": 2, "args": args,
             "state_dict": model.state_dict(), "metric": 71.5,
             "saver": {"checkpoint_files": [("checkpoint-2.pth.tar", 71.5)], "best_epoch": 2, "best_metric": 71.5}}
    if ema is not None:
        state["state_dict_ema"] = ema.state_dict()
    return state


def logits(model, size: int = 64) -> torch.Tensor:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        return model.double().eval()(x)


# ---------------------------------------------------------------------------------------------- pickled configs
def test_timm_train_checkpoint_converts_without_trusting_it(tmp_path, capsys):
    """Its `args` is an argparse.Namespace, which a weights-only load refuses; timm's own loader allows that one
    class, and so does swinzoo, without --trust-checkpoint."""
    model = timm_model(img_size=128)  # its last stage one window: the weights alone tell the geometry
    src = tmp_path / "model_best.pth.tar"
    torch.save(timm_train_checkpoint(model, "swin_tiny_patch4_window7_224", img_size=128), src)
    code, out, err = run_cli(["convert", src, "-o", tmp_path / "m.safetensors"], capsys)
    assert code == 0, err
    ours = swinzoo.load_model(tmp_path / "m.safetensors")
    assert_logits_close(logits(ours, 128), logits(model, 128))


class CfgNode(dict):
    """Pickled as yacs's CfgNode is (a dict with attribute state), under its name; never rebuilt on reading."""

    __module__ = "yacs.config"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.__dict__.update({"__immutable__": True, "__deprecated_keys__": set(), "__renamed_keys__": {},
                              "__new_allowed__": False})

    def __setstate__(self, state):
        raise AssertionError("yacs code ran while reading a checkpoint")


@pytest.fixture
def yacs_name(monkeypatch):
    """CfgNode pickles as yacs.config.CfgNode while saving; yacs itself need not be installed."""
    module = types.ModuleType("yacs.config")
    module.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, "yacs", types.ModuleType("yacs"))
    monkeypatch.setitem(sys.modules, "yacs.config", module)


def official_training_checkpoint(path, model_sd) -> None:
    """The official code's save_checkpoint: model, optimizer, lr_scheduler, max_accuracy, epoch, config, scaler."""
    config = CfgNode(MODEL=CfgNode(TYPE="swin", SWIN=CfgNode(EMBED_DIM=24, DEPTHS=[2, 2, 6, 2])),
                     DATA=CfgNode(IMG_SIZE=224))
    torch.save({"model": model_sd, "optimizer": {"state": {}, "param_groups": []}, "lr_scheduler": {"t_initial": 30},
                "max_accuracy": 81.2, "epoch": 29, "config": config,
                "scaler": {"scale": 65536.0, "growth_factor": 2.0}}, path)


def test_official_training_checkpoint_reads_without_trusting_it(tmp_path, capsys, yacs_name, monkeypatch):
    """Its yacs config is read as a plain mapping (no yacs code runs); the weights are the official ones."""
    src = tmp_path / "ckpt_epoch_29.pth"
    official_training_checkpoint(src, torch.load(FIXTURE, weights_only=True)["model"])
    monkeypatch.delitem(sys.modules, "yacs.config")  # reading must not need yacs
    code, out, err = run_cli(["convert", src, "-o", tmp_path / "m.safetensors"], capsys)
    assert code == 0, err
    ours, reference = swinzoo.load_model(tmp_path / "m.safetensors"), swinzoo.load_model(FIXTURE)
    assert_logits_close(logits(ours, 224), logits(reference, 224), atol=0)


class Unknown:
    """A class no allowlist names: its pickle may run code, so only --trust-checkpoint loads it."""


def test_other_python_objects_still_need_trust_and_are_named(tmp_path, capsys):
    src = tmp_path / "ckpt.pth"
    torch.save({"model": torch.load(FIXTURE, weights_only=True)["model"], "extra": Unknown()}, src)
    code, _, err = run_cli(["convert", src, "-o", tmp_path / "m.safetensors"], capsys)
    assert code == 2
    one_error_line(err, "tests.test_formats_training.Unknown", "--trust-checkpoint")
    assert not (tmp_path / "m.safetensors").exists()
    with pytest.raises(SwinzooError, match="trust_checkpoint=True"):
        swinzoo.load_model(src)


# ---------------------------------------------------------------------------------------------- which weights
@pytest.fixture
def timm_with_ema(tmp_path):
    """A timm train.py checkpoint with --model-ema at 64 px / window 4 (its last stage narrower than the window, so
    the weights alone do not tell the resolution: `arch` and `args.model_kwargs` do)."""
    model, ema = timm_model(seed=0), timm_model(seed=1)
    src = tmp_path / "model_best.pth.tar"
    torch.save(timm_train_checkpoint(model, "swin_tiny_patch4_window7_224", ema=ema), src)
    return src, model, ema


def test_timm_checkpoint_takes_the_ema_weights_as_timm_does_and_says_so(timm_with_ema, tmp_path, capsys):
    """timm's load_checkpoint takes state_dict_ema by default, and train.py ranks model_best by the EMA's metric."""
    src, model, ema = timm_with_ema
    code, out, err = run_cli(["convert", src, "-o", tmp_path / "ema.safetensors"], capsys)
    assert code == 0, err
    assert "state_dict_ema" in out and "--no-ema" in out
    ours = swinzoo.load_model(tmp_path / "ema.safetensors")
    assert (ours.config.img_size, ours.config.window_size) == (64, 4)
    assert ours.provenance["checkpoint_entry"].startswith("state_dict_ema")
    assert_logits_close(logits(ours), logits(ema))
    code, out, err = run_cli(["convert", tmp_path / "ema.safetensors", "-o", tmp_path / "again.safetensors"], capsys)
    assert code == 0 and "state_dict" not in out, out  # the choice is said where it was made, not on every read after
    code, out, err = run_cli(["convert", src, "--no-ema", "-o", tmp_path / "raw.safetensors"], capsys)
    assert code == 0, err
    assert "read state_dict, the trained weights (--ema reads state_dict_ema)" in out
    assert_logits_close(logits(swinzoo.load_model(tmp_path / "raw.safetensors")), logits(model))


def test_ema_asked_of_a_checkpoint_without_one_is_refused(tmp_path, capsys):
    src = tmp_path / "last.pth.tar"
    torch.save(timm_train_checkpoint(timm_model(), "swin_tiny_patch4_window7_224"), src)
    code, _, err = run_cli(["convert", src, "--ema", "-o", tmp_path / "m.safetensors"], capsys)
    assert code == 2
    one_error_line(err, "no EMA weights", "state_dict")
    assert not (tmp_path / "m.safetensors").exists()


def test_timm_v2_checkpoint_gets_its_window_from_arch_and_model_kwargs(tmp_path, capsys):
    """V2 weights do not reveal their window; the checkpoint's `arch` and `args.model_kwargs` do."""
    model = timm_model("swinv2_tiny_window8_256", pretrained_window_sizes=(6, 6, 6, 2))
    src = tmp_path / "checkpoint-7.pth.tar"
    torch.save(timm_train_checkpoint(model, "swinv2_tiny_window8_256", pretrained_window_sizes=(6, 6, 6, 2)), src)
    ours = swinzoo.load_model(src)
    assert (ours.config.img_size, ours.config.window_size) == (64, 4)
    assert ours.config.pretrained_window_sizes == (6, 6, 6, 2)
    assert_logits_close(logits(ours), logits(model))


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "_orig_mod.module."])
def test_ddp_and_compiled_models_state_dicts_load(prefix, tmp_path):
    """Saved from a DDP wrapper or a torch.compile'd model (timm's clean_state_dict strips both)."""
    model = timm_model(img_size=128)
    state = timm_train_checkpoint(model, "swin_tiny_patch4_window7_224", img_size=128)
    state["state_dict"] = {prefix + k: v for k, v in state["state_dict"].items()}
    torch.save(state, tmp_path / "last.pth.tar")
    assert_logits_close(logits(swinzoo.load_model(tmp_path / "last.pth.tar"), 128), logits(model, 128))


def test_torchvision_reference_checkpoint_with_model_ema(tmp_path, capsys):
    """references/classification/train.py: {'model', 'optimizer', 'lr_scheduler', 'epoch', 'args', 'model_ema'},
    the EMA an AveragedModel's state dict (`module.` keys and an `n_averaged` count)."""
    from torch.optim.swa_utils import AveragedModel
    from torchvision.models.swin_transformer import SwinTransformer

    def tv_model(seed):
        return randomize(SwinTransformer(patch_size=[4, 4], embed_dim=24, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
                                         window_size=[4, 4], num_classes=5), seed).double().eval()

    model, ema_source = tv_model(0), tv_model(1)
    ema = AveragedModel(ema_source, use_buffers=True)
    args = argparse.Namespace(model="swin_t", lr=1e-3, device="cpu", model_ema=True, distributed=False)
    src = tmp_path / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "optimizer": {"state": {}, "param_groups": []}, "lr_scheduler": {},
                "epoch": 4, "args": args, "model_ema": ema.state_dict()}, src)
    code, out, err = run_cli(["convert", src, "-o", tmp_path / "ema.safetensors"], capsys)
    assert code == 0, err
    assert "model_ema" in out
    assert_logits_close(logits(swinzoo.load_model(tmp_path / "ema.safetensors"), 128), logits(ema_source, 128))
    code, out, err = run_cli(["convert", src, "--no-ema", "-o", tmp_path / "raw.safetensors"], capsys)
    assert code == 0, err
    assert_logits_close(logits(swinzoo.load_model(tmp_path / "raw.safetensors"), 128), logits(model, 128))


# ---------------------------------------------------------------------------------------------- Hugging Face Trainer
def hf_model(seed: int = 0):
    transformers = pytest.importorskip("transformers")
    config = transformers.SwinConfig(image_size=128, patch_size=4, embed_dim=24, depths=[2, 2, 2, 2],
                                     num_heads=[1, 2, 4, 8], window_size=4, num_labels=5)
    return randomize(transformers.SwinForImageClassification(config), seed).eval()


def hf_logits(model) -> torch.Tensor:
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        return model.double()(pixel_values=x).logits


def test_hf_trainer_checkpoint_folder(tmp_path, capsys):
    """Trainer's output_dir/checkpoint-N: the model's files beside the optimizer, scheduler and trainer state."""
    model = hf_model()
    folder = tmp_path / "output_dir" / "checkpoint-500"
    model.save_pretrained(folder)
    torch.save({"state": {}, "param_groups": []}, folder / "optimizer.pt")
    torch.save({"last_epoch": 500}, folder / "scheduler.pt")
    (folder / "trainer_state.json").write_text('{"global_step": 500, "log_history": []}')
    (folder / "training_args.bin").write_bytes(b"\x80\x04N.")
    assert_logits_close(logits(swinzoo.load_model(folder), 128), hf_logits(model))
    code, _, err = run_cli(["convert", folder, "-o", tmp_path / "m.safetensors"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_sharded_hf_folder(safe, tmp_path, capsys):
    """save_pretrained(max_shard_size=...) writes shards and an index (model.safetensors.index.json, or
    pytorch_model.bin.index.json), which from_pretrained reads as one model."""
    model = hf_model()
    model.save_pretrained(tmp_path / "sharded", max_shard_size="200KB", safe_serialization=safe)
    assert len(list((tmp_path / "sharded").glob("*-of-*"))) > 1
    assert_logits_close(logits(swinzoo.load_model(tmp_path / "sharded"), 128), hf_logits(model))
    code, _, err = run_cli(["convert", tmp_path / "sharded", "-o", tmp_path / "m.safetensors"], capsys)
    assert code == 0, err


def test_a_folder_with_safetensors_shards_and_a_bin_reads_the_shards_as_transformers_does(tmp_path):
    """transformers' from_pretrained takes model.safetensors, then its shards' index, and only then
    pytorch_model.bin; swinzoo took the .bin first (another model's weights in a folder holding both, and a
    pickle read where safetensors was at hand)."""
    model, other = hf_model(), hf_model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    model.save_pretrained(tmp_path / "both", max_shard_size="200KB")
    other.save_pretrained(tmp_path / "bin", safe_serialization=False)
    (tmp_path / "bin" / "pytorch_model.bin").rename(tmp_path / "both" / "pytorch_model.bin")
    assert_logits_close(logits(swinzoo.load_model(tmp_path / "both"), 128), hf_logits(model))


def test_a_shard_missing_or_outside_the_folder_is_refused(tmp_path, capsys):
    import json

    model = hf_model()
    model.save_pretrained(tmp_path / "sharded", max_shard_size="200KB")
    index_path = tmp_path / "sharded" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    (tmp_path / "sharded" / shard).rename(tmp_path / shard)
    code, _, err = run_cli(["convert", tmp_path / "sharded", "-o", tmp_path / "m.safetensors"], capsys)
    assert code == 2
    one_error_line(err, shard, "missing")
    index["weight_map"] = {k: f"../{shard}" if v == shard else v for k, v in index["weight_map"].items()}
    index_path.write_text(json.dumps(index))
    code, _, err = run_cli(["convert", tmp_path / "sharded", "-o", tmp_path / "m.safetensors"], capsys)
    assert code == 2
    one_error_line(err, f"../{shard}", "not a file name")
    assert not (tmp_path / "m.safetensors").exists()


# ---------------------------------------------------------------------------------------------- Lightning
def lightning_checkpoint(path, state_dict: dict, **hparams) -> None:
    """What Trainer.save_checkpoint writes for the user's own LightningModule (no swinzoo config inside)."""
    torch.save({"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.6.0", "state_dict": state_dict,
                "loops": {}, "callbacks": {}, "optimizer_states": [], "lr_schedulers": [], "hparams_name": "kwargs",
                "hyper_parameters": {"lr": 1e-3, **hparams}}, path)


@pytest.mark.parametrize("prefix", ["model.", "net.backbone."])
def test_lightning_checkpoint_of_a_module_wrapping_a_timm_swin(prefix, tmp_path, capsys):
    """The one Swin inside is taken (its keys under `prefix`); the module's other state (a loss's class weights)
    is left out, and the report says so."""
    model = timm_model(img_size=128)
    state = {prefix + k: v for k, v in model.state_dict().items()}
    state["criterion.weight"] = torch.ones(5)
    lightning_checkpoint(tmp_path / "epoch=3-step=120.ckpt", state, arch="swin_tiny_patch4_window7_224")
    code, out, err = run_cli(["convert", tmp_path / "epoch=3-step=120.ckpt", "-o", tmp_path / "m.safetensors"], capsys)
    assert code == 0, err
    assert f"under {prefix}" in out and "criterion.weight" in out
    assert_logits_close(logits(swinzoo.load_model(tmp_path / "m.safetensors"), 128), logits(model, 128))


def test_lightning_checkpoint_with_two_swins_names_them_and_the_way_out(tmp_path, capsys):
    student, teacher = timm_model(img_size=128), timm_model(img_size=128, seed=1)
    state = {**{f"student.{k}": v for k, v in student.state_dict().items()},
             **{f"teacher.{k}": v for k, v in teacher.state_dict().items()}}
    lightning_checkpoint(tmp_path / "last.ckpt", state)
    code, _, err = run_cli(["convert", tmp_path / "last.ckpt", "-o", tmp_path / "m.safetensors"], capsys)
    assert code == 2
    one_error_line(err, "2 Swin models", "student.", "teacher.", "torch.save(")
    assert not (tmp_path / "m.safetensors").exists()


def test_lightning_checkpoint_without_a_swin(tmp_path, capsys):
    lightning_checkpoint(tmp_path / "last.ckpt", {"model.fc.weight": torch.zeros(2, 2)})
    code, _, err = run_cli(["convert", tmp_path / "last.ckpt", "-o", tmp_path / "m.safetensors"], capsys)
    assert code == 2
    one_error_line(err, "Lightning checkpoint", "no Swin", "model.fc.weight")


def test_bare_v1_weights_with_a_clamped_last_stage(tmp_path):
    """timm's clean_checkpoint output (a bare state dict), here at 64 px / window 4: the last stage is 2 tokens
    wide, so its bias table is the clamped window's (3x3), which tells the resolution."""
    model = timm_model()
    torch.save(model.state_dict(), tmp_path / "clean.pth")
    ours = swinzoo.load_model(tmp_path / "clean.pth")
    assert (ours.config.img_size, ours.config.window_size) == (64, 4)
    assert_logits_close(logits(ours), logits(model))


def test_trusting_a_checkpoint_does_not_need_the_packages_of_configs_read_as_data(tmp_path, capsys, yacs_name,
                                                                               monkeypatch):
    """--trust-checkpoint on ckpt_epoch_N.pth where yacs is not installed: its config is read as data all the same."""
    src = tmp_path / "ckpt_epoch_29.pth"
    official_training_checkpoint(src, torch.load(FIXTURE, weights_only=True)["model"])
    monkeypatch.delitem(sys.modules, "yacs.config")
    code, _, err = run_cli(["convert", src, "--trust-checkpoint", "-o", tmp_path / "m.safetensors"], capsys)
    assert code == 0, err


def test_trusting_a_checkpoint_whose_classes_are_not_installed(tmp_path, capsys, monkeypatch):
    module = types.ModuleType("mytrainer.config")
    module.Options = type("Options", (), {"__module__": "mytrainer.config"})
    monkeypatch.setitem(sys.modules, "mytrainer", types.ModuleType("mytrainer"))
    monkeypatch.setitem(sys.modules, "mytrainer.config", module)
    src = tmp_path / "ckpt.pth"
    torch.save({"model": torch.load(FIXTURE, weights_only=True)["model"], "options": module.Options()}, src)
    monkeypatch.delitem(sys.modules, "mytrainer.config")
    code, _, err = run_cli(["convert", src, "--trust-checkpoint", "-o", tmp_path / "m.safetensors"], capsys)
    assert code == 2
    one_error_line(err, "mytrainer", "not installed")
