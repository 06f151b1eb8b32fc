"""`--resume OUT`, shared by `finetune` and `pretrain`: the run's plan read back from OUT/run.json with the changes
a resume may make (more steps or epochs, Trainer options), its last.ckpt checked, and, once the Trainer is built,
the changed plan written back to run.json with a record of the resume, so that a later resume keeps them."""

from __future__ import annotations

import math
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from swinzoo.errors import SwinzooError
from swinzoo.io import load_torch, same_file
from swinzoo.run_folder import CKPT_FILE, METRICS_FILE, RUN_FILE
from swinzoo.train.checks import flag_name, read_plan
from swinzoo.train.data import BUILTIN
from swinzoo.train.environment import run_environment
from swinzoo.train.folder import RunLock, check_not_running, is_rank_zero, write_plan
from swinzoo.train.optim import param_groups
from swinzoo.train.options import DATA_OPTION_KEYS, Plan
from swinzoo.train.recipes import recipe_from_dict
from swinzoo.train.trainer_options import check_trainer_options

# what --resume takes from the command line; the rest of the run comes from its run.json
RESUME_CHANGES = {"resume", "max_steps", "epochs", "trainer", "trust_checkpoint", "push_to", "command"}


@dataclass(frozen=True)
class ResumePoint:
    """Where last.ckpt stands: the optimizer steps taken, the training epochs done, the total batch its lr was
    scaled for (None in a checkpoint without it), and how many parameters each of its AdamW groups holds."""

    step: int
    epoch: int
    total_batch: int | None = None
    optimizer_groups: tuple[int, ...] | None = None


def resume_plan(args, command: str, check_task: Callable[[Plan, Path], None],
                lock: RunLock) -> tuple[Plan, Path, ResumePoint]:
    """The plan of the run in --resume OUT with the changes `args` asks for, its checkpoint and where that stands,
    all checked before anything is written; then rank zero takes OUT's `lock` for this process. `command`
    ("finetune", "pretrain") names the command in the errors; `check_task` refuses a run of the other command."""
    out = Path(args.resume)
    if out.exists() and not out.is_dir():
        raise SwinzooError(f"--resume {out} is a file; give the output folder of an earlier `swinzoo {command}`")
    if is_rank_zero():  # the other DDP ranks resume the run rank zero holds
        check_not_running(out, "--resume")  # first: a run before its first checkpoint has no last.ckpt yet
    run_file, ckpt = out / RUN_FILE, out / CKPT_FILE
    if not run_file.is_file() or not ckpt.is_file():
        raise SwinzooError(f"--resume {out}: needs {run_file} and {ckpt} from an earlier "
                           f"`swinzoo {command} --out {out}`")
    plan = read_plan(run_file)
    check_task(plan, out)
    check_resume_flags(args, run_file, plan)
    check_run_data(plan.data, out, run_file, command)
    plan.out = str(out)  # where the run is now, should its folder have moved
    recipe = recipe_from_dict(plan.recipe, str(run_file))
    if args.max_steps is not None:
        recipe = recipe.replace(max_steps=args.max_steps)
    if args.epochs is not None:
        recipe = recipe.replace(epochs=args.epochs, max_steps=None)
    plan.recipe = recipe.to_dict()
    trainer = check_trainer_options({**plan.trainer, **args.trainer}, f"{run_file} trainer")
    check_same_accumulation(plan.trainer, trainer, recipe.accumulate_grad_batches, run_file)
    plan.trainer = trainer
    point = check_checkpoint(ckpt, args.trust_checkpoint)
    check_resume_target(out, point, args.max_steps, args.epochs)
    if is_rank_zero():
        lock.acquire(out, "--resume")
    return plan, ckpt, point


def check_run_data(data: str, out: Path, run_file: Path, command: str) -> None:
    """Refuse a resume whose local data folder is not where run.json says, naming how to bring it back: --data
    cannot change a resumed run. Runs before swinzoo recorded the absolute path hold it as given."""
    if data in BUILTIN or data.startswith("hf:") or Path(data).exists():
        return
    if not Path(data).is_absolute():
        raise SwinzooError(f"--resume {out}: the run's data {data} ({run_file}) is relative to the folder the run "
                           f"started in, not this one; resume from there (cd FOLDER && swinzoo {command} --resume "
                           f"{shlex.quote(str(out.absolute()))})")
    raise SwinzooError(f"--resume {out}: the run's data {data} ({run_file}) is not there; put it back, or link its new "
                       f"place there (ln -s NEW_PLACE {shlex.quote(data)})")


def check_checkpoint(ckpt: Path, trust_checkpoint: bool = False) -> ResumePoint:
    """Where a Lightning checkpoint stands, loaded as --resume will (tensors only unless trusted); a one-line error
    when it is truncated, corrupt, not a training checkpoint, or holds Python objects."""
    fix = "restore it from a backup, or start again with another --out"
    try:
        state = load_torch(ckpt, trust_checkpoint, fix=fix, mmap=True)
    except SwinzooError:
        raise
    except Exception as e:  # a trusted file's own unpickling errors (a class that no longer exists, ...)
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise SwinzooError(f"{ckpt} is truncated or corrupt ({why}); {fix}") from None
    if not isinstance(state, dict) or "state_dict" not in state or not isinstance(state.get("global_step"), int):
        raise SwinzooError(f"{ckpt} is not a training checkpoint written by `swinzoo finetune` (no state_dict and "
                           f"global_step); {fix}")
    total_batch = (state.get("hyper_parameters") or {}).get("total_batch")
    return ResumePoint(state["global_step"], epochs_done(state), total_batch if isinstance(total_batch, int) else None,
                       optimizer_group_sizes(state))


def optimizer_group_sizes(state: dict) -> tuple[int, ...] | None:
    """The parameter count of each group of a Lightning checkpoint's (first) optimizer; None where it has none."""
    try:
        return tuple(len(g["params"]) for g in state["optimizer_states"][0]["param_groups"])
    except (KeyError, IndexError, TypeError):
        return None


def check_optimizer_groups(point: ResumePoint, module, plan: Plan, command: str) -> None:
    """Refuse, before training, a last.ckpt whose AdamW state is grouped otherwise than this swinzoo groups the
    model's parameters (Lightning's restore stops with "a parameter group that doesn't match"): a run written before
    the weight-decay groups changed (SimMIM's follow the official pretraining since 2026-12-04: bias tables, cpb_mlp
    and logit_scale decayed). Its weights go on in a new run. `module`: the SwinClassifier or SimMIMPretrainer
    about to fit, grouped as its configure_optimizers will."""
    grouped = param_groups(module.model, 0.0, 0.0, module.layer_decay, module.param_ndims)
    groups = tuple(len(g["params"]) for g in grouped)
    if point.optimizer_groups is None or point.optimizer_groups == groups:
        return
    ckpt = Path(plan.out) / CKPT_FILE
    raise SwinzooError(f"--resume {plan.out}: {ckpt} holds AdamW state for parameter groups of "
                       f"{list(point.optimizer_groups)} tensors, this swinzoo forms {list(groups)} (an earlier "
                       f"swinzoo's weight-decay groups); continue from its weights in a new run: swinzoo {command} "
                       f"--from {shlex.quote(str(ckpt))} --data {shlex.quote(plan.data)} --out NEW")


def check_total_batch(point: ResumePoint, total_batch: int, out: Path) -> None:
    """Refuse a resume whose Trainer makes another total batch than the checkpoint's (--devices auto on a machine
    with another device count): last.ckpt brings back the lr and schedule of the old one. For the caller, once the
    Trainer is built and before it writes anything."""
    if point.total_batch is not None and total_batch != point.total_batch:
        raise SwinzooError(f"--resume {out}: the run trained with total batch {point.total_batch} (batch x devices x "
                           f"nodes x accumulation), this resume would train with {total_batch}; resume with as many "
                           f"devices visible (CUDA_VISIBLE_DEVICES), or start a new run with --from "
                           f"{run_weights(out)}")


def run_weights(out: Path) -> Path:
    """What a new run takes --from to go on from run folder `out`: its model.safetensors, or where a run killed
    before its first save has none, its last.ckpt."""
    weights = out / "model.safetensors"
    return weights if weights.is_file() or not (out / CKPT_FILE).is_file() else out / CKPT_FILE


def epochs_done(state: dict) -> int:
    """The epochs a checkpoint counts as done, as Lightning does when it checks max_epochs (its epoch progress);
    the `epoch` key is the index of the epoch under way, the same at the end of an epoch as in its middle."""
    try:
        done = state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
    except (KeyError, TypeError):
        done = state.get("epoch")
    return done if isinstance(done, int) else 0


def check_resume_flags(args, run_file: Path, plan: Plan | None = None) -> None:
    """Refuse run flags given beside --resume: silently running the old plan instead would look like they had been
    applied. `args` is a FinetuneOptions or PretrainOptions; a flag counts as given when it differs from its
    default, and is accepted when it repeats what `plan` (the run's run.json) recorded: a command line replayed with
    --resume added asks for no change."""
    defaults = type(args)()
    fixed = [name for name in vars(defaults)
             if name not in RESUME_CHANGES and getattr(args, name) != getattr(defaults, name)
             and not (plan is not None and same_as_recorded(getattr(args, name), recorded(plan, name)))]
    if fixed:
        # the recorded values worth a line: not a recipe's whole mapping
        was = [f"{flag_name(name)} {recorded(plan, name)}" for name in fixed
               if plan is not None and isinstance(recorded(plan, name), str | int | float)]
        ran = f"; it ran with {', '.join(was)}" if was else ""
        raise SwinzooError(f"{', '.join(map(flag_name, fixed))} cannot change a resumed run ({run_file} fixes it{ran}; "
                           f"--max-steps, --epochs and --trainer.* can): drop them, or start a new run with --from "
                           f"{run_weights(run_file.parent)}")


def check_same_accumulation(was: dict, now: dict, recipe_value: int, run_file: Path) -> None:
    """Refuse another accumulate_grad_batches: it changes the total batch that scaled the run's lr, while last.ckpt
    brings back the optimizer and schedule of the old one, so the run would log one lr and train with another.
    (--devices and --num-nodes, the other factors, are run flags that cannot change.)"""
    key = "accumulate_grad_batches"
    old, new = was.get(key, recipe_value), now.get(key, recipe_value)
    if new != old:
        raise SwinzooError(f"--trainer.{key} {new} cannot change a resumed run ({run_file} fixes it: it ran with "
                           f"{old}, and its total batch set the lr that last.ckpt holds): resume with "
                           f"--trainer.{key} {old} or without it, or start a new run with --from "
                           f"{run_weights(run_file.parent)}")


_UNRECORDED = object()


def recorded(plan: Plan, name: str):
    """What run.json holds for the options field `name` (`_UNRECORDED` for a field it keeps only inside the recipe
    or not at all)."""
    if name in DATA_OPTION_KEYS:
        return plan.data_options.get(name)
    return getattr(plan, name, _UNRECORDED)


def same_as_recorded(value, was) -> bool:
    if value == was:
        return True
    # a path spelt another way (./runs/a/model.safetensors, absolute) is the same source while it names the same file
    return isinstance(value, str) and isinstance(was, str) and same_file(value, was)


def check_resume_target(out: Path, point: ResumePoint, max_steps: int | None, epochs: int | None) -> None:
    """Refuse a resume that cannot train: of a finished run (it wrote metrics.json: its step or epoch budget was
    spent, or a callback stopped it early) unless it asks for more steps or epochs than the checkpoint holds, and of
    any run to fewer steps or epochs than its checkpoint holds. A run killed after its last step but before its
    outputs may resume: it has its outputs to write."""
    behind = ((max_steps is not None and max_steps < point.step) or (epochs is not None and epochs < point.epoch))
    more = (max_steps is not None and max_steps > point.step) or (epochs is not None and epochs > point.epoch)
    finished = (out / METRICS_FILE).exists()
    if behind or (finished and not more):
        state = "finished" if finished else "stands"
        epochs = f"{point.epoch} epoch{'' if point.epoch == 1 else 's'}"
        raise SwinzooError(f"--resume {out}: the run {state} at step {point.step}, after {epochs}; give "
                           f"--max-steps above {point.step} or --epochs above {point.epoch} to train on")


class ResumeStart(Callback):
    """Where a resumed fit starts training: refuses a resume whose epochs end before the step it stands at
    (`check_epoch_budget`), then writes the resumed plan to run.json (`record_resume`), so that a refused resume
    leaves the run as it was. An epoch's steps are known once Lightning has its training loader: they follow the
    batch, the devices and --trainer.limit_train_batches."""

    def __init__(self, plan: Plan, point: ResumePoint, command: str) -> None:
        self.plan, self.point, self.command = plan, point, command
        self.recorded = False

    def on_train_start(self, trainer, pl_module) -> None:
        try:
            check_epoch_budget(trainer, Path(self.plan.out))
        except SwinzooError:
            if trainer.is_global_zero:
                discard_resume_log(trainer)
            raise
        self.record(trainer)

    def on_fit_end(self, trainer, pl_module) -> None:
        # a killed run resumed with --max-steps at the step it stands at has no step left: Lightning skips the
        # training loop, and on_train_start with it, but its outputs are written from this plan
        self.record(trainer)

    def record(self, trainer) -> None:
        if trainer.is_global_zero and not self.recorded:
            record_resume(self.plan, self.point, self.command, run_environment(trainer))
        self.recorded = True


def check_epoch_budget(trainer, out: Path) -> None:
    """Refuse what `check_resume_target` cannot see before the Trainer has its loader: an epoch-bound resume whose
    epochs end at or before the step the run stands at (finished) or before it, and one stopped further into an epoch
    than an epoch's batches are now. Lightning trains on there (to the end of the loader's pass, then any epochs
    left), past the steps its schedule spans."""
    if trainer.max_steps != -1 or trainer.num_training_batches == math.inf:
        return  # --max-steps bounds the run whatever its epochs are
    budget, step = trainer.estimated_stepping_batches, trainer.global_step
    finished = (out / METRICS_FILE).exists()
    if step > budget or (finished and step >= budget):
        epochs, per_epoch = trainer.max_epochs, budget // max(trainer.max_epochs, 1)
        raise SwinzooError(f"--resume {out}: the run {'finished' if finished else 'stands'} at step {step}, and "
                           f"{epochs} epoch{'' if epochs == 1 else 's'} of {per_epoch} step"
                           f"{'' if per_epoch == 1 else 's'} ends at step {budget} (an epoch's steps follow the "
                           f"batch, the devices and --trainer.limit_train_batches); give --max-steps above {step}")
    progress = trainer.fit_loop.epoch_loop.batch_progress
    within = 0 if progress.is_last_batch else progress.current.ready
    if within > trainer.num_training_batches and not trainer.fit_loop.done:
        raise SwinzooError(f"--resume {out}: the run stands {within} batches into an epoch, and an epoch has "
                           f"{trainer.num_training_batches} now (--trainer.limit_train_batches): Lightning would "
                           f"train past that epoch's end; give --trainer.limit_train_batches {within} or more, or "
                           f"--max-steps above {step} in place of --epochs")


def discard_resume_log(trainer) -> None:
    """Remove the CSV log folder a refused resume made (logs/resumed-at-S, new: `log_version`)."""
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger) and str(logger.version).startswith("resumed-at-"):
            shutil.rmtree(logger.log_dir, ignore_errors=True)
            logger._experiment = None  # else Lightning's finalize("failed") writes its hparams.yaml there again


def record_resume(plan: Plan, point: ResumePoint, command: str, environment: dict[str, str]) -> None:
    """Write the resumed plan back to OUT/run.json (rank zero, after the Trainer is built): the steps, epochs and
    Trainer options this resume changed hold for the next resume too, and its provenance lists the resumes, each
    with its own environment (`run_environment`; the run's own stays as its start recorded it)."""
    entry = {"step": point.step, "command": command, "environment": environment}
    plan.provenance = {**plan.provenance, "resumed": [*plan.provenance.get("resumed", []), entry]}
    write_plan(plan, Path(plan.out) / RUN_FILE)

