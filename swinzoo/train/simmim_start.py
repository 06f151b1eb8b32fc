"""Where a SimMIM pretraining starts from a source: its encoder (a classifier's, head dropped; a SimMIM
checkpoint's, with its mask token and decoder) moved to the run's resolution and window, the recipe (the source
run's masks when it continues a SimMIM model and no recipe is named), and the provenance the pretrained model
records. One path for `swinzoo pretrain` (`pretrain.plan_run`) and `SimMIMPretrainer.from_pretrained`, as
`module.finetune_weights` is one for `swinzoo finetune` and `SwinClassifier.from_pretrained`."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from swinzoo.config import SwinConfig
from swinzoo.conversion import target_config
from swinzoo.converters.simmim import DECODER_KEYS, ENCODER, MASK_TOKEN, is_simmim
from swinzoo.errors import SwinzooError
from swinzoo.models import MaskGenerator
from swinzoo.run_folder import PRETRAIN_TASK
from swinzoo.sources import read_checkpoint, shipped_provenance, simmim_settings
from swinzoo.train.pretrain_options import DEFAULT_RECIPE, FINETUNE_RECIPES
from swinzoo.train.recipes import Recipe, check_task, load_recipe, split_recipe
from swinzoo.weight_transfer import TransferReport, transfer
from swinzoo.zoo import is_zoo_name, zoo_config


@dataclass
class SimMIMStart:
    """A pretraining's start. `state_dict`: SimMIM keys (`encoder.*`; the mask token and decoder only when the
    source had them), None for fresh weights; `config`: the encoder's at the run's resolution, window and drop
    path; `changes`: the recipe keys set over the recipe named; `inherited`: the mask settings taken from the
    SimMIM source's run; `defaults`: the provenance whose dataset and fine-tune recipe the run falls back on."""

    config: SwinConfig
    state_dict: dict | None
    recipe: Recipe
    provenance: dict
    how: str
    changes: dict
    inherited: dict
    report: TransferReport | None
    defaults: dict


def simmim_start(source, *, scratch: bool = False, from_format: str = "auto", arch: str | None = None,
                 trust_checkpoint: bool = False, ema: bool | None = None, res: int | None = None,
                 window: int | None = None, recipe: str | dict | Recipe | None = None,
                 recipe_overrides: dict | None = None, flags: dict | None = None) -> SimMIMStart:
    """The start of a pretraining of `source` (zoo name, file, folder, hf-hub: reference) at `res` / `window`
    (default: the source's resolution, or the recipe's; the official window for it). `recipe`: a name, YAML path,
    `Recipe` or mapping (of some keys: set over `simmim_pretrain`); `recipe_overrides` and then `flags` (a
    command's --batch-size, --mask-ratio, ...) are set over it. Everything is checked before anything is built."""
    source = os.fspath(source)
    src_cfg, encoder, own, src_prov, how = read_source(source, scratch, from_format, arch, trust_checkpoint, ema)
    named, changes = split_recipe(recipe, recipe_overrides)
    # continuing a SimMIM run: its masks and targets, unless a recipe, a recipe key or a flag says otherwise
    inherited = simmim_settings(src_prov) if own and named is None else {}
    inherited = {k: v for k, v in inherited.items() if k not in changes}
    chosen = load_recipe(named or DEFAULT_RECIPE).replace(**changes)
    overrides = {**inherited, **(flags or {})}
    chosen = chosen.replace(**overrides) if overrides else chosen
    check_task(chosen, "pretrain", DEFAULT_RECIPE)
    # without a resolution the run keeps the source's (as a fine-tune); a recipe's res applies when it sets one
    res = res or chosen.res or src_cfg.img_size
    window = window or (chosen.window if chosen.res in (None, res) else None)
    check_masks(res, src_cfg, chosen)
    dst = target_config(src_cfg, res, window).replace(drop_path_rate=chosen.drop_path_rate)
    report, state_dict = None, None
    if encoder is not None:
        encoder, dst, report = transfer(encoder, src_cfg, dst)
        state_dict = {**{ENCODER + k: v for k, v in encoder.items()}, **own}
    # --scratch: no parent, but the zoo entry's defaults (what its shipped weights name)
    defaults = shipped_provenance(source) if scratch else src_prov
    provenance = {"task": PRETRAIN_TASK, "source": source, "recipe": chosen.to_dict(),
                  # what `swinzoo finetune --from` the pretrained model uses without --recipe
                  "finetune_recipe": finetune_recipe_for(chosen, defaults, dst.version),
                  "simmim": {"start": how, "mask_patch_size": chosen.mask_patch_size,
                             "mask_ratio": chosen.mask_ratio, "norm_targets": chosen.norm_targets},
                  "parent": {k: v for k, v in src_prov.items() if k != "parent"}}
    if changes:  # `recipe` holds them already; this says which keys were not the named recipe's
        provenance["recipe_overrides"] = changes
    if report is not None and report.changed:
        provenance["transfer"] = {"from": src_cfg.to_dict(), **report.to_dict()}
    return SimMIMStart(dst, state_dict, chosen, provenance, how, changes, inherited, report, defaults)


def read_source(source: str, scratch: bool, from_format: str, arch: str | None,
                trust_checkpoint: bool, ema: bool | None = None) -> tuple[SwinConfig, dict | None, dict, dict, str]:
    """(encoder config, encoder weights or None, SimMIM's own weights when the source has them, provenance, how
    the run starts) of `source`."""
    if scratch:
        if not is_zoo_name(source):
            raise SwinzooError(f"--scratch builds fresh weights of a zoo architecture, and {source} is not a "
                               "zoo name: give one (e.g. swin_b_224), or drop --scratch to start from this file")
        cfg = zoo_config(source).replace(num_classes=0, class_names=None)
        return cfg, None, {}, {}, f"fresh weights of the {source} architecture"
    checkpoint = read_checkpoint(source, from_format=from_format, arch=arch, trust_checkpoint=trust_checkpoint,
                                 ema=ema)
    cfg, sd = checkpoint.config, checkpoint.state_dict
    if cfg.is_backbone:
        raise SwinzooError(f"{source} is a detection backbone (no final norm): SimMIM pretrains a classification "
                           "encoder; give a classifier or a SimMIM checkpoint")
    cfg = cfg.replace(num_classes=0, class_names=None)
    if is_simmim(sd):
        encoder = {k[len(ENCODER):]: v for k, v in sd.items() if k.startswith(ENCODER) and k != MASK_TOKEN}
        own = {k: sd[k] for k in (MASK_TOKEN, *DECODER_KEYS)}
        return cfg, encoder, own, dict(checkpoint.provenance), "a SimMIM checkpoint: encoder, mask token and decoder"
    dropped = [k for k in sd if k.startswith("head.")]
    encoder = {k: v for k, v in sd.items() if k not in dropped}
    how = "the source's encoder" + (" (its head dropped)" if dropped else "") + ", a fresh mask token and decoder"
    return cfg, encoder, {}, dict(checkpoint.provenance), how


def check_masks(res: int, cfg: SwinConfig, recipe: Recipe) -> None:
    """The mask and the decoder fit the resolution, before anything is written (else the first step fails)."""
    try:
        MaskGenerator(res, recipe.mask_patch_size, cfg.patch_size, recipe.mask_ratio)
    except SwinzooError as e:
        raise SwinzooError(f"--res {res}, --mask-patch-size {recipe.mask_patch_size}: {e}") from None
    stride = cfg.patch_size * 2 ** (cfg.num_stages - 1)
    if res % stride:
        fit = math.lcm(stride, recipe.mask_patch_size)
        raise SwinzooError(f"--res {res}: the SimMIM decoder rebuilds images whose side is a multiple of the encoder "
                           f"stride ({stride} px); use e.g. --res {max(fit, res // fit * fit)}")


def finetune_recipe_for(recipe: Recipe, source_provenance: dict, version: int) -> str:
    """What `finetune --from OUT` uses without --recipe: the pretraining recipe's choice, else the one the source
    names (swinzoo's nano models: nano_finetune; for --scratch, the shipped weights'), else the official SimMIM
    fine-tune of the version (Swin-B / SwinV2-B at 224 px on ImageNet)."""
    return recipe.finetune_recipe or source_provenance.get("finetune_recipe") or FINETUNE_RECIPES[version]


def load_weights(model, state_dict: dict) -> None:
    """The start's weights into a `SimMIM`: all of them, or all but the fresh mask token and decoder."""
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    fresh = {MASK_TOKEN, *DECODER_KEYS}
    if unexpected or set(missing) - fresh or (missing and set(missing) != fresh):
        raise SwinzooError(f"the source's weights do not fit the SimMIM model (missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]}); report it with the source")
