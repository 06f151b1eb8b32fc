"""One fine-tuning run: plan (source -> target config -> transfer, recipe, data) -> Lightning fit -> outputs.

Everything that can be wrong with the user's input is checked while planning, before the output folder is
created. The plan is written to OUT/run.json so `--resume OUT` rebuilds the same module and continues from
OUT/last.ckpt at the global step it holds. `model.safetensors` and `metrics.json` are written (atomically) only
when training has finished, so a failed or killed run never leaves them half-written.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from swinzoo.config import SwinConfig
from swinzoo.errors import SwinzooError
from swinzoo.io import atomic_path, save_state_dict
from swinzoo.train.data import BUILTIN, SwinDataModule
from swinzoo.train.recipes import DEFAULT_RECIPE, Recipe, load_recipe, recipe_from_dict

RUN_FILE = "run.json"
OUT_ENV = "SWINZOO_RUN_OUT"


@dataclass
class Plan:
    """Everything a run needs, JSON-serialisable (OUT/run.json)."""

    out: str
    source: str
    config: dict
    recipe: dict
    data: str
    devices: str | int = "auto"
    accelerator: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    lr: float | None = None
    num_workers: int | None = None
    ckpt_every: int | None = None
    trainer: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    command: str = ""
    save_dtype: str = "float32"


def parse_trainer_options(items: list[str] | None) -> dict:
    """`--trainer KEY=VALUE` pairs -> Trainer kwargs; values are YAML (numbers, true/false, null, strings)."""
    import lightning as L

    valid = [p for p in inspect.signature(L.Trainer.__init__).parameters if p != "self"]
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise SwinzooError(f"--trainer {item!r}: write KEY=VALUE, e.g. --trainer limit_val_batches=10")
        if key not in valid:
            raise SwinzooError(f"--trainer {key}: not a Trainer option; valid: {', '.join(valid)}")
        options[key] = yaml.safe_load(value)
    return options


def default_out(source: str, res: int) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).stem if "/" in source else source)
    base = Path("runs") / f"{stem}-{res}"
    k = 2
    out = base
    while out.exists():
        out = base.with_name(f"{base.name}-{k}")
        k += 1
    return out


def plan_run(args, console) -> tuple[Plan, dict | None, SwinDataModule]:
    """Resolve source, recipe, data and target config; return the plan, the transferred weights and the data."""
    from swinzoo.commands.convert import target_config
    from swinzoo.sources import load_source
    from swinzoo.transfer import transfer
    from swinzoo.zoo import is_zoo_name, zoo_config

    trainer_opts = parse_trainer_options(args.trainer)
    if args.scratch and is_zoo_name(args.source):
        src_cfg, src_sd, src_prov = zoo_config(args.source), None, {}
    else:
        source = load_source(args.source, args.from_format, args.arch, args.trust_checkpoint)
        src_cfg, src_sd, src_prov = source.config, source.state_dict, dict(source.provenance)
    recipe = load_recipe(args.recipe or src_prov.get("finetune_recipe") or DEFAULT_RECIPE)
    recipe = apply_overrides(recipe, args)
    data = args.data or recipe.data or (src_prov.get("dataset") if src_prov.get("dataset") in BUILTIN else None)
    if data is None:
        raise SwinzooError("--data is required: a folder with train/ and val/, hf:NAME, or the built-in "
                           f"{', '.join(BUILTIN)}")
    res = args.res or recipe.res or src_cfg.img_size
    window = args.window or (recipe.window if recipe.res in (None, res) else None)
    dm = SwinDataModule(data, res, recipe.batch_size, recipe, args.num_workers)
    classes = dm.check()
    dst = target_config(src_cfg, res, window, len(classes)).replace(drop_path_rate=recipe.drop_path_rate)
    if src_sd is None:
        state_dict, report = None, None
        dst = dst.replace(class_names=classes)
    else:
        state_dict, dst, report = transfer(src_sd, src_cfg, dst)
        dst = dst.replace(class_names=classes)
    if not is_rank_zero():  # a DDP worker re-running this command: use the folder rank 0 chose and created
        out = Path(os.environ.get(OUT_ENV) or args.out)
    else:
        out = Path(args.out) if args.out else default_out(args.source, res)
        if out.exists() and any(out.iterdir()):
            raise SwinzooError(f"--out {out} is not empty; continue that run with --resume {out} or pick another "
                               "--out")
        os.environ[OUT_ENV] = str(out)  # inherited by the processes a DDP launcher starts
    provenance = {"source": args.source, "dataset": data, "recipe": recipe.to_dict(),
                  "parent": {k: v for k, v in src_prov.items() if k != "parent"}}
    if recipe.finetune_recipe:
        provenance["finetune_recipe"] = recipe.finetune_recipe
    if report is not None:
        provenance["transfer"] = {"from": src_cfg.to_dict(), **report.to_dict()}
        console.print("[bold]transfer[/bold]")
        for line in report.lines():
            console.print(f"  {line}", soft_wrap=True)
    elif args.scratch:
        console.print(f"[bold]fresh weights[/bold] for the architecture of {args.source}")
    plan = Plan(str(out), args.source, dst.to_dict(), recipe.to_dict(), data, args.devices, args.accelerator,
                args.strategy, args.num_nodes, args.lr, args.num_workers, args.ckpt_every, trainer_opts, provenance,
                " ".join(["swinzoo", *sys.argv[1:]]), args.save_dtype)
    return plan, state_dict, dm


def apply_overrides(recipe: Recipe, args) -> Recipe:
    changes = {}
    if args.epochs is not None:
        changes.update(epochs=args.epochs, max_steps=None)
    if args.max_steps is not None:
        changes["max_steps"] = args.max_steps
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    if args.precision is not None:
        changes["precision"] = args.precision
    if getattr(args, "seed", None) is not None:
        changes["seed"] = args.seed
    return recipe.replace(**changes) if changes else recipe


def resume_plan(args) -> tuple[Plan, Path]:
    out = Path(args.resume)
    run_file, ckpt = out / RUN_FILE, out / "last.ckpt"
    if not run_file.is_file() or not ckpt.is_file():
        raise SwinzooError(f"--resume {out}: needs {run_file} and {ckpt} from an earlier "
                           f"`swinzoo finetune --out {out}`")
    plan = Plan(**json.loads(run_file.read_text()))
    recipe = recipe_from_dict(plan.recipe, str(run_file))
    if args.max_steps is not None:
        recipe = recipe.replace(max_steps=args.max_steps)
    if args.epochs is not None:
        recipe = recipe.replace(epochs=args.epochs, max_steps=None)
    plan.recipe = recipe.to_dict()
    plan.trainer.update(parse_trainer_options(args.trainer))
    return plan, ckpt


def is_rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def build_trainer(plan: Plan, recipe: Recipe):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from swinzoo.train.module import StepBoundProgressBar, ema_callback, trainer_kwargs

    out = Path(plan.out)
    callbacks = [StepBoundProgressBar(leave=True),
                 ModelCheckpoint(dirpath=out, save_top_k=0, save_last=True, every_n_train_steps=plan.ckpt_every)]
    ema = ema_callback(recipe)
    if ema is not None:
        callbacks.append(ema)
    kw = dict(devices=plan.devices, accelerator=plan.accelerator, strategy=plan.strategy, num_nodes=plan.num_nodes,
              max_epochs=recipe.epochs if recipe.max_steps is None else -1, max_steps=recipe.max_steps or -1,
              callbacks=callbacks, logger=CSVLogger(out, name="logs", version=""), default_root_dir=out,
              num_sanity_val_steps=0, log_every_n_steps=min(50, recipe.max_steps or 50))
    kw.update(trainer_kwargs(recipe))
    kw.update(plan.trainer)
    return L.Trainer(**kw)


def finetune(args, console) -> int:
    """The `swinzoo finetune` command."""
    import lightning as L

    from swinzoo.train.module import SwinClassifier

    push_to = getattr(args, "push_to", None)
    if push_to:  # fail before training, not after it
        from huggingface_hub import get_token

        from swinzoo.push import check_repo_id

        check_repo_id(push_to)
        if not get_token():
            raise SwinzooError("--push-to needs a Hugging Face token: run `huggingface-cli login` or set HF_TOKEN")
    if args.resume:
        plan, ckpt = resume_plan(args)
        state_dict = None
        recipe = recipe_from_dict(plan.recipe, "run.json")
        dm = SwinDataModule(plan.data, plan.config["img_size"], recipe.batch_size, recipe, plan.num_workers)
        dm.check()
    else:
        if not args.source:
            raise SwinzooError("--from SRC is required (a zoo name such as swin_n_64, or a checkpoint file)")
        plan, state_dict, dm = plan_run(args, console)
        recipe, ckpt = recipe_from_dict(plan.recipe, "recipe"), None
    L.seed_everything(recipe.seed, verbose=False)
    trainer = build_trainer(plan, recipe)
    accumulate = int(plan.trainer.get("accumulate_grad_batches", recipe.accumulate_grad_batches))
    total_batch = recipe.batch_size * trainer.num_devices * trainer.num_nodes * accumulate
    module = SwinClassifier(plan.config, plan.recipe, total_batch, plan.lr)
    if state_dict is not None:
        module.model.load_state_dict(state_dict, strict=True)
    if is_rank_zero():
        print_plan(console, plan, module, total_batch, recipe, ckpt)
        if ckpt is None:
            Path(plan.out).mkdir(parents=True, exist_ok=True)
            with atomic_path(Path(plan.out) / RUN_FILE) as tmp:
                tmp.write_text(json.dumps(plan.__dict__, indent=1))
    trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None)
    results = trainer.validate(module, datamodule=dm, verbose=False)[0]
    if trainer.is_global_zero:
        write_outputs(plan, module, results, trainer.global_step, int(results["val/n"]), console)
        if push_to:
            from swinzoo.push import push

            url = push(str(plan.out), push_to)
            console.print(f"pushed {plan.out} to {push_to}: {url}", soft_wrap=True)
    return 0


def print_plan(console, plan: Plan, module, total_batch: int, recipe: Recipe, ckpt) -> None:
    cfg = SwinConfig.from_dict(plan.config)
    if ckpt is not None:
        step = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("global_step")
        console.print(f"[bold]resuming[/bold] {plan.out} from {ckpt.name} at global step {step}")
    shown = {k: v for k, v in cfg.to_dict().items() if k != "class_names"}
    console.print("[bold]config[/bold] " + json.dumps(shown), soft_wrap=True)
    console.print(f"[bold]classes[/bold] {cfg.num_classes}: {', '.join((cfg.class_names or [])[:12])}"
                  + (" ..." if cfg.num_classes > 12 else ""), soft_wrap=True)
    console.print(f"[bold]recipe[/bold] {recipe.name}: data {plan.data}, "
                  + (f"{recipe.max_steps} steps" if recipe.max_steps else f"{recipe.epochs} epochs")
                  + f", total batch {total_batch}, peak lr {module.peak_lr:.3g} (warmup {module.warmup_lr:.3g}, "
                  f"min {module.min_lr:.3g}), wd {recipe.weight_decay:g}, drop path {cfg.drop_path_rate:g}",
                  soft_wrap=True)
    console.print(f"[bold]out[/bold] {plan.out}", soft_wrap=True)


def write_outputs(plan: Plan, module, results: dict, step: int, n: int, console) -> None:
    out = Path(plan.out)
    metrics = {"top1": float(results["val/top1"]), "top5": float(results["val/top5"]), "n": n, "global_step": step}
    cfg = SwinConfig.from_dict(plan.config)
    provenance = {**plan.provenance, "finetune": {**metrics, "command": plan.command}}
    dtype = getattr(torch, plan.save_dtype)
    sd = {k: v.detach().to(dtype) for k, v in module.model.state_dict().items()}
    save_state_dict(sd, cfg, out / "model.safetensors", provenance)
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1))
    console.print(f"wrote {out / 'model.safetensors'}: top1 {metrics['top1']:.4f}, top5 {metrics['top5']:.4f} "
                  f"on {n} val images at {cfg.img_size} px (step {step})", soft_wrap=True)
