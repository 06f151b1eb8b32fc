"""`SwinClassifier`: a LightningModule around any swinzoo `SwinTransformer`, with the official fine-tuning recipe.

Loss: soft-target cross-entropy after MixUp/CutMix (label smoothing folded into the targets, as the official
Mixup does), else cross-entropy with label smoothing. AdamW over the official weight-decay groups (optionally
with layer-wise lr decay), lr per optimizer step: linear warmup then cosine over the Trainer's run. Validation
and test log torchmetrics micro top-1 / top-5 once per epoch; predict returns logits. Gradient clipping and
precision are Trainer settings (see `trainer_kwargs`). The same module runs in `swinzoo finetune` and in a user's
own Trainer (`SwinClassifier.from_pretrained`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torchmetrics import MeanMetric, Metric, SumMetric
from torchmetrics.classification import MulticlassAccuracy
from torchvision.transforms import v2

from swinzoo.config import SwinConfig
from swinzoo.conversion import target_config
from swinzoo.errors import SwinzooError, python_api
from swinzoo.hardware import auto_precision, trains_on_cuda
from swinzoo.io import atomic_path
from swinzoo.models import SwinTransformer
from swinzoo.preprocess import Preprocess
from swinzoo.sources import read_checkpoint
from swinzoo.train.module_tools import ExampleInput
from swinzoo.train.optim import adamw_warmup_cosine, scaled_lrs
from swinzoo.train.recipes import PLAIN_RECIPE, Recipe, check_task, finetune_recipe, recipe_from_dict, split_recipe
from swinzoo.train.rng import seeded, step_seed
from swinzoo.train.sampling import unpadded
from swinzoo.train.sharded import ShardedClipping, built_ndims
from swinzoo.weight_transfer import match_head_to_classes, transfer


def batch_mixer(recipe: Recipe, num_classes: int):
    """MixUp and/or CutMix (one picked per batch when both are on, the official switch prob 0.5), or None."""
    mixers = []
    if recipe.mixup > 0:
        mixers.append(v2.MixUp(alpha=recipe.mixup, num_classes=num_classes))
    if recipe.cutmix > 0:
        mixers.append(v2.CutMix(alpha=recipe.cutmix, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def soft_target_loss(logits: torch.Tensor, soft: torch.Tensor, smoothing: float) -> torch.Tensor:
    """(B, K) logits and (B, K) mixed one-hot targets -> mean CE against targets smoothed by `smoothing`."""
    k = logits.shape[-1]
    target = soft * (1.0 - smoothing) + smoothing / k
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


class RecipeLrs:
    """The peak, warmup and min lr of a swinzoo LightningModule (`self.recipe`, `self.hparams.lr`): the recipe's,
    which are per 512 images, scaled for the total batch (batch x devices x nodes x accumulation); `lr` given
    replaces the scaled peak rate and the warmup and min rates keep their recipe ratios to it. Without a total
    batch they are scaled for the batch the Trainer runs, read when the fit configures the optimizer."""

    peak_lr = warmup_lr = min_lr = None

    def scale_lrs(self, total_batch: int | None) -> None:
        """Peak, warmup and min lr for `total_batch` images per optimizer step (None: later, from the Trainer,
        unless `lr` is given, where only the recipe's ratios matter)."""
        r, lr = self.recipe, self.hparams.lr
        if total_batch is None and lr is None:
            return
        peak, warm, low = scaled_lrs(r.base_lr, r.warmup_lr, r.min_lr, total_batch or 512)
        if lr is not None:
            peak, warm, low = lr, lr * warm / peak, lr * low / peak
        self.peak_lr, self.warmup_lr, self.min_lr = peak, warm, low

    def fit_lrs(self) -> tuple[float, float, float]:
        """(peak, warmup, min) for `configure_optimizers`, from `hparams` as they are at this fit, not at
        construction: `Tuner.lr_find(update_attr=True)` writes `hparams.lr`, and `Tuner.scale_batch_size` changes
        the loader's batch after its trial fits configured the optimizer."""
        total_batch = self.hparams.total_batch
        if total_batch is None and self.hparams.lr is None:
            total_batch = trainer_total_batch(self.trainer)
        self.scale_lrs(total_batch)
        return self.peak_lr, self.warmup_lr, self.min_lr


class SwinClassifier(ShardedClipping, RecipeLrs, ExampleInput, L.LightningModule):
    """Fine-tunes `SwinTransformer(config)` with `recipe` (a `Recipe.to_dict()`); `total_batch` (batch x devices x
    nodes x accumulation) scales the recipe's lr, which is per 512 images; None: the batch the Trainer runs, read
    from its training loader when the fit starts. `lr` overrides the scaled peak rate (warmup and min rates keep
    their recipe ratios to it). `SwinClassifier.from_pretrained` builds one from released or fine-tuned weights.

    Batches are (images (B, 3, R, R), labels (B,)); `predict_step` also takes bare image batches and returns
    (B, num_classes) logits. The lr schedule spans the Trainer's run (`max_steps` or `max_epochs`); clipping,
    accumulation and precision are Trainer settings (`trainer_kwargs(module.recipe)` gives the recipe's).
    """

    METRICS = ("val/top1", "val/top5", "val/loss", "val/n", "train/loss", "lr")  # what a callback may monitor

    def __init__(self, config: dict, recipe: dict, total_batch: int | None = None, lr: float | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.recipe = recipe_from_dict(recipe, "checkpoint recipe")
        cfg = SwinConfig.from_dict(config)
        self.model = SwinTransformer(cfg)
        if self.recipe.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.param_ndims = built_ndims(self.model)
        self.scale_lrs(total_batch)
        self.mixer = batch_mixer(self.recipe, cfg.num_classes)
        self.step_seed: int | None = None  # what each training step's draws are seeded from (`rng.step_seed`)
        top5 = min(5, cfg.num_classes)
        self.val_top1 = MulticlassAccuracy(cfg.num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(cfg.num_classes, top_k=top5, average="micro")
        self.val_n = SumMetric()  # images validated, over all devices
        self.val_loss = MeanMetric()  # weighted by images, over all devices

    @classmethod
    @python_api()
    def from_pretrained(cls, source: str | os.PathLike, *, num_classes: int | None = None, res: int | None = None,
                        window: int | None = None, recipe: str | dict | Recipe | None = None,
                        total_batch: int | None = None, lr: float | None = None,
                        class_names: list[str] | None = None, trust_checkpoint: bool = False,
                        from_format: str = "auto", arch: str | None = None,
                        ema: bool | None = None) -> SwinClassifier:
        """A SwinClassifier holding `source`'s weights (a zoo name such as `swin_n_64`, a file, a run folder or
        `hf-hub:ORG/NAME`), moved to `num_classes` / `res` / `window` as `swinzoo.create_model(name, pretrained=True,
        num_classes=..., img_size=...)` moves them: a new class count re-initialises the head, V1 bias tables are
        resized, V2 windows recorded; a SimMIM encoder gets a fresh head (give `num_classes`).

        `recipe`: a packaged recipe name (`swinzoo recipes`), a YAML path, a `Recipe` or a mapping (of every key, as
        a run records it; of some keys, e.g. `{"mixup": 0.8}`: set over the default); default: the one `swinzoo
        finetune` would choose for this source and move. Its drop path and test crop go into the model's
        config, as in `swinzoo finetune`. `class_names` names the classes (and sets `num_classes`); a kept head's
        rows are matched to them by name. `total_batch`, `lr`: as in the constructor. `trust_checkpoint`,
        `from_format`, `arch`, `ema`: read `source` as `swinzoo.read_checkpoint` does.

        Returns the module; `module.model` is the moved `SwinTransformer` ((B, 3, res, res) -> (B, num_classes)),
        its `.provenance` naming the source and recipe (what `swinzoo.save_model(module.model, path)` records).
        """
        checkpoint = read_checkpoint(source, trust_checkpoint=trust_checkpoint, from_format=from_format, arch=arch,
                                     ema=ema)
        src = checkpoint.config
        if src.is_backbone:
            raise SwinzooError(f"{source} is a detection backbone (no head or final norm): SwinClassifier fine-tunes a "
                               "classifier; give a classification or SimMIM checkpoint")
        if class_names is not None:
            class_names = [str(name) for name in class_names]
            if num_classes not in (None, len(class_names)):
                raise SwinzooError(f"num_classes={num_classes} but {len(class_names)} class_names; give one of them")
            num_classes = len(class_names)
        named, changes = split_recipe(recipe, None)  # a mapping of some keys: set over the recipe picked
        recipe, res, _ = finetune_recipe(named, changes, src.version, src.img_size, src.num_classes, res,
                                         checkpoint.provenance.get("finetune_recipe"))
        check_task(recipe, "finetune", PLAIN_RECIPE)
        window = window or (recipe.window if recipe.res in (None, res) else None)
        classes = src.num_classes if num_classes is None else num_classes
        if classes < 2:
            asked = f"{source} has {classes} classes" if num_classes is None else f"num_classes={classes}"
            raise SwinzooError(f"{asked}: a classifier trains at least 2 classes; pass num_classes or class_names")
        state_dict, dst, report = finetune_weights(checkpoint.state_dict, src, res, window, recipe, num_classes,
                                                   class_names)
        module = cls(dst.to_dict(), recipe.to_dict(), total_batch, lr)
        module.model.load_state_dict(state_dict, strict=True)
        # what `swinzoo.save_model(module.model, ...)` records, as a `swinzoo finetune` output does
        module.model.provenance = {"source": str(source), "recipe": recipe.to_dict(),
                                   "parent": {k: v for k, v in checkpoint.provenance.items() if k != "parent"},
                                   "transfer": {"from": src.to_dict(), **report.to_dict()}}
        if recipe.finetune_recipe:
            module.model.provenance["finetune_recipe"] = recipe.finetune_recipe
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) -> (B, num_classes) logits."""
        if self._jit_is_scripting:
            return self.traced_forward(x)
        return self.model(x)

    def example_input(self) -> torch.Tensor:
        return self.example_images(self.model)

    def on_fit_start(self) -> None:
        self.run_seed()

    def on_validation_epoch_start(self) -> None:
        fresh_metrics(self)

    def run_seed(self) -> int:
        """What each training step's draws are seeded from: drawn once from the global RNG (the seed given to
        seed_everything picks it) when the fit starts, or at the first training step where a callback trains
        before the module's on_fit_start (Lightning's LearningRateFinder and BatchSizeFinder, `Tuner`)."""
        if self.step_seed is None:
            self.step_seed = int(torch.randint(2**62, ()))
        return self.step_seed

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["step_seed"] = self.step_seed

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # a resume draws each step's MixUp and drop path as the straight run did (absent in older checkpoints)
        self.step_seed = checkpoint.get("step_seed")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        with seeded(step_seed(self, self.run_seed(), batch_idx), self.device):  # see swinzoo.train.rng
            if self.mixer is not None:
                images, soft = self.mixer(images, labels)
                loss = soft_target_loss(self(images), soft, self.recipe.label_smoothing)
            else:
                loss = F.cross_entropy(self(images).float(), labels, label_smoothing=self.recipe.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        self.log("lr", self.optimizers().param_groups[-1]["lr"], prog_bar=False)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self.score(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self.score(batch, batch_idx, "test")

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """(images, labels) or images -> (B, num_classes) logits."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images)

    def score(self, batch, batch_idx: int, stage: str) -> None:
        """Loss, top-1, top-5 and image count of a validation or test batch, logged as `{stage}/...` per epoch (the
        same metric objects: Lightning runs one loop at a time)."""
        images, labels = batch
        logits = self(images).float()
        real = unpadded(self.trainer, batch_idx, labels.numel(), self.device)
        if real is not None:
            logits, labels = logits[real], labels[real]
        # logged on every rank, also one whose batch was only the sampler's padding (fewer images than devices):
        # the epoch's sync waits for every rank's metrics
        n = labels.numel()
        if n:  # torchmetrics' accuracy refuses an empty batch; its states stay zeros here
            self.val_loss.update(F.cross_entropy(logits, labels), n)
            self.val_top1.update(logits, labels)
            self.val_top5.update(logits, labels)
        self.log(f"{stage}/loss", self.val_loss, on_step=False, on_epoch=True)
        self.log(f"{stage}/top1", self.val_top1, on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/top5", self.val_top5, on_step=False, on_epoch=True)
        self.val_n.update(torch.tensor(float(labels.numel()), device=self.device))
        self.log(f"{stage}/n", self.val_n, on_step=False, on_epoch=True)

    @property
    def layer_decay(self) -> float:
        return self.recipe.layer_decay

    def configure_optimizers(self):
        steps = run_steps(self.trainer)
        return adamw_warmup_cosine(self.model, self.recipe, self.fit_lrs(), steps, self.layer_decay, self.param_ndims)


def finetune_weights(state_dict: dict | None, src: SwinConfig, res: int, window: int | None, recipe: Recipe,
                     num_classes: int | None, class_names: list[str] | None = None):
    """(state dict, config, transfer report) of a fine-tune of `src` at `res` / `window` for `num_classes` (None:
    src's) under `recipe`: its drop path and test crop in the config, `state_dict` moved there (None: fresh
    weights, no report), a kept head's rows matched to `class_names` by name."""
    dst = target_config(src, res, window, num_classes).replace(drop_path_rate=recipe.drop_path_rate)
    # the eval preprocessing the run validates with (the recipe's test_crop) travels with the weights
    dst = dst.replace(preprocess=Preprocess.of(dst).with_test_crop(recipe.test_crop).overrides(dst.img_size))
    report = None
    if state_dict is not None:
        state_dict, dst, report = transfer(state_dict, src, dst, head_seed=recipe.seed)
        if class_names is not None and src.num_classes == len(class_names):
            note = match_head_to_classes(state_dict, src.class_names, class_names)
            report.notes.extend([note] if note else [])
    if class_names is not None:
        dst = dst.replace(class_names=class_names)
    return state_dict, dst, report


def fresh_metrics(module: L.LightningModule) -> None:
    """Reset `module`'s torchmetrics, at the start of each validation epoch. A `trainer.validate` / `test` runs in
    inference mode, whose reset leaves the states inference tensors; a fit validates under no_grad, where updating
    those in place fails. Not in on_fit_start: the Tuner's callbacks train and validate before the module's runs."""
    for metric in module.modules():
        if isinstance(metric, Metric):
            metric.reset()


def run_steps(trainer: L.Trainer) -> int:
    """The optimizer steps of the fit, which the warmup + cosine schedule spans; a one-line error when unbounded."""
    steps = trainer.estimated_stepping_batches
    if math.isinf(steps):
        raise SwinzooError("the lr schedule (warmup then cosine) needs the length of the run: give the Trainer "
                           "max_steps or max_epochs")
    return int(steps)


def trainer_total_batch(trainer: L.Trainer) -> int:
    """Images per optimizer step of the fit: the training loader's batch x accumulation x devices x nodes."""
    if trainer.train_dataloader is None:  # as Lightning's estimated_stepping_batches loads it
        trainer.fit_loop.setup_data()
    batch = getattr(trainer.train_dataloader, "batch_size", None)
    if not isinstance(batch, int):
        raise SwinzooError("total_batch not given, and the training loader has no batch_size to scale the lr by (a "
                           "batch sampler, several loaders?): pass total_batch (batch x devices x nodes x "
                           "accumulation) or lr")
    return batch * trainer.accumulate_grad_batches * trainer.world_size


def resolve_precision(recipe: Recipe, accelerator: str = "auto") -> tuple[str, str]:
    """(Lightning precision, why): the recipe's, or for 'auto' fp16 AMP on CUDA, bf16 autocast on a CPU with
    native bf16 matmul (AMX, AVX512-BF16), fp32 on other CPUs (`hardware.auto_precision`)."""
    if recipe.precision != "auto":
        return recipe.precision, "set by the recipe or --precision"
    return auto_precision(trains_on_cuda(accelerator))


def trainer_kwargs(recipe: Recipe, accelerator: str = "auto") -> dict:
    """The Trainer settings a recipe implies: clipping (official 5.0, by norm), accumulation, precision."""
    precision, _ = resolve_precision(recipe, accelerator)
    kw = dict(precision=precision, accumulate_grad_batches=recipe.accumulate_grad_batches)
    if recipe.clip_grad:
        kw.update(gradient_clip_val=recipe.clip_grad, gradient_clip_algorithm="norm")
    return kw


def ema_callback(recipe: Recipe):
    """Lightning's EMA weight averaging when the recipe asks for it (the official recipes do not)."""
    if not recipe.ema_decay:
        return None
    from lightning.pytorch.callbacks import EMAWeightAveraging

    return EMAWeightAveraging(decay=recipe.ema_decay)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that never leaves a half-written checkpoint, and loads safely.

    save: torch.save into a temporary file beside the target, flushed to disk, then renamed onto it: a full disk
    or a kill mid-write leaves the previous `last.ckpt` as it was. load: `weights_only=True` (tensors and plain
    containers only) unless the user trusts the file (`--trust-checkpoint`).
    """

    def __init__(self, trust_checkpoint: bool = False) -> None:
        super().__init__()
        self.trust_checkpoint = trust_checkpoint

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        with atomic_path(Path(path)) as tmp:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict:
        if weights_only is None:
            weights_only = not self.trust_checkpoint
        checkpoint = super().load_checkpoint(path, map_location=map_location or "cpu", weights_only=weights_only)
        return rehome_checkpoint_callbacks(checkpoint, Path(path).parent)


def rehome_checkpoint_callbacks(checkpoint: dict, folder: Path) -> dict:
    """The ModelCheckpoint states of a checkpoint loaded from a run folder that has moved, pointed at `folder`.

    Lightning keeps a ModelCheckpoint's best score only when the folder in the checkpoint is the callback's own,
    so a resumed `--keep best` run in a moved (copied, synced) folder would forget the best validation before
    the move and overwrite best.ckpt with a worse one. Paths to files in the old folder become the same names in
    `folder`."""
    callbacks = checkpoint.get("callbacks") if isinstance(checkpoint, dict) else None
    if not isinstance(callbacks, dict):
        return checkpoint
    here = os.path.realpath(folder)
    for key, state in callbacks.items():
        old = state.get("dirpath") if key.startswith("ModelCheckpoint") and isinstance(state, dict) else None
        if not isinstance(old, str) or old == here:
            continue

        def moved(p, old=old):
            return os.path.join(here, os.path.basename(p)) if isinstance(p, str) and os.path.dirname(p) == old else p

        state["dirpath"] = here
        for name in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if name in state:
                state[name] = moved(state[name])
        if isinstance(state.get("best_k_models"), dict):
            state["best_k_models"] = {moved(k): v for k, v in state["best_k_models"].items()}
    return checkpoint
