"""SimMIM masked-image pretraining for Swin V1 and V2, with the numerics of the official `models/simmim.py`.

The encoder is the classifier (`SwinTransformer`, no head) plus a learnable mask token that replaces the patch
tokens of masked patches right after the patch embedding's norm, before the absolute position embedding. A
1x1 convolution and a PixelShuffle turn the last stage's tokens back into pixels; the loss is the L1 error on
masked pixels only. Parameter names are the official ones (`encoder.*`, `encoder.mask_token`, `decoder.0.*`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError
from swinzoo.models.swin import SwinTransformer

NORM_TARGET_KERNEL = 47  # official MODEL.SIMMIM.NORM_TARGET.PATCH_SIZE


class SimMIMEncoder(SwinTransformer):
    """The classifier without a head plus the mask token: the official `SwinTransformerForSimMIM` /
    `SwinTransformerV2ForSimMIM`. As a plain `SwinTransformer` (no mask) it returns pooled features."""

    def __init__(self, config: SwinConfig) -> None:
        if config.num_classes != 0:
            raise SwinzooError("a SimMIM encoder has no head: build it from config.replace(num_classes=0)")
        super().__init__(config)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward_masked(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images, (B, H/p, W/p) mask of 0/1 (1 = masked) -> (B, H/32, W/32, num_features)."""
        tokens = self.patch_embed(x)
        w = mask.unsqueeze(-1).type_as(tokens)
        return self.forward_tokens(tokens * (1.0 - w) + self.mask_token * w)


class SimMIM(nn.Module):
    """(B, 3, H, W) images and a (B, H/4, W/4) mask (1 = masked patch) -> (loss, (B, 3, H, W) reconstruction).

    H and W must be multiples of the encoder stride (32), and need not be equal: the official code assumes a
    square token grid, here the real grid is used. `norm_targets` compares the reconstruction with images
    normalised per pixel over a `norm_target_kernel` neighbourhood (official `NORM_TARGET`, on for SwinV2-B).
    `mask_patch_size` and `mask_ratio` are what `mask_generator()` draws masks with. `config` is the encoder's.
    """

    def __init__(self, config: SwinConfig, *, norm_targets: bool = False, norm_target_kernel: int = NORM_TARGET_KERNEL,
                 mask_patch_size: int = 32, mask_ratio: float = 0.6) -> None:
        super().__init__()
        if config.is_backbone:
            raise SwinzooError("SimMIM needs a classifier config (a detection backbone has no final norm): drop "
                               "out_indices")
        if norm_target_kernel < 1 or norm_target_kernel % 2 == 0:
            raise SwinzooError(f"norm_target_kernel must be a positive odd number (official 47), got "
                               f"{norm_target_kernel}")
        MaskGenerator(config.img_size, mask_patch_size, config.patch_size, mask_ratio)  # fail now, not at the 1st draw
        self.config = config = config.replace(num_classes=0, class_names=None)
        self.encoder = SimMIMEncoder(config)
        # the official code hard-codes 32, which is patch 4 x 2^3 merges: the stride of every released Swin
        self.encoder_stride = config.patch_size * 2 ** (config.num_stages - 1)
        # official: 3 output colours hard-coded; in_chans is 3 for every Swin, and other counts then still work
        self.decoder = nn.Sequential(
            nn.Conv2d(config.num_features, self.encoder_stride**2 * config.in_chans, kernel_size=1),
            nn.PixelShuffle(self.encoder_stride),
        )
        self.norm_targets = norm_targets
        self.norm_target_kernel = norm_target_kernel
        self.mask_patch_size = mask_patch_size
        self.mask_ratio = mask_ratio

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W), (B, H/p, W/p) -> (scalar loss, (B, C, H, W) reconstruction)."""
        self.check_inputs(images, mask)
        # (B, num_features, H/32, W/32), made contiguous: a channels-last input gives the decoder's weight gradient
        # strides that DDP's gradient buckets do not share (a warning and a copy every step)
        z = self.encoder.forward_masked(images, mask).permute(0, 3, 1, 2).contiguous()
        reconstruction = self.decoder(z)
        p = self.config.patch_size
        pixel_mask = mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1).contiguous()
        target = normalized_targets(images, self.norm_target_kernel) if self.norm_targets else images
        l1 = F.l1_loss(target, reconstruction, reduction="none")
        # the official reduction, dtype promotion included: the mean absolute error per masked pixel and channel;
        # summed in fp32 at least (autocast runs l1_loss in fp32 in the official AMP recipe; in pure fp16 the sum
        # of a batch's masked pixels passes 65504)
        l1 = l1.to(torch.promote_types(l1.dtype, torch.float32))
        loss = (l1 * pixel_mask).sum() / (pixel_mask.sum() + 1e-5) / self.config.in_chans
        return loss, reconstruction

    def check_inputs(self, images: torch.Tensor, mask: torch.Tensor) -> None:
        """One-line errors for images the decoder cannot rebuild and masks that do not fit them."""
        c, s, p = self.config.in_chans, self.encoder_stride, self.config.patch_size
        if images.ndim != 4 or images.shape[1] != c:
            raise SwinzooError(f"SimMIM takes images of shape (B, {c}, H, W), got {tuple(images.shape)}")
        b, _, h, w = images.shape
        if h % s or w % s:
            raise SwinzooError(f"SimMIM rebuilds images whose sides are multiples of its encoder stride {s} px, got "
                               f"{h}x{w}: crop or resize them (e.g. to {max(s, h // s * s)}x{max(s, w // s * s)})")
        if tuple(mask.shape) != (b, h // p, w // p):
            raise SwinzooError(f"mask of shape {tuple(mask.shape)} does not match images of {h}x{w} px: expected "
                               f"({b}, {h // p}, {w // p}), one entry per {p}x{p} patch, 1 = masked")

    def mask_generator(self, input_size: int | tuple[int, int] | None = None, seed: int | None = None) -> MaskGenerator:
        """A `MaskGenerator` for this model's patch size, mask patch and ratio (input: `config.img_size`)."""
        return MaskGenerator(input_size or self.config.img_size, self.mask_patch_size, self.config.patch_size,
                             self.mask_ratio, seed=seed)

    def set_fast_path(self, enable: bool = True) -> None:
        self.encoder.set_fast_path(enable)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.encoder.set_grad_checkpointing(enable)

    def no_weight_decay_keywords(self) -> set[str]:
        """The official `SimMIM.no_weight_decay(_keywords)`: the encoder's names and the mask token, each prefixed
        with `encoder.`. Matched as substrings (`optim.is_no_decay`, as the official `get_pretrain_param_groups`),
        `encoder.relative_position_bias_table`, `encoder.cpb_mlp` and `encoder.logit_scale` are in no parameter's
        name, so the official pretraining decays those tensors; swinzoo keeps its numbers."""
        return {"encoder." + k for k in self.encoder.no_weight_decay_keywords() | {"mask_token"}}


def local_stats(images: torch.Tensor, kernel: int = NORM_TARGET_KERNEL) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> mean and standard deviation (+ eps 1e-6 under the root) of each pixel's kernel x kernel
    neighbourhood, over the pixels that lie inside the image, variance unbiased (official `norm_targets`)."""
    pad = kernel // 2
    mean = F.avg_pool2d(images, kernel, stride=1, padding=pad, count_include_pad=False)
    mean_sq = F.avg_pool2d(images**2, kernel, stride=1, padding=pad, count_include_pad=False)
    # pixels inside each window: the pool of ones with the zero padding counted, times the window size
    count = F.avg_pool2d(torch.ones_like(images), kernel, stride=1, padding=pad, count_include_pad=True) * kernel**2
    var = ((mean_sq - mean**2) * (count / (count - 1))).clamp(min=0.0)
    return mean, (var + 1e-6) ** 0.5


def normalized_targets(images: torch.Tensor, kernel: int = NORM_TARGET_KERNEL) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): each pixel standardised by its neighbourhood's `local_stats`."""
    mean, std = local_stats(images, kernel)
    return (images - mean) / std


class MaskGenerator:
    """Random SimMIM masks: () -> (H/p, W/p) int64, or (batch_size,) -> (B, H/p, W/p); 1 = masked patch.

    The official algorithm: the input is cut into mask_patch x mask_patch units, ceil(units * mask_ratio) of
    them are masked by a random permutation, and each unit covers (mask_patch / model_patch)^2 model patches.
    The official draws from numpy's global RNG; here a `torch.Generator` seeded with `seed` (or torch's global
    RNG when None) draws, so masks are distributed as the official ones but are not bit-identical to its draws.
    """

    def __init__(self, input_size: int | tuple[int, int] = 192, mask_patch_size: int = 32, model_patch_size: int = 4,
                 mask_ratio: float = 0.6, seed: int | None = None) -> None:
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if not 0.0 <= mask_ratio <= 1.0:
            raise SwinzooError(f"mask_ratio must lie in [0, 1] (official 0.6), got {mask_ratio}")
        if mask_patch_size < 1 or model_patch_size < 1 or mask_patch_size % model_patch_size:
            nearest = max(1, mask_patch_size // max(1, model_patch_size)) * model_patch_size
            raise SwinzooError(f"mask patch {mask_patch_size} is not a multiple of the model patch {model_patch_size}: "
                               f"use e.g. mask_patch_size={nearest}")
        if min(h, w) < mask_patch_size:
            raise SwinzooError(f"images of {h}x{w} px are smaller than one mask patch ({mask_patch_size} px): use "
                               "larger images or a smaller mask_patch_size")
        if h % mask_patch_size or w % mask_patch_size:
            raise SwinzooError(f"mask patch {mask_patch_size} does not divide the input {h}x{w} px: use an input "
                               f"that is a multiple of {mask_patch_size} px per side, or a mask patch that divides it")
        self.rows, self.cols = h // mask_patch_size, w // mask_patch_size
        self.scale = mask_patch_size // model_patch_size
        self.count = math.ceil(self.rows * self.cols * mask_ratio)
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __call__(self, batch_size: int | None = None) -> torch.Tensor:
        if batch_size is not None:
            return torch.stack([self() for _ in range(batch_size)])
        units = self.rows * self.cols
        mask = torch.zeros(units, dtype=torch.int64)
        mask[torch.randperm(units, generator=self.generator)[: self.count]] = 1
        grid = mask.view(self.rows, self.cols)
        return grid.repeat_interleave(self.scale, 0).repeat_interleave(self.scale, 1)
