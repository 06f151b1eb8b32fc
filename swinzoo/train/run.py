"""One fine-tuning run: plan (source -> target config -> transfer, recipe, data) -> Lightning fit -> outputs.

Everything that can be wrong with the user's input is checked before the output folder is created: every value
first (`validate_options`, cheap), then while planning the source, recipe, data (every image decoded) and target
config, then by building the Trainer. The plan is written to OUT/run.json so `--resume OUT` rebuilds the same
module and continues from OUT/last.ckpt at the global step it holds (run.json and last.ckpt are checked up front
too). Checkpoints are written atomically (`AtomicCheckpointIO`); `model.safetensors` and `metrics.json` only when
training has finished, atomically. A run that fails before its first checkpoint removes what it created
(`RunFolder`), and a folder left by a killed run that never checkpointed is accepted by a rerun with the same --out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError, printable, python_api
from swinzoo.evaluation import share
from swinzoo.run_folder import CURVES_FILE, PRETRAIN_TASK, RUN_FILE
from swinzoo.sources import read_checkpoint, shipped_provenance
from swinzoo.train.checks import validate_options, weights_to_save
from swinzoo.train.data import BUILTIN, SwinDataModule, run_data, run_source
from swinzoo.train.folder import RunLock, default_out, is_rank_zero, planned_out, run_in_folder, write_results
from swinzoo.train.hf_data import DataOptions
from swinzoo.train.module import SwinClassifier, finetune_weights
from swinzoo.train.options import (
    DATA_OPTION_KEYS,
    OUT_ENV,
    FinetuneOptions,
    FinetuneResult,
    Plan,
    is_plain,
    options_record,
    print_plan,
    replay_header,
)
from swinzoo.train.recipes import (
    PLAIN_RECIPE,
    Recipe,
    changes_text,
    check_task,
    finetune_recipe,
    recipe_from_dict,
    split_recipe,
)
from swinzoo.train.resume import check_optimizer_groups, resume_plan, run_weights
from swinzoo.train.rng import caller_state_kept
from swinzoo.train.sharded import model_weights
from swinzoo.train.trainer import keep_weights, start_trainer, third_party_quiet, validate_after_fit
from swinzoo.train.trainer_options import check_step_bound
from swinzoo.upload import check_push_access, check_repo_id, push
from swinzoo.zoo import is_zoo_name, zoo_config


def plan_run(args: FinetuneOptions, console) -> tuple[Plan, dict | None, SwinDataModule, str]:
    """Resolve source, recipe, data and target config; return the plan, the transferred weights, the data and the
    config that replays the run (YAML text)."""
    if args.scratch and is_zoo_name(args.source):
        src_cfg, src_sd, src_prov = zoo_config(args.source), None, {}
        # no parent, but the entry's defaults: the data and recipe its shipped weights name (nano: shapes)
        defaults = shipped_provenance(args.source)
    else:
        source = read_checkpoint(args.source, from_format=args.from_format, arch=args.arch,
                                 trust_checkpoint=args.trust_checkpoint, ema=args.ema)
        src_cfg, src_sd, src_prov = source.config, source.state_dict, dict(source.provenance)
        defaults = src_prov
        if args.scratch:  # the file's architecture with fresh weights: nothing of its weights, no parent
            src_sd, src_prov = None, {}
    named, changes = split_recipe(args.recipe, args.recipe_overrides)
    recipe, res, why = finetune_recipe(named, changes, src_cfg.version, src_cfg.img_size, src_cfg.num_classes,
                                       args.res, defaults.get("finetune_recipe"))
    recipe = apply_overrides(recipe, args)
    check_task(recipe, "finetune", PLAIN_RECIPE)
    if recipe.max_steps and args.max_steps is None:  # bound by the recipe's steps (--max-steps: checked already)
        check_step_bound(args.trainer)
    data = args.data or recipe.data or (defaults.get("dataset") if defaults.get("dataset") in BUILTIN else None)
    if data is None:
        raise SwinzooError("--data is required: a folder with train/ and val/, hf:NAME, or the built-in "
                           f"{', '.join(BUILTIN)}")
    window = args.window or (recipe.window if recipe.res in (None, res) else None)
    data_options = {k: getattr(args, k) for k in DATA_OPTION_KEYS if getattr(args, k) is not None}
    dm = data_module(data, data_options, res, recipe, args.num_workers, console)
    classes = dm.check()
    state_dict, dst, report = finetune_weights(src_sd, src_cfg, res, window, recipe, len(classes), classes)
    out = planned_out(args.out, lambda: default_out(args.source, res))
    # data_options with the data: `swinzoo eval` of the weights alone reads the validation rows the run held out
    provenance = {"source": args.source, "dataset": data, "data_options": data_options, "recipe": recipe.to_dict(),
                  "parent": {k: v for k, v in src_prov.items() if k != "parent"}}
    if recipe.finetune_recipe:
        provenance["finetune_recipe"] = recipe.finetune_recipe
    if changes:  # `recipe` holds them already; this says which keys were not the named or chosen recipe's
        provenance["recipe_overrides"] = changes
    if is_rank_zero():
        console.print(f"[bold]recipe[/bold] {escape(f'{recipe.name}{changes_text(changes)}: {why}')}", soft_wrap=True)
    if report is not None:
        provenance["transfer"] = {"from": src_cfg.to_dict(), **report.to_dict()}
        report.print_to(console)
    elif args.scratch:
        console.print(f"[bold]fresh weights[/bold] for the architecture of {escape(args.source)}")
    plan = Plan(str(out), args.source, dst.to_dict(), recipe.to_dict(), run_data(data), args.devices, args.accelerator,
                args.strategy, args.num_nodes, args.lr, args.num_workers, args.ckpt_every, args.trainer, provenance,
                args.command, args.save_dtype, args.keep, args.logger,
                data_options)
    return plan, state_dict, dm, replay_config(args, plan, window=dst.window_size)


def data_module(data: str, data_options: dict, res: int, recipe: Recipe, num_workers: int | None,
                console=None) -> SwinDataModule:
    options = DataOptions.from_dict(data_options, "data options") if data_options else None
    return SwinDataModule(data, res, recipe.batch_size, recipe, num_workers, data_options=options, console=console)


def replay_config(args: FinetuneOptions, plan: Plan, window) -> str:
    """The YAML that `swinzoo finetune --config` reads to run this again: every resolved value (resolution,
    window, the whole recipe with the overrides applied), none of the one-off ones (--out, --resume, --push-to)."""
    values = {"from": run_source(args.source), "from_format": args.from_format, "arch": args.arch,
              "scratch": args.scratch, "trust_checkpoint": args.trust_checkpoint, "res": plan.config["img_size"],
              "window": window,
              "data": plan.data, **plan.data_options, "recipe": plan.recipe,
              # set over the whole recipe again, a no-op that keeps the record of the changes
              "recipe_overrides": plan.provenance.get("recipe_overrides"), "lr": plan.lr,
              "num_workers": plan.num_workers, "devices": plan.devices, "accelerator": plan.accelerator,
              "strategy": plan.strategy, "num_nodes": plan.num_nodes, "keep": plan.keep,
              "ckpt_every": plan.ckpt_every, "save_dtype": plan.save_dtype, "logger": plan.logger,
              "trainer": {k: v for k, v in plan.trainer.items() if is_plain(v)}}
    body = yaml.safe_dump({k: v for k, v in values.items() if v is not None}, sort_keys=False)
    return replay_header(plan, "finetune") + body


def apply_overrides(recipe: Recipe, args: FinetuneOptions) -> Recipe:
    changes = {}
    if args.epochs is not None:
        changes.update(epochs=args.epochs, max_steps=None)
    if args.max_steps is not None:
        changes["max_steps"] = args.max_steps
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    if args.precision is not None:
        changes["precision"] = args.precision
    if args.seed is not None:
        changes["seed"] = args.seed
    return recipe.replace(**changes) if changes else recipe


def check_finetune_run(plan: Plan, out: Path) -> None:
    if plan.provenance.get("task") == PRETRAIN_TASK:
        raise SwinzooError(f"--resume {out} is a SimMIM pretraining run: continue it with `swinzoo pretrain --resume "
                           f"{out}`, or fine-tune its weights with `swinzoo finetune --from {run_weights(out)}`")


@python_api(FinetuneOptions)
def finetune(source: str | None = None, *, console: Console | None = None, **options: Any) -> FinetuneResult | None:
    """Fine-tune `source` (zoo name, file, folder or hf-hub: reference) on `data` with Lightning.

    The keyword arguments are the fields of `FinetuneOptions`, the CLI's flags by their config names:
    - `res` (default: the source's), `window` (default: the official choice for `res`), `scratch` (fresh weights of
      the source's architecture); `from_format`, `arch`, `trust_checkpoint`: how to read the source.
    - `data`: a folder with train/ and val/ class folders, `hf:NAME[:CONFIG]`, or `shapes` (built in); default: the
      dataset the source was trained on when it is built in. For `hf:` data: `train_split`, `val_split`,
      `val_fraction`, `split_seed`, `image_column`, `label_column`.
    - `recipe`: packaged recipe name, YAML path or a mapping of every recipe key (default: chosen from source and
      target, see `choose_recipe`); `recipe_overrides` (or a mapping of some keys as `recipe`): keys set over the
      recipe named or chosen; `epochs`, `max_steps`, `batch_size`, `precision`, `seed` override it, `lr` replaces the
      scaled peak lr.
    - `devices`, `accelerator`, `strategy`, `num_nodes`, and `trainer` (any other `lightning.Trainer` kwargs,
      callbacks and loggers added to swinzoo's own) go to the Trainer; `logger`: csv, tensorboard or wandb.
    - `out`: output folder (default runs/SRC-RES); `resume`: continue the run in that folder from its last.ckpt;
      `ckpt_every`: also write last.ckpt every N steps; `keep`: "best" (default) or "last" weights in
      OUT/model.safetensors; `save_dtype`: their dtype; `push_to`: push OUT to this Hugging Face Hub repo at the end.

    Returns the output folder and the final validation metrics (None on processes other than global rank zero).
    """
    return run_finetune(options_record(FinetuneOptions, source, options, "finetune"), console or Console())


def run_finetune(args: FinetuneOptions, console) -> FinetuneResult | None:
    """`finetune` on a `FinetuneOptions` record (what the CLI calls)."""
    with caller_state_kept((OUT_ENV,)), third_party_quiet(), RunLock.held() as lock:
        return _run_finetune(args, console if is_rank_zero() else Console(quiet=True), lock)  # DDP: the plan once


def _run_finetune(args: FinetuneOptions, console, lock: RunLock) -> FinetuneResult | None:
    args = validate_options(args)
    push_to = args.push_to
    if push_to:  # fail before training, not after it
        check_repo_id(push_to)
        check_push_access(push_to)
    if args.resume:
        plan, ckpt, point = resume_plan(args, "finetune", check_finetune_run, lock)
        state_dict, step = None, point.step
        recipe = recipe_from_dict(plan.recipe, RUN_FILE)
        dm = data_module(plan.data, plan.data_options, plan.config["img_size"], recipe, plan.num_workers, console)
        dm.check()
        config_text = ""
    else:
        if not args.source:
            raise SwinzooError("--from SRC is required (a zoo name such as swin_n_64, or a checkpoint file)")
        plan, state_dict, dm, config_text = plan_run(args, console)
        recipe, ckpt, point, step = recipe_from_dict(plan.recipe, "recipe"), None, None, None
    dm.config = SwinConfig.from_dict(plan.config)  # validate with the preprocessing the weights will carry
    trainer, total_batch = start_trainer(plan, recipe, args, console, point,
                                         metrics=SwinClassifier.METRICS)
    module = SwinClassifier(plan.config, plan.recipe, total_batch, plan.lr)
    if state_dict is not None:
        module.model.load_state_dict(state_dict, strict=True)
    if point is not None:
        check_optimizer_groups(point, module, plan, "finetune")
    with run_in_folder(plan, ckpt is not None, lock, trainer, config_text,
                       lambda: print_finetune_plan(console, plan, module, total_batch, recipe, ckpt, step)):
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None,
                    weights_only=not args.trust_checkpoint)
        results = validate_after_fit(trainer, module, dm)
        results, kept = keep_weights(trainer, module, dm, results)
        weights = model_weights(trainer, module)  # every rank: under FSDP the shards are gathered onto rank zero
        if not trainer.is_global_zero:
            return None
        metrics = write_outputs(plan, weights, results, trainer.global_step, kept, console, str(trainer.precision))
    if push_to:
        try:
            url = push(str(plan.out), push_to)
        except SwinzooError as e:  # the run itself is complete
            raise type(e)(f"{e}; the run is kept in {plan.out}: push it with `swinzoo push {plan.out} --repo "
                          f"{push_to}`") from None
        console.print(f"pushed {plan.out} to {push_to}: {url}", soft_wrap=True, markup=False)
    return FinetuneResult(Path(plan.out), metrics)


def print_finetune_plan(console, plan: Plan, module, total_batch: int, recipe: Recipe, ckpt,
                        step: int | None = None) -> None:
    cfg = SwinConfig.from_dict(plan.config)
    names = ", ".join(printable(name) for name in (cfg.class_names or [])[:12])
    classes = (f"[bold]classes[/bold] {cfg.num_classes}: {escape(names)}"
               + (" ..." if cfg.num_classes > 12 else ""))
    print_plan(console, plan, module, total_batch, recipe, ckpt, step,
               config={k: v for k, v in cfg.to_dict().items() if k != "class_names"}, extra=(classes,))


def write_outputs(plan: Plan, weights: dict, results: dict, step: int, kept: dict, console, precision: str) -> dict:
    n = int(results["val/n"])
    metrics = {"top1": share(results["val/top1"], n), "top5": share(results["val/top5"], n), "n": n,
               "global_step": step, "weights": kept["weights"], "weights_step": kept["step"],
               "precision": precision}  # what the figures were measured under: `swinzoo eval RUN` measures so too
    sd = weights_to_save(weights, plan.save_dtype,
                         f"training diverged: the {kept['weights']} weights (step {kept['step']})")
    model = write_results(plan, sd, "finetune", metrics)
    console.print(f"wrote {model}: top1 {metrics['top1']:.4f}, top5 {metrics['top5']:.4f} on {n} val images at "
                  f"{plan.config['img_size']} px ({kept['weights']} weights: step {kept['step']} of {step}); "
                  f"curves in {Path(plan.out) / CURVES_FILE}", soft_wrap=True, markup=False)
    return metrics
