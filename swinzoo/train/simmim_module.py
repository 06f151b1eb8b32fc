"""`SimMIMPretrainer`: a LightningModule around `models.simmim.SimMIM`, with the official pretraining recipe.

Each training batch gets one random mask per image from the official `MaskGenerator`, drawn in the training step
from a generator seeded by (run seed, rank, global step, micro-batch): a run, its resume and a rerun with the same
--seed draw the same masks, and DDP ranks draw different ones (the official seeds numpy per rank). The loss is
SimMIM's own (L1 on the masked pixels). AdamW over the official pretraining groups (no weight decay on 1-D
tensors, biases, `mask_token` and `absolute_pos_embed`; no layer decay), lr per optimizer step: linear
warmup then cosine. Gradient clipping and precision are Trainer settings (`train.module.trainer_kwargs`).

Validation uses fixed masks (one per image, seeded by the run seed and the image's place in the set: the same
every validation, at any batch size or device count), logs the masked-pixel L1 as `val/loss` (without the copies
DDP pads the set with), and draws the first batch (up to 8 images) to OUT/reconstructions/ on global rank 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from torchmetrics import MeanMetric, SumMetric

from swinzoo.config import SwinConfig
from swinzoo.errors import python_api
from swinzoo.models import MaskGenerator, SimMIM
from swinzoo.train.module import RecipeLrs, fresh_metrics, run_steps
from swinzoo.train.module_tools import ExampleInput
from swinzoo.train.optim import adamw_warmup_cosine
from swinzoo.train.recipes import Recipe, recipe_from_dict
from swinzoo.train.recon_grid import write_reconstructions
from swinzoo.train.rng import TRAIN_MASK_STREAM, VAL_MASK_STREAM, seeded, step_seed, stream_seed
from swinzoo.train.sampling import evaluated_loader, unpadded, validation_indices
from swinzoo.train.sharded import ShardedClipping, built_ndims
from swinzoo.train.simmim_start import load_weights, simmim_start

SHOWN = 8  # validation images drawn in the reconstruction grid


class SimMIMPretrainer(ShardedClipping, RecipeLrs, ExampleInput, L.LightningModule):
    """Pretrains `SimMIM(config)` (the encoder's config) with `recipe` (a `Recipe.to_dict()`) and its mask
    settings; `total_batch` (batch x devices x nodes x accumulation) scales the recipe's lr, which is per 512
    images; None: the batch the Trainer runs, read from its training loader when the fit starts. `lr` overrides
    the scaled peak rate (warmup and min keep their ratios to it). `SimMIMPretrainer.from_pretrained` builds one
    from a SimMIM model (continued) or a classifier's encoder.

    Batches are images (B, 3, R, R); the module draws the masks. The lr schedule spans the Trainer's run;
    clipping, accumulation and precision are Trainer settings (`trainer_kwargs(module.recipe)` gives the recipe's).
    `trainer.test` scores as validation does (`test/loss`, `test/n`); `trainer.predict` returns per batch a dict of
    the batch's "loss", the "reconstruction" (B, 3, R, R) and the "mask" (B, R/4, R/4), 1 = masked, int64: each
    image's mask is validation's for its place in the set.
    """

    METRICS = ("val/loss", "val/n", "train/loss", "lr")  # what a callback may monitor
    layer_decay = 1.0  # the official get_pretrain_param_groups: decay / no decay only, every layer in one

    def __init__(self, config: dict, recipe: dict, total_batch: int | None = None, lr: float | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.recipe = r = recipe_from_dict(recipe, "checkpoint recipe")
        cfg = SwinConfig.from_dict(config)
        self.model = SimMIM(cfg, norm_targets=r.norm_targets, mask_patch_size=r.mask_patch_size,
                            mask_ratio=r.mask_ratio)
        if r.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.param_ndims = built_ndims(self.model)
        self.scale_lrs(total_batch)
        self.val_loss = MeanMetric()  # weighted by images: every image has the same number of masked pixels
        self.val_n = SumMetric()
        self.shown: tuple[torch.Tensor, ...] | None = None  # the first validation batch, for the picture

    @classmethod
    @python_api()
    def from_pretrained(cls, source: str | os.PathLike, *, res: int | None = None, window: int | None = None,
                        recipe: str | dict | Recipe | None = None, total_batch: int | None = None,
                        lr: float | None = None, trust_checkpoint: bool = False, from_format: str = "auto",
                        arch: str | None = None, ema: bool | None = None) -> SimMIMPretrainer:
        """A SimMIMPretrainer starting where `swinzoo pretrain --from source` starts: a SimMIM model (e.g.
        `swin_n_64.simmim`, a `swinzoo pretrain` output, an official pretraining .pth) continues with its encoder,
        mask token and decoder; a classifier (a zoo name, file, run folder or `hf-hub:ORG/NAME`) gives its encoder,
        head dropped, and the mask token and decoder start fresh (from the global RNG: seed it first). The encoder
        is moved to `res` / `window` as `create_model(..., pretrained=True, img_size=...)` moves weights.

        `recipe`: a recipe name, YAML path, `Recipe` or mapping (a mapping of some keys, e.g. `{"mask_ratio":
        0.5}`, is set over the default); default `simmim_pretrain` with, from a SimMIM model, the mask settings its
        run recorded. `total_batch`, `lr`: as in the constructor. `trust_checkpoint`, `from_format`, `arch`, `ema`:
        read `source` as `swinzoo.read_checkpoint` does.

        Returns the module; `module.model` is the `SimMIM` ((B, 3, R, R) images, (B, R/4, R/4) mask -> (loss,
        reconstruction)), its `.provenance` what a `swinzoo pretrain` output records but the data
        (`swinzoo.save_model(module.model, path)` writes it; `swinzoo.load_simmim(path)` reads it back)."""
        start = simmim_start(source, res=res, window=window, recipe=recipe, trust_checkpoint=trust_checkpoint,
                             from_format=from_format, arch=arch, ema=ema)
        module = cls(start.config.to_dict(), start.recipe.to_dict(), total_batch, lr)
        load_weights(module.model, start.state_dict)
        module.model.provenance = start.provenance
        return module

    def masks(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        """One official random mask per image, (B, H/p, W/p) int64 on the images' device, drawn from `seed`."""
        h, w = images.shape[-2:]
        m = self.model
        generator = MaskGenerator((h, w), m.mask_patch_size, m.config.patch_size, m.mask_ratio, seed=seed)
        return generator(images.shape[0]).to(images.device)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, R, R) images, (B, R/p, R/p) mask -> (loss, reconstruction)."""
        if self._jit_is_scripting:
            return self.traced_forward(images, mask)
        return self.model(images, mask)

    def example_input(self) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.example_images(self.model)
        return images, self.masks(images, self.recipe.seed)

    def on_validation_epoch_start(self) -> None:
        fresh_metrics(self)

    def on_test_epoch_start(self) -> None:
        fresh_metrics(self)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        seed = step_seed(self, self.recipe.seed, batch_idx, TRAIN_MASK_STREAM)  # accumulated batches differ too
        with seeded(step_seed(self, self.recipe.seed, batch_idx), self.device):  # drop path: see swinzoo.train.rng
            loss, _ = self(batch, self.masks(batch, seed))
        self.log("train/loss", loss, prog_bar=True)
        self.log("lr", self.optimizers().param_groups[-1]["lr"], prog_bar=False)
        return loss

    def fixed_masks(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """One mask per image of a validation, test or predict batch, drawn from its place in the set: the same at
        any batch size or device count."""
        length = len(evaluated_loader(self.trainer).dataset)
        indices = validation_indices(self.trainer, batch_idx, batch.shape[0], torch.device("cpu"))
        return torch.cat([self.masks(batch[:1], stream_seed(self.recipe.seed, VAL_MASK_STREAM, int(i) % length))
                          for i in indices])

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.score(batch, batch_idx, "val")

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.score(batch, batch_idx, "test")

    def predict_step(self, batch: torch.Tensor, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """images (B, 3, R, R), or (images, ...) -> {"loss": the batch's masked-pixel L1, "reconstruction": (B, 3,
        R, R) (of the normalised targets with `norm_targets`), "mask": (B, R/4, R/4), 1 = masked}."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        mask = self.fixed_masks(images, batch_idx)
        loss, reconstruction = self(images, mask)
        return {"loss": loss, "reconstruction": reconstruction, "mask": mask}

    def score(self, batch: torch.Tensor, batch_idx: int, stage: str) -> None:
        """The masked-pixel L1 and image count of a validation or test batch, logged as `{stage}/...` per epoch;
        validation's first batch is kept for the picture."""
        mask = self.fixed_masks(batch, batch_idx)
        real = unpadded(self.trainer, batch_idx, batch.shape[0], self.device)
        if real is not None:
            batch, mask = batch[real], mask[real]
        n = batch.shape[0]
        if n:
            loss, reconstruction = self(batch, mask)
        else:  # the sampler's padding only (fewer images than devices): logged all the same, every rank syncs
            loss, reconstruction = batch.new_zeros(()), batch
        self.val_loss.update(loss.detach().float(), n)
        self.val_n.update(torch.tensor(float(n), device=self.device))
        self.log(f"{stage}/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/n", self.val_n, on_step=False, on_epoch=True)
        if stage == "val" and batch_idx == 0 and self.trainer.is_global_zero and n:
            self.shown = tuple(t[:SHOWN].detach().float().cpu() for t in (batch, mask, reconstruction))

    def on_validation_end(self) -> None:
        """After the epoch's metrics are reduced over ranks: rank 0 draws its first batch (no collective here)."""
        shown, self.shown = self.shown, None
        if shown is None or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        loss = self.trainer.callback_metrics.get("val/loss")
        r, step = self.recipe, self.global_step
        title = (f"step {step}" + (f"   val/loss {float(loss):.4f}" if loss is not None else "")
                 + f"   mask {r.mask_patch_size} px, ratio {r.mask_ratio:g}"
                 + ("   (normalised targets)" if r.norm_targets else ""))
        kernel = self.model.norm_target_kernel if r.norm_targets else None
        write_reconstructions(Path(self.trainer.default_root_dir) / "reconstructions", step, *shown,
                              self.model.config.patch_size, title, kernel)

    def configure_optimizers(self):
        steps = run_steps(self.trainer)
        return adamw_warmup_cosine(self.model, self.recipe, self.fit_lrs(), steps, self.layer_decay, self.param_ndims)
