"""One SimMIM pretraining run: plan (source -> encoder at the target resolution, recipe, images) -> Lightning fit ->
OUT/model.safetensors (the whole SimMIM model in swinzoo's format: `load_simmim` continues it, `swinzoo finetune`
starts a classifier from its encoder) and OUT/metrics.json.

The guarantees of a fine-tune (`swinzoo.train.run`) hold: every input is checked before OUT is created (values,
source, mask geometry, recipe, every image); OUT/run.json is the plan `--resume OUT` rebuilds the run from, with
OUT/last.ckpt; checkpoints and outputs are written atomically; a run that fails before its first checkpoint
removes what it created (`RunFolder`). Trainer, callbacks, loggers and the progress display are the fine-tune's
(`build_trainer`), so DDP / FSDP and `--trainer.*` work the same way.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError, python_api
from swinzoo.run_folder import CURVES_FILE, PRETRAIN_TASK, RUN_FILE
from swinzoo.train.checks import (
    check_run_values,
    check_whole,
    value_label,
    weights_to_save,
    with_checked_run_options,
)
from swinzoo.train.data import BUILTIN, run_data, run_source
from swinzoo.train.folder import RunLock, default_out, is_rank_zero, planned_out, run_in_folder, write_results
from swinzoo.train.hf_data import DataOptions
from swinzoo.train.options import (
    DATA_OPTION_KEYS,
    OUT_ENV,
    Plan,
    is_plain,
    options_record,
    print_plan,
    replay_header,
)
from swinzoo.train.pretrain_options import (
    PretrainOptions,
    PretrainResult,
)
from swinzoo.train.recipes import (
    Recipe,
    changes_text,
    recipe_from_dict,
)
from swinzoo.train.resume import check_optimizer_groups, resume_plan
from swinzoo.train.rng import caller_state_kept
from swinzoo.train.sharded import model_weights
from swinzoo.train.simmim_data import SimMIMDataModule
from swinzoo.train.simmim_module import SimMIMPretrainer
from swinzoo.train.simmim_start import load_weights, simmim_start
from swinzoo.train.trainer import start_trainer, third_party_quiet, validate_after_fit
from swinzoo.train.trainer_options import check_step_bound


@python_api(PretrainOptions)
def pretrain(source: str | None = None, *, console: Console | None = None, **options: Any) -> PretrainResult | None:
    """SimMIM-pretrain `source` (a zoo name, classification file, folder or hf-hub: reference: its encoder, with a
    fresh mask token and decoder; or a SimMIM checkpoint: continued) on the images of `data` with Lightning.

    The keyword arguments are the fields of `PretrainOptions`, the CLI's flags by their config names:
    - `scratch` (fresh weights of a zoo name's architecture), `res` (default: the source's), `window` (default:
      the official choice for `res`); `from_format`, `arch`, `trust_checkpoint`: how to read the source.
    - `data`: a folder of images (with train/ and val/, or without: a fixed validation set is held out),
      `hf:NAME[:CONFIG]` (with `train_split`, `val_split`, ...) or `shapes` (built in); labels are never used.
    - `recipe` (default `simmim_pretrain`): name, YAML path or mapping (of some keys: set over the default, as
      `recipe_overrides` sets its keys over the recipe); `epochs`, `max_steps`, `batch_size`,
      `precision`, `seed`, `mask_ratio`, `mask_patch_size`, `norm_targets` override it, `lr` replaces the scaled
      peak lr.
    - `devices`, `accelerator`, `strategy`, `num_nodes`, `trainer` (any other `lightning.Trainer` kwargs), `logger`.
    - `out` (default runs/SRC-simmim-RES), `resume` (continue the run in that folder), `ckpt_every`, `save_dtype`.

    Returns the output folder and the final validation metrics (None on processes other than global rank zero).
    """
    return run_pretrain(options_record(PretrainOptions, source, options, "pretrain"), console or Console())


def run_pretrain(args: PretrainOptions, console) -> PretrainResult | None:
    """`pretrain` on a `PretrainOptions` record (what the CLI calls)."""
    with caller_state_kept((OUT_ENV,)), third_party_quiet(), RunLock.held() as lock:
        return _run(args, console if is_rank_zero() else Console(quiet=True), lock)  # DDP workers: the plan once


def _run(args: PretrainOptions, console, lock: RunLock) -> PretrainResult | None:
    start = time.monotonic()
    args = validate(args)
    if args.resume:
        plan, ckpt, point = resume_plan(args, "pretrain", check_pretrain_run, lock)
        state_dict, config_text, step = None, "", point.step
        recipe = recipe_from_dict(plan.recipe, str(Path(plan.out) / RUN_FILE))
        dm = data_module(plan.data, plan.data_options, plan.config["img_size"], recipe, plan.num_workers, console)
        dm.check()
    else:
        if not args.source:
            raise SwinzooError("--from SRC is required (a zoo name such as swin_n_64, a model file, or a SimMIM "
                               "checkpoint)")
        plan, state_dict, dm, config_text = plan_run(args, console)
        recipe, ckpt, point, step = recipe_from_dict(plan.recipe, "recipe"), None, None, None
    trainer, total_batch = start_trainer(plan, recipe, args, console, point,
                                         metrics=SimMIMPretrainer.METRICS)
    module = SimMIMPretrainer(plan.config, plan.recipe, total_batch, plan.lr)
    if state_dict is not None:
        load_weights(module.model, state_dict)
    if point is not None:
        check_optimizer_groups(point, module, plan, "pretrain")
    with run_in_folder(plan, ckpt is not None, lock, trainer, config_text,
                       lambda: print_pretrain_plan(console, plan, module, total_batch, recipe, ckpt, step)):
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None,
                    weights_only=not args.trust_checkpoint)
        results = validate_after_fit(trainer, module, dm)
        weights = model_weights(trainer, module)  # every rank: under FSDP the shards are gathered onto rank zero
        if not trainer.is_global_zero:
            return None
        metrics = write_outputs(plan, weights, results, trainer.global_step, time.monotonic() - start, console,
                                str(trainer.precision))
    return PretrainResult(Path(plan.out), metrics)


def validate(args: PretrainOptions) -> PretrainOptions:
    """Every value checked before anything is read or written; returns `args` with its Trainer options
    normalised (`check_trainer_options`)."""
    names = ("res", "window", "epochs", "max_steps", "batch_size", "lr", "devices", "accelerator", "strategy",
             "num_nodes", "precision", "num_workers", "ckpt_every", "seed", "save_dtype", "logger")
    check_run_values(args, names)
    ratio, patch, label = args.mask_ratio, args.mask_patch_size, value_label(args)
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float))
                              or not 0 < ratio <= 1):
        raise SwinzooError(f"{label('mask_ratio', ratio)}: must be a number in (0, 1] (the share of mask units "
                           "masked; official 0.6)")
    if patch is not None:
        check_whole(patch, 1, label("mask_patch_size", patch), "the side of a mask unit in pixels; official 32")
    return with_checked_run_options(args)


def plan_run(args: PretrainOptions, console) -> tuple[Plan, dict | None, SimMIMDataModule, str]:
    """Resolve source, recipe, target config and data; return the plan, the starting weights (SimMIM keys; the
    mask token and decoder absent when they start fresh; None from scratch), the data and the YAML that replays
    the run."""
    start = simmim_start(args.source, scratch=args.scratch, from_format=args.from_format, arch=args.arch,
                         trust_checkpoint=args.trust_checkpoint, ema=args.ema, res=args.res, window=args.window,
                         recipe=args.recipe, recipe_overrides=args.recipe_overrides, flags=flag_changes(args))
    recipe, dst, defaults = start.recipe, start.config, start.defaults
    if recipe.max_steps and args.max_steps is None:  # bound by the recipe's steps (--max-steps: checked already)
        check_step_bound(args.trainer)
    data = args.data or recipe.data or (defaults.get("dataset") if defaults.get("dataset") in BUILTIN else None)
    if data is None:
        raise SwinzooError("--data is required: a folder of images (or with train/ and val/), hf:NAME, or the "
                           f"built-in {', '.join(BUILTIN)}")
    data_options = {k: getattr(args, k, None) for k in DATA_OPTION_KEYS if getattr(args, k, None) is not None}
    dm = data_module(data, data_options, dst.img_size, recipe, args.num_workers, console)
    dm.check()
    out = planned_out(args.out, lambda: default_out(args.source, dst.img_size, "simmim"))
    provenance = {**start.provenance, "dataset": data}
    if is_rank_zero():
        console.print(f"[bold]start[/bold] {escape(start.how)}", soft_wrap=True)
        if start.changes:
            console.print(f"[bold]recipe[/bold] {escape(recipe.name + changes_text(start.changes))}", soft_wrap=True)
        if start.inherited:
            console.print(f"[bold]masks[/bold] {recipe.mask_patch_size} px, ratio {recipe.mask_ratio:g}, "
                          f"{'normalised' if recipe.norm_targets else 'raw'} targets: the SimMIM source's run, where "
                          "no flag or --recipe sets them", soft_wrap=True)
        if start.report is not None and start.report.changed:
            start.report.print_to(console)
    plan = Plan(str(out), args.source, dst.to_dict(), recipe.to_dict(), run_data(data), args.devices, args.accelerator,
                args.strategy, args.num_nodes, args.lr, args.num_workers, args.ckpt_every, args.trainer, provenance,
                args.command, args.save_dtype, "last", args.logger,
                data_options)
    return plan, start.state_dict, dm, replay_config(args, plan, dst.window_size)


def flag_changes(args: PretrainOptions) -> dict:
    """The recipe keys the flags given set (over the recipe, and over the SimMIM source's masks)."""
    changes = {k: getattr(args, k) for k in ("batch_size", "precision", "seed", "mask_ratio", "mask_patch_size",
                                             "norm_targets", "max_steps") if getattr(args, k) is not None}
    if args.epochs is not None:
        changes.update(epochs=args.epochs, max_steps=None)
    return changes


def data_module(data: str, data_options: dict, res: int, recipe: Recipe, num_workers: int | None,
                console=None) -> SimMIMDataModule:
    options = DataOptions.from_dict(data_options, "data options") if data_options else None
    return SimMIMDataModule(data, res, recipe.batch_size, recipe, num_workers, options, console)


def replay_config(args: PretrainOptions, plan: Plan, window: int) -> str:
    """The YAML `swinzoo pretrain --config` reads to run this again: every resolved value, the whole recipe (with
    the mask settings), none of the one-off ones (--out, --resume)."""
    values = {"from": run_source(args.source), "from_format": args.from_format, "arch": args.arch,
              "scratch": args.scratch, "trust_checkpoint": args.trust_checkpoint, "res": plan.config["img_size"],
              "window": window,
              "data": plan.data, **plan.data_options, "recipe": plan.recipe,
              # set over the whole recipe again, a no-op that keeps the record of the changes
              "recipe_overrides": plan.provenance.get("recipe_overrides"), "lr": plan.lr,
              "num_workers": plan.num_workers, "devices": plan.devices, "accelerator": plan.accelerator,
              "strategy": plan.strategy, "num_nodes": plan.num_nodes, "ckpt_every": plan.ckpt_every,
              "save_dtype": plan.save_dtype, "logger": plan.logger,
              "trainer": {k: v for k, v in plan.trainer.items() if is_plain(v)}}
    body = yaml.safe_dump({k: v for k, v in values.items() if v is not None}, sort_keys=False)
    return replay_header(plan, "pretrain") + body


def check_pretrain_run(plan: Plan, out: Path) -> None:
    if plan.provenance.get("task") != PRETRAIN_TASK:
        raise SwinzooError(f"--resume {out} is a fine-tuning run, not a pretraining one: continue it with "
                           f"`swinzoo finetune --resume {out}`")


def print_pretrain_plan(console, plan: Plan, module: SimMIMPretrainer, total_batch: int, recipe: Recipe, ckpt,
                        step: int | None) -> None:
    tail = (f", mask {recipe.mask_patch_size} px ratio {recipe.mask_ratio:g}"
            + (", normalised targets" if recipe.norm_targets else ""))
    print_plan(console, plan, module, total_batch, recipe, ckpt, step,
               config=SwinConfig.from_dict(plan.config).to_dict(), recipe_tail=tail)


def write_outputs(plan: Plan, weights: dict, results: dict, step: int, wall: float, console,
                  precision: str) -> dict:
    out = Path(plan.out)
    metrics = {"val_loss": float(results["val/loss"]), "n": int(results["val/n"]), "global_step": step,
               "wall_time_s": round(wall, 1), "reconstructions": "reconstructions/latest.png",
               "precision": precision}  # the Lightning precision val_loss was measured under
    sd = weights_to_save(weights, plan.save_dtype, f"pretraining diverged: the weights (step {step})")
    model = write_results(plan, sd, "pretrain", metrics)
    console.print(f"wrote {model}: val/loss {metrics['val_loss']:.4f} (masked-pixel L1) on {metrics['n']} val "
                  f"images at {plan.config['img_size']} px after {step} steps; pictures in "
                  f"{out / 'reconstructions'}, curves in {out / CURVES_FILE}", soft_wrap=True, markup=False)
    return metrics
