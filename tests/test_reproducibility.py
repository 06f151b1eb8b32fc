"""A run is a function of its command: the same seed gives the same weights bit for bit, whatever the loader's
worker count, and a run killed and resumed ends with the weights of the run that was never stopped (within an
epoch and at an epoch's end), with every random part of the recipe on. Another seed gives other weights."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import swinzoo
from tests.test_finetune import image_folder
from tests.test_resume import RUN, CrashAt, step_of, tiny_source


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_source(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return image_folder(tmp_path_factory.mktemp("data"))  # 12 training images: 3 steps an epoch at batch 4

# every random part of a fine-tune: crop, flip, RandAugment, erasing, MixUp/CutMix, drop path
RANDOM = dict(mixup=0.8, cutmix=1.0, rand_augment=9, random_erasing=0.5, hflip=0.5, drop_path_rate=0.2,
              crop_scale=[0.3, 1.0])


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model.safetensors")


def same_run(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} of {len(wa)} tensors differ, e.g. {differ[:3]}"
    ma, mb = (json.loads((out / "metrics.json").read_text()) for out in (a, b))
    ma.pop("wall_time_s", None), mb.pop("wall_time_s", None)  # a pretraining's duration: the one figure measured
    assert ma == mb


def finetune(tiny, data, out: Path, **kw):
    run = {**RUN, "recipe_overrides": RANDOM, "max_steps": 6, "keep": "last", **kw}  # not a best of the first part
    return swinzoo.finetune(str(tiny), data=str(data), out=str(out), **run)


@pytest.mark.parametrize("crash, every, keep", [(5, 2, "last"), (4, None, "last"), (4, 3, "best")],
                         ids=["within-an-epoch", "at-an-epoch-end", "ckpt-every-at-an-epoch-end"])
def test_a_resumed_fine_tune_ends_with_the_straight_runs_weights(tiny, data, tmp_path, crash, every, keep):
    """3 steps an epoch; killed after the checkpoint at step 4 (one batch into the second epoch) or at the first
    epoch's end. Crops, MixUp and drop path drew from the global RNG, which a resume does not restore (and the
    loader prefetches a batch past the checkpoint): the resumed run trained on other augmentations. From the
    epoch's end under --max-steps it also read the third epoch's order for the second. And --ckpt-every writing
    last.ckpt before the epoch's validation at the same step, the resume forgot that validation's best score."""
    finetune(tiny, data, tmp_path / "straight", keep=keep)
    with pytest.raises(RuntimeError, match="crash"):
        finetune(tiny, data, tmp_path / "split", ckpt_every=every, keep=keep,
                 trainer={**RUN["trainer"], "callbacks": [CrashAt(crash)]})
    assert step_of(tmp_path / "split/last.ckpt") == crash - 1
    swinzoo.finetune(resume=str(tmp_path / "split"), trainer=RUN["trainer"])
    same_run(tmp_path / "straight", tmp_path / "split")


def test_the_loaders_worker_count_does_not_change_the_weights(tiny, data, tmp_path):
    """Each image's augmentation is drawn from (seed, epoch, image), not from whichever process loads it."""
    finetune(tiny, data, tmp_path / "w0", max_steps=3)
    finetune(tiny, data, tmp_path / "w2", max_steps=3, num_workers=2)
    same_run(tmp_path / "w0", tmp_path / "w2")


def test_the_seed_applies_and_is_recorded(tiny, data, tmp_path):
    finetune(tiny, data, tmp_path / "a", max_steps=3)
    finetune(tiny, data, tmp_path / "b", max_steps=3)
    finetune(tiny, data, tmp_path / "c", max_steps=3, seed=1)
    same_run(tmp_path / "a", tmp_path / "b")
    wa, wc = weights(tmp_path / "a"), weights(tmp_path / "c")
    assert not any(torch.equal(wa[k], wc[k]) for k in wa if k.startswith("layers."))
    run = json.loads((tmp_path / "c/run.json").read_text())
    assert run["recipe"]["seed"] == 1
    provenance = swinzoo.read_checkpoint(str(tmp_path / "c/model.safetensors")).provenance
    assert provenance["recipe"]["seed"] == 1


def test_a_resumed_pretraining_ends_with_the_straight_runs_weights(data, tmp_path):
    """SimMIM's masks were seeded by step already; its crops and flips were not."""
    run = dict(data=str(data), max_steps=5, batch_size=4, num_workers=0, trainer={"limit_val_batches": 1})
    swinzoo.pretrain("swin_n_64", out=str(tmp_path / "straight"), **run)
    with pytest.raises(RuntimeError, match="crash"):
        swinzoo.pretrain("swin_n_64", out=str(tmp_path / "split"), ckpt_every=2,
                         **{**run, "trainer": {**run["trainer"], "callbacks": [CrashAt(3)]}})
    swinzoo.pretrain(resume=str(tmp_path / "split"), trainer=run["trainer"])
    same_run(tmp_path / "straight", tmp_path / "split")
