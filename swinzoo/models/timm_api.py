"""timm's model API on swinzoo's models, so a training script written against timm's Swin runs on them as it is.

What timm's tools read from a model: `num_classes`, `num_features`, `head_hidden_size`, `get_classifier` /
`reset_classifier`; `no_weight_decay` and `group_matcher` (`timm.optim.create_optimizer_v2`, with `layer_decay`);
`pretrained_cfg` / `default_cfg` (`timm.data.resolve_data_config`); `feature_info`; `forward_intermediates`.
Mixed into `SwinTransformer` (`ClassifierAPI`) and `SwinBackbone` (`BackboneAPI`); every answer derives from the
model's `config`, which travels with it, so `reset_classifier` changes the config too.

One difference of layout shows through: timm merges patches at the START of stage s + 1, swinzoo (as the official
code) at the end of stage s. `group_matcher` puts swinzoo's `layers.{s}.downsample` in the layer timm puts the same
weights in, and `forward_intermediates` returns each stage's blocks' output before the merging, as timm does.
"""

from __future__ import annotations

import copy
from typing import Literal, overload

import torch
from torch import nn

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError
from swinzoo.models import resize
from swinzoo.models.cpu_gemm import Linear
from swinzoo.preprocess import data_config

# timm's `global_pool` names swinzoo's head takes: "avg" (Swin's: the token mean, the only pooling a swinzoo file
# records) and "" (no pooling: `forward_head` gets the (B, H, W, C) tokens, as timm's `prune_intermediate_layers` sets)
POOLS = ("avg", "")
OUTPUT_FORMATS = ("NCHW", "NHWC")


def check_pool(pool: str) -> str:
    """`pool` if it is one of timm's pooling names a swinzoo classifier takes (`POOLS`), else a one-line error."""
    if pool not in POOLS:
        raise SwinzooError(f"global_pool {pool!r}: Swin's head averages the tokens (\"avg\") or, with \"\", "
                           "leaves them unpooled; for other pooling, pool model.forward_features(x), the "
                           "(B, H/32, W/32, C) tokens, yourself")
    return pool


def take_indices(num_stages: int, indices: int | list[int] | tuple[int, ...] | None) -> tuple[list[int], int]:
    """timm's `feature_take_indices`: (stage indices, the largest) for None (all), n (the last n) or a list of
    indices (negative from the end)."""
    if indices is None:
        indices = num_stages
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise SwinzooError(f"last-n indices {indices} out of range: take 1 .. {num_stages} stages")
        taken = list(range(num_stages - indices, num_stages))
    else:
        taken = [num_stages + i if i < 0 else i for i in indices]
        if not taken or not all(0 <= i < num_stages for i in taken):
            raise SwinzooError(f"feature indices {list(indices)} out of range: give stages 0 .. {num_stages - 1} "
                               f"(or -{num_stages} .. -1)")
    return taken, max(taken)


def stage_info(config: SwinConfig, modules: list[str]) -> list[dict]:
    """timm's per-stage feature dicts: channels, stride in pixels, and the module whose output the stage's is."""
    return [{"num_chs": config.embed_dim * 2**i, "reduction": config.patch_size * 2**i, "module": m}
            for i, m in enumerate(modules)]


class FeatureInfo:
    """timm's `FeatureInfo` (what timm's `features_only` models carry): `info` holds every stage, `out_indices`
    the ones the model returns; `channels()`, `reduction()`, `module_name()` answer for those, or for the stage
    index (or list of indices) given."""

    def __init__(self, info: list[dict], out_indices: tuple[int, ...]) -> None:
        self.info = [{**d, "index": i} for i, d in enumerate(info)]
        self.out_indices = tuple(out_indices)

    def from_other(self, out_indices: tuple[int, ...]) -> FeatureInfo:
        return FeatureInfo(copy.deepcopy(self.info), out_indices)

    def get(self, key: str, idx: int | list[int] | None = None):
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys: list[str] | None = None, idx: int | list[int] | None = None):
        one = not isinstance(idx, (tuple, list)) and idx is not None
        picked = [self.info[idx]] if one else [self.info[i] for i in (self.out_indices if idx is None else idx)]
        picked = picked if keys is None else [{k: d[k] for k in keys} for d in picked]
        return picked[0] if one else picked

    def channels(self, idx: int | list[int] | None = None):
        return self.get("num_chs", idx)

    def reduction(self, idx: int | list[int] | None = None):
        return self.get("reduction", idx)

    def module_name(self, idx: int | list[int] | None = None):
        return self.get("module", idx)

    def __getitem__(self, item):
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)


class TimmAPI:
    """What timm reads from classifiers and backbones alike."""

    config: SwinConfig

    @property
    def pretrained_cfg(self) -> dict:
        """timm's pretrained_cfg: this model's eval preprocessing (`swinzoo.data_config`), read by
        `timm.data.resolve_data_config({}, model=model)`, plus the head and stem names. Derived from `config`
        on each read (assign to the config, not to this dict)."""
        cfg = {**data_config(self.config), "num_classes": self.config.num_classes,
               "fixed_input_size": self.config.ape,  # any size runs, except with an absolute position embedding
               "first_conv": "patch_embed.proj"}
        return {**cfg, "classifier": "head"} if not self.config.is_backbone else cfg

    @property
    def default_cfg(self) -> dict:
        return self.pretrained_cfg

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters `no_weight_decay_keywords` names (timm's optimizer factory also leaves 1-D
        tensors and biases undecayed): the official split."""
        keywords = self.no_weight_decay_keywords()
        return {n for n, _ in self.named_parameters() if any(k in n for k in keywords)}


class ClassifierAPI(TimmAPI):
    """timm's classifier API for `SwinTransformer`."""

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def num_features(self) -> int:
        return self.config.num_features

    @property
    def head_hidden_size(self) -> int:
        """Width of what the head reads (the pooled tokens: Swin's head has no hidden layer)."""
        return self.config.num_features

    @property
    def feature_info(self) -> list[dict]:
        """Per stage: channels, stride, and the module whose output the stage's is (its last block: a forward hook
        on it sees the NHWC tokens `forward_intermediates` returns as NCHW)."""
        return stage_info(self.config, [f"layers.{i}.blocks.{d - 1}" for i, d in enumerate(self.config.depths)])

    def get_classifier(self) -> nn.Module:
        return self.head

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def num_layers(self) -> int:
        return self.config.num_stages

    @property
    def in_chans(self) -> int:
        return self.config.in_chans

    @property
    def output_fmt(self) -> str:
        """The layout of `forward_features`' output (timm's attribute): channels last."""
        return "NHWC"

    @property
    def dynamic_img_size(self) -> bool:
        """Whether any input size runs (timm's flag): yes, by masked padding, unless the model has an absolute
        position embedding. (timm's own dynamic mode lets the padding take part in attention: other numbers.)"""
        return not self.config.ape

    @property
    def global_pool(self) -> str:
        """timm's pooling name: "avg", or "" (no pooling: the head, if any, scores each token), as set by
        `reset_classifier(n, "")`, `prune_intermediate_layers` or `create_model(..., global_pool="")`."""
        return self.__dict__.get("_global_pool", "avg")

    @global_pool.setter
    def global_pool(self, pool: str) -> None:
        self.__dict__["_global_pool"] = check_pool(pool)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh head for `num_classes` (0: none, the model returns the (B, num_features) pooled tokens), the
        official init, on the model's device and dtype. `config.num_classes` follows and its class names are
        dropped, so a saved model reloads with this head. `global_pool` (timm's): None keeps it, "avg" or "" (no
        pooling: the head, if any, scores each token; a swinzoo file records only "avg")."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise SwinzooError(f"num_classes must be a whole number of classes (0: no head), got {num_classes!r}")
        if global_pool is not None:
            self.global_pool = global_pool  # checked first: nothing changes when it is refused
        old = self.config.num_classes
        self.config = self.config.replace(num_classes=num_classes, class_names=None)
        ref = self.patch_embed.proj.weight  # the final norm may be pruned away
        head = Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype) if num_classes \
            else nn.Identity()
        if num_classes:
            with torch.no_grad():
                nn.init.trunc_normal_(head.weight, std=0.02)
                nn.init.zeros_(head.bias)
        self.head = head.train(self.training)
        if getattr(self, "provenance", None) is not None:
            self.provenance["head_reset"] = (f"reset_classifier({num_classes}): the {old}-class head replaced by "
                                             f"{'a fresh one' if num_classes else 'none'}")

    def set_input_size(self, img_size: int | tuple[int, int] | None = None, patch_size: int | None = None,
                       window_size: int | tuple | list | None = None, window_ratio: int | tuple | list | None = None,
                       always_partition: bool | None = None) -> None:
        """timm's `set_input_size`: move the model in place to `img_size` (int, or timm's square (h, w)) and
        `window_size` (one for all stages; timm's per-stage forms if all equal) or `window_ratio` (the patch grid
        over it). Without either, a new size keeps the window-to-image ratio (224/w7 -> 384/w12).

        The result is the model `convert --res --window` makes of these weights (`weight_transfer.transfer`, the
        official `load_pretrained`): V1 bias tables resized bicubically, V2 `pretrained_window_sizes` set to the
        old effective windows. timm's in-place move differs: it resizes V1 tables by a geometric-progression linear
        interpolation in float32 (other logits), and keeps a V2 model's constructed pretrained windows (timm's
        zoo models' 0 then normalise the CPB coordinates by the new window: other logits, unless the old windows
        were given). `config` (so `save_model`, `pretrained_cfg`) follows; `provenance` records the move. A resized
        table is a new Parameter: build the optimizer afterwards. A geometry that does not tile, or one a config
        cannot hold (non-square, per-stage windows, another patch size, `always_partition=True`) is refused
        before anything changes."""
        dst = resize.input_size_config(self.config, img_size, patch_size, window_size, window_ratio,
                                       always_partition)
        if dst == self.config:
            return
        record = resize.move_in_place(self, dst)
        provenance = getattr(self, "provenance", None)
        if provenance is not None:
            resize.record_transfer(provenance, record)

    def prune_intermediate_layers(self, indices: int | list[int] | None = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """timm's: drop the stages after the last of `indices` (as `forward_intermediates` takes them), the final
        norm with them or with `prune_norm`, and the head (`reset_classifier(0, "")`: unpooled tokens) with them or
        with `prune_head`. Returns the stage indices taken. The kept stages end at their blocks (timm merges patches
        at the start of a stage); `config` becomes the shorter model's. A model without its final norm or pooling
        cannot be saved to a swinzoo file."""
        taken, last = take_indices(len(self.layers), indices)
        prune_end = last < len(self.layers) - 1
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_end:
            self.layers = self.layers[: last + 1]
            self.layers[-1].downsample = None
            c, kept = self.config, last + 1
            self.config = c.replace(depths=c.depths[:kept], num_heads=c.num_heads[:kept],
                                    pretrained_window_sizes=c.pretrained_window_sizes[:kept])
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return taken

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups (layer-wise lr decay): the stem, then one group per block (`coarse`: per stage),
        the final norm with the last block, the head last; patch merging in the group of the next stage's first
        block, where timm's model holds the same weights."""
        stages = self.config.num_stages
        merges = [(rf"^layers\.{s}\.downsample", (s + 1,) if coarse else (s + 1, 0)) for s in range(stages - 1)]
        blocks = [(r"^layers\.(\d+)", None)] if coarse else [(r"^layers\.(\d+)\.blocks\.(\d+)", None),
                                                             (r"^norm", (99999,))]  # timm's "join the previous"
        return {"stem": r"^absolute_pos_embed|patch_embed", "blocks": merges + blocks}

    @overload
    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = ..., norm: bool = ...,
                              stop_early: bool = ..., output_fmt: str = ..., intermediates_only: Literal[False] = ...
                              ) -> tuple[torch.Tensor, list[torch.Tensor]]: ...
    @overload
    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = ..., norm: bool = ...,
                              stop_early: bool = ..., output_fmt: str = ..., *, intermediates_only: Literal[True]
                              ) -> list[torch.Tensor]: ...
    @overload
    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = ..., norm: bool = ...,
                              stop_early: bool = ..., output_fmt: str = ..., intermediates_only: bool = ...
                              ) -> tuple[torch.Tensor, list[torch.Tensor]] | list[torch.Tensor]: ...
    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False
                              ) -> tuple[torch.Tensor, list[torch.Tensor]] | list[torch.Tensor]:
        """(B, 3, H, W) -> (final, [intermediates]) as timm's Swin returns them.

        Intermediate i is stage i's blocks' output before its patch merging, (B, C_i, H_i, W_i) with
        C_i = embed_dim * 2**i and H_i = ceil(H / (patch_size * 2**i)) (NHWC with `output_fmt="NHWC"`), for each
        stage `indices` takes (None: all; n: the last n; a list, negative from the end). `norm` puts the final
        norm on the last stage's. `final` is `forward_features(x)`, (B, H/32, W/32, C), or with `stop_early` the
        unnormed tokens of the last stage taken. `intermediates_only`: the list alone. Stages whose output is
        taken run the reference blocks; the others may take the inference fast path.
        """
        if output_fmt not in OUTPUT_FORMATS:
            raise SwinzooError(f"output_fmt {output_fmt!r}: give NCHW (timm's default) or NHWC")
        taken, last = take_indices(len(self.layers), indices)
        stages = self.layers[: last + 1] if stop_early else self.layers
        x = self.embed_positions(self.patch_embed(x))
        out = []
        for i, stage in enumerate(stages):
            if i not in taken:
                x = stage(x)  # blocks and merging together, the fast path where it applies
                continue
            x = stage.forward_blocks(x)
            y = self.norm(x) if norm and i == len(self.layers) - 1 else x
            out.append(y.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else y)
            if i < len(stages) - 1:  # a stop_early end keeps the last stage's tokens unmerged, as timm's
                x = stage.merge(x)
        if intermediates_only:
            return out
        return (self.norm(x) if len(stages) == len(self.layers) else x), out


class BackboneAPI(TimmAPI):
    """timm's `features_only` API for `SwinBackbone`."""

    @property
    def feature_info(self) -> FeatureInfo:
        """timm's FeatureInfo over every stage, `out_indices` the returned ones: `channels()`, `reduction()` (the
        NCHW maps' channels and strides), `module_name()` (`norm{i}` for an output, whose forward hook sees it
        NHWC; the last block of other stages)."""
        c = self.config
        modules = [f"norm{i}" if i in c.out_indices else f"layers.{i}.blocks.{d - 1}" for i, d in enumerate(c.depths)]
        return FeatureInfo(stage_info(c, modules), c.out_indices)
