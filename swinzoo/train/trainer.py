"""The Lightning side of a run: the Trainer with swinzoo's callbacks and loggers plus the user's, the choice of the
weights a run keeps (best validated or last), and Lightning's chatter kept out of swinzoo's output."""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import Callback, Checkpoint, EarlyStopping, ModelCheckpoint, WeightAveraging
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch.optim.lr_scheduler import LambdaLR

from swinzoo.errors import SwinzooError
from swinzoo.hardware import keep_freed_memory
from swinzoo.io import load_torch
from swinzoo.live_display import redraws_in_place
from swinzoo.models import cpu_gemm
from swinzoo.run_folder import BEST_FILE, CKPT_FILE, CURVES_FILE
from swinzoo.train.checks import check_launcher, check_logger, check_no_forked_devices
from swinzoo.train.curves import VAL_KEYS, TrainingCurves
from swinzoo.train.environment import print_rendezvous, run_environment
from swinzoo.train.module import (
    AtomicCheckpointIO,
    ema_callback,
    rehome_checkpoint_callbacks,
    resolve_precision,
    trainer_kwargs,
)
from swinzoo.train.options import Plan
from swinzoo.train.progress import ProgressLines, StepBoundProgressBar
from swinzoo.train.recipes import Recipe
from swinzoo.train.resume import ResumePoint, ResumeStart, check_total_batch
from swinzoo.train.sharded import check_weight_averaging, whole_parameters
from swinzoo.train.trainer_options import trainer_objects


def start_trainer(plan: Plan, recipe: Recipe, args, console, point: ResumePoint | None, *,
                  metrics: tuple[str, ...]) -> tuple[L.Trainer, int]:
    """The Trainer of a `finetune` or `pretrain` run (`args` its options) and its total batch (batch x devices x
    nodes x accumulation), seeded by the recipe. A resume (`point`) must make the total batch its checkpoint was
    trained with, and starts with `ResumeStart`; a new run records in its provenance what the Trainer resolved."""
    L.seed_everything(recipe.seed, verbose=False)  # fresh weights (a head, SimMIM's decoder) and the data order
    trainer = build_trainer(plan, recipe, args.trust_checkpoint, console,
                            resumed_at=point.step if point is not None else None, metrics=metrics)
    check_no_forked_devices(trainer, plan.devices)
    accumulate = int(plan.trainer.get("accumulate_grad_batches", recipe.accumulate_grad_batches))
    total_batch = recipe.batch_size * trainer.num_devices * trainer.num_nodes * accumulate
    if point is not None:  # --devices auto may see another device count than the run had
        check_total_batch(point, total_batch, Path(plan.out))
        trainer.callbacks.insert(0, ResumeStart(plan, point, args.command))  # epochs checked, run.json rewritten
    else:  # a resume records its own environment in run.json (ResumeStart)
        plan.provenance["environment"] = run_environment(trainer)
    if trainer.num_nodes > 1:
        print_rendezvous(console, trainer)
    return trainer, total_batch


def build_trainer(plan: Plan, recipe: Recipe, trust_checkpoint: bool = False, console=None,
                  resumed_at: int | None = None, *, metrics: tuple[str, ...]):
    """The Lightning Trainer of a run; what Lightning refuses (no such device, a precision the accelerator cannot
    do, ...) is a one-line error, raised before anything is written.

    swinzoo's callbacks (last.ckpt for --resume, best.ckpt for --keep best, the progress display, EMA) and its CSV
    log always run; callbacks and loggers given under `trainer` are added to them. A run resumed at step S logs to
    logs/resumed-at-S/ (Lightning's CSV logger would delete the earlier logs/metrics.csv; see `log_version`).
    `metrics`: what the module logs, the names a given EarlyStopping or ModelCheckpoint may monitor."""
    out = Path(plan.out)
    check_launcher(plan.num_nodes)
    user = trainer_objects(plan.trainer)
    val_keys = tuple(k for k in VAL_KEYS if k in metrics)
    curves = TrainingCurves(out / CURVES_FILE, val_keys, f"{out.name}: {plan.source or 'scratch'}")
    callbacks = [ScheduleAtStep(), LatestValidation(), ValidateLastStep(), curves]
    if plan.keep == "best":  # weights only: resuming uses last.ckpt, best.ckpt only feeds model.safetensors
        callbacks.append(ModelCheckpoint(dirpath=out, filename=BEST_FILE[:-5], monitor="val/top1", mode="max",
                                         save_top_k=1, save_weights_only=True, enable_version_counter=False,
                                         save_on_train_epoch_end=False))
    show_progress = user.get("enable_progress_bar", True) is not False
    if show_progress and (console is None or redraws_in_place(console)):
        callbacks.insert(0, StepBoundProgressBar(leave=True))
    elif show_progress:  # piped to a log: a line at a steady rate instead of a bar redrawn in place
        callbacks.insert(0, ProgressLines(console))
        user["enable_progress_bar"] = False
    ema = ema_callback(recipe)
    if ema is not None:
        callbacks.append(ema)
    given_callbacks = as_list(user.pop("callbacks", None))
    check_monitors(given_callbacks, metrics, user.get("limit_val_batches", 1) != 0)
    # last: Lightning runs checkpoint callbacks after the others, in list order, and last.ckpt must hold every
    # ModelCheckpoint's state after the validation it is written at (else a resume forgets that best score)
    callbacks += [*given_callbacks, LastCheckpoint(out / CKPT_FILE, plan.ckpt_every)]
    version = "" if resumed_at is None else log_version(out, resumed_at)
    loggers = [CSVLogger(out, name="logs", version=version), *named_logger(plan.logger, out)]
    given = user.pop("logger", None)
    if given is False:
        loggers = False
    elif given not in (None, True):
        loggers += as_list(given)
    kw = dict(devices=plan.devices, accelerator=plan.accelerator, strategy=plan.strategy, num_nodes=plan.num_nodes,
              max_epochs=recipe.epochs if recipe.max_steps is None else -1, max_steps=recipe.max_steps or -1,
              callbacks=callbacks, logger=loggers, default_root_dir=out, num_sanity_val_steps=0,
              enable_model_summary=False,  # print_plan says what the model is
              log_every_n_steps=min(50, recipe.max_steps or 50), plugins=[AtomicCheckpointIO(trust_checkpoint)])
    kw.update(trainer_kwargs(recipe, plan.accelerator))
    precision, why = resolve_precision(recipe, plan.accelerator)
    if "precision" in user:
        precision, why = user["precision"], "as set by --trainer.precision"
    kw.update(user)
    try:
        trainer = L.Trainer(**kw)
    except (MisconfigurationException, ValueError, TypeError) as e:
        refused = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise SwinzooError(f"Lightning refused the Trainer settings: {refused}; check --devices, --accelerator, "
                           "--strategy, --precision and --trainer") from None
    check_weight_averaging(trainer, plan.strategy, ema)
    if console is not None:
        used = str(trainer.precision)  # what Lightning runs: fp16 AMP asked for on the CPU becomes bf16-mixed
        if used != PRECISION_ALIASES.get(str(precision), str(precision)):
            why = f"{precision} asked for: Lightning runs fp16 AMP on CUDA only" if "16" in str(precision) else (
                f"{precision} asked for")
        console.print(f"[bold]precision[/bold] {used} ({why})", soft_wrap=True)
    # the accelerator Lightning chose, not a guess from the flags: glibc and the fp32 products only matter on the CPU
    if not isinstance(trainer.accelerator, CPUAccelerator):
        return trainer
    memory = keep_freed_memory()
    if console is not None:
        if memory:
            console.print(f"[bold]memory[/bold] {memory}", soft_wrap=True)
        if str(precision).startswith("32"):
            console.print(f"[bold]matmul[/bold] {cpu_gemm.describe()}", soft_wrap=True)
    return trainer


# Lightning's names for the short precision flags (what `trainer.precision` reports)
PRECISION_ALIASES = {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true", "64": "64-true"}


def check_monitors(callbacks: list, metrics: tuple[str, ...], validates: bool) -> None:
    """A given EarlyStopping or ModelCheckpoint whose metric is never logged fails at its first check, which may
    come after every step has trained (and before the checkpoint that keeps them): refused before the run."""
    for callback in callbacks:
        monitor = getattr(callback, "monitor", None)
        if not isinstance(callback, (EarlyStopping, ModelCheckpoint)) or monitor is None:
            continue
        if isinstance(callback, EarlyStopping) and not callback.strict:  # told to tolerate a missing metric
            continue
        name = type(callback).__name__
        if monitor not in metrics:
            raise SwinzooError(f"--trainer.callbacks: {name} monitors {monitor!r}, which the run never logs; "
                               f"monitor one of {', '.join(metrics)}")
        if monitor.startswith("val/") and not validates:
            raise SwinzooError(f"--trainer.callbacks: {name} monitors {monitor!r}, but --trainer.limit_val_batches "
                               "0 turns validation off; drop that setting or monitor train/loss")


class LastCheckpoint(Checkpoint):
    """OUT/last.ckpt, what --resume continues from: written after every validation during the fit, at the end of
    every epoch and of training, and every `every_n_steps` optimizer steps when given; never twice at one step.

    Not Lightning's ModelCheckpoint(save_top_k=0, save_last=True): under Lightning 2.6 it writes last.ckpt only when
    a top-k checkpoint was written at the same step (never, with top-k 0) or at train end, and with
    every_n_train_steps it leaves last.ckpt at the last multiple of N."""

    def __init__(self, path: Path, every_n_steps: int | None = None) -> None:
        self.path, self.every_n_steps = path, every_n_steps
        self.saved_step: int | None = None
        self.in_validation = self.at_epoch_end = False
        # a validation since the last save, at the same step: --ckpt-every saves before the validation its step
        # runs, and a last.ckpt without that validation's best score would have a resume forget it
        self.validated = False

    def save(self, trainer, in_validation: bool = False, at_epoch_end: bool = False) -> None:
        if (self.saved_step != trainer.global_step or self.validated) and not trainer.sanity_checking:
            # the whole training state (optimizer, loops), on every rank: the strategy writes it once. A save, not
            # a load; said explicitly, else Lightning logs that it defaulted (on every rank)
            self.in_validation, self.at_epoch_end = in_validation, at_epoch_end
            try:
                trainer.save_checkpoint(self.path, weights_only=False)
            finally:
                self.in_validation = self.at_epoch_end = False
            self.saved_step, self.validated = trainer.global_step, False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # Lightning counts the step for its loggers after validating within an epoch. Resumed from a checkpoint
        # written by that validation, it counts it then only where its interval rule finds the validation due
        # again (a --trainer.val_check_interval one), not for the one `ValidateLastStep` asks for at --max-steps:
        # there the resumed logs would go on one step behind the straight run's
        loops = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
        epoch_loop = trainer.fit_loop.epoch_loop
        if (self.in_validation and "_batches_that_stepped" in loops and not epoch_loop._should_accumulate()
                and not validation_due_on_restart(trainer)):
            loops["_batches_that_stepped"] += 1
        elif self.at_epoch_end and "_batches_that_stepped" in loops:
            # resumed at an epoch's end, Lightning counts the last step again
            loops["_batches_that_stepped"] -= 1

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # before any callback loads its state; `AtomicCheckpointIO` does it too, but under FSDP Lightning reads
        # last.ckpt itself
        rehome_checkpoint_callbacks(checkpoint, self.path.parent)

    def on_train_start(self, trainer, pl_module) -> None:
        # a resumed run holds its checkpoint's step already; saving it again mid-accumulation would lose the
        # gradients accumulated so far
        self.saved_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        # at an epoch's end the checkpoint waits for on_train_epoch_end, where Lightning counts the epoch as done
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        self.validated = True
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self.save(trainer, in_validation=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.save(trainer, at_epoch_end=True)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer)


def validation_due_on_restart(trainer) -> bool:
    """Whether Lightning, resuming at this batch, finds a validation due here (and so counts the logged step
    itself): its rule without the stop request, which a resumed run no longer has."""
    stop = trainer.should_stop
    trainer.should_stop = False
    try:
        return bool(trainer.fit_loop.epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher))
    finally:
        trainer.should_stop = stop


class ScheduleAtStep(Callback):
    """The lr of each LambdaLR set for the step training starts at. A resume with another --max-steps or --epochs
    has a new schedule, but Lightning restores the old schedule's lr into the optimizer, and LambdaLR would apply
    the new one only after the first step (a fresh run: no change)."""

    def on_train_start(self, trainer, pl_module) -> None:
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, LambdaLR):
                lrs = [base * factor(scheduler.last_epoch)
                       for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
                for group, lr in zip(scheduler.optimizer.param_groups, lrs):
                    group["lr"] = lr
                scheduler._last_lr = lrs  # what get_last_lr() (and Lightning's LearningRateMonitor) report


class ValidateLastStep(Callback):
    """A run whose --max-steps ends inside an epoch validates at that step, inside fit. Else the fit ends without
    val/ metrics, and a callback checking one at the epoch's end (EarlyStopping: `val/top1 not available`) fails
    after every step has trained, before the last checkpoint is written; `LatestValidation` then hands these
    figures to `validate_after_fit`, so the final weights are still validated once."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loop = trainer.fit_loop.epoch_loop
        if 0 <= trainer.max_steps <= trainer.global_step and not loop.batch_progress.is_last_batch:
            # Lightning validates in the same batch when should_stop is set (what EarlyStopping itself relies on)
            trainer.should_stop = True


class LatestValidation(Callback):
    """The figures of the fit's latest validation and the step it ran at (they are `trainer.validate`'s keys)."""

    def __init__(self) -> None:
        self.step: int | None = None
        self.metrics: dict[str, float] = {}

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self.step = trainer.global_step
            self.metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}


def log_version(out: Path, resumed_at: int) -> str:
    """The log folder of a run resumed at step S: logs/resumed-at-S, or -2, -3, ... when an earlier resume from
    the same step (one stopped before its next checkpoint) has it: Lightning's CSV logger would replace its log."""
    name, k = f"resumed-at-{resumed_at}", 2
    while (out / "logs" / name).exists():
        name, k = f"resumed-at-{resumed_at}-{k}", k + 1
    return name


def as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def named_logger(name: str, out: Path) -> list:
    """The logger `--logger NAME` adds to the CSV log, writing under OUT; its package missing is a one-line error
    (checked again here: a resumed run takes the name from run.json)."""
    if name == "csv":
        return []
    check_logger(name)
    if name == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return [TensorBoardLogger(out, name="logs", version="tensorboard", default_hp_metric=False)]
    from lightning.pytorch.loggers import WandbLogger

    return [WandbLogger(save_dir=str(out), name=out.name, project="swinzoo")]


def keep_weights(trainer, module, dm, last: dict) -> tuple[dict, dict]:
    """With --keep best: load best.ckpt's weights into `module` when they validated better than the last step's
    (a tie keeps the last). Returns the metrics of the weights kept and which they are ({"weights", "step"})."""
    best = next((c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None) == "val/top1"), None)
    kept = {"weights": "last", "step": trainer.global_step}
    if best is None or best.best_model_score is None or not Path(best.best_model_path or "").is_file():
        return last, kept
    if float(best.best_model_score) <= float(last["val/top1"]):
        return last, kept
    state = load_torch(Path(best.best_model_path), False, fix="start the run again with another --out")
    whole_parameters(trainer, module, state["state_dict"])  # under FSDP too, where the fit left shards
    results = validate_unlogged(trainer, module, dm)
    return results, {"weights": "best", "step": int(state["global_step"])}


def validate_after_fit(trainer, module, dm) -> dict:
    """The figures of the final weights: the fit's latest validation when it ran at the final step (an epoch's or
    a --trainer.val_check_interval's end, or the last step: `ValidateLastStep`), else a validation now. With
    weight averaging the fit validated the average of that moment, which a later epoch-end update may change:
    validated again."""
    latest = next((c for c in trainer.callbacks if isinstance(c, LatestValidation)), None)
    averaging = any(isinstance(c, WeightAveraging) for c in trainer.callbacks)
    if latest is not None and latest.step == trainer.global_step and latest.metrics and not averaging:
        return latest.metrics
    return validate_unlogged(trainer, module, dm)


def validate_unlogged(trainer, module, dm) -> dict:
    """Validation after fit, kept out of the loggers: their rows are the training's, and these would be rows of
    the epoch after the last (metrics.json holds the results)."""
    loggers, limit = trainer.loggers, trainer.limit_val_batches
    whole_parameters(trainer, module)  # under FSDP validate wraps the module again
    trainer.loggers = []
    if limit == 0:  # --trainer.limit_val_batches 0 skips the fit's validations; metrics.json still needs figures
        trainer.limit_val_batches = 1.0
    try:
        return trainer.validate(module, datamodule=dm, verbose=False)[0]
    finally:
        trainer.loggers, trainer.limit_val_batches = loggers, limit


# Lightning's messages swinzoo's own output replaces (the plan, the progress, the result) or that say nothing
# to a swinzoo user: adverts, device banners, a deprecation inside Lightning, our own run.json beside last.ckpt
QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.fabric.utilities.distributed",
                 "lightning.pytorch.trainer.connectors.signal_connector")  # "[rank: 0] Received SIGTERM: 15"
# the DistributedSampler notice: sampling.unpadded counts each validation image once
QUIET_WARNINGS = (r".*`isinstance\(treespec, LeafSpec\)` is deprecated", r"Using `DistributedSampler` with the",
                  r"(?s)Checkpoint directory .* exists and is not empty",  # (?s): a line break in the path
                  r".*does not have many workers",
                  r"The number of training batches .* is smaller than the logging",
                  r".*AMP with fp16 is not supported on CPU")  # the run log says which precision runs instead


@contextlib.contextmanager
def third_party_quiet():
    """Info-level chatter of Lightning off and the warnings above ignored, for the length of a run."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)
