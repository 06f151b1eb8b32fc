"""The output folder of a run: checked before the run (`check_out`), and cleaned up when a run fails before its
first checkpoint (`RunFolder`), so that a rerun with the same --out is accepted."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from swinzoo.errors import SwinzooError
from swinzoo.io import atomic_path
from swinzoo.train.options import CKPT_FILE, CONFIG_FILE, RUN_FILE, Plan, is_plain


def is_stale_run(out: Path) -> bool:
    """A folder left by a run killed before its first checkpoint: run.json of a run, its config and logs, nothing
    else."""
    names = set(os.listdir(out))
    temps = {n for n in names if n.startswith(".") and "tmp" in n}  # atomic writes cut short (swinzoo.io)
    if RUN_FILE not in names or not names <= {RUN_FILE, CONFIG_FILE, "logs"} | temps:
        return False
    try:
        data = json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"out", "source", "config", "recipe"} <= set(data)


def check_out(out: Path) -> None:
    """--out must be a folder path (new, empty, or left by a run that never checkpointed) where we can write."""
    if out.is_symlink() and not out.exists():  # mkdir cannot make a folder through it
        raise SwinzooError(f"--out {out} is a link to {os.readlink(out)}, which does not exist; create that folder, "
                           "or pick another --out")
    if out.exists() and not out.is_dir():
        raise SwinzooError(f"--out {out} is a file; give a folder path (it is created) or remove the file")
    if out.is_dir() and any(out.iterdir()) and not is_stale_run(out):
        raise SwinzooError(f"--out {out} is not empty; continue that run with --resume {out} or pick another --out")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SwinzooError(f"--out {out}: {parent} is a file, not a folder; pick another --out")
    try:  # os.access is not enough: root, read-only mounts, ACLs
        os.rmdir(tempfile.mkdtemp(prefix=".swinzoo-write-check-", dir=parent))
    except OSError as e:
        raise SwinzooError(f"--out {out}: cannot create folders in {parent} ({e.strerror or e}); pick a writable "
                           "--out") from None


class RunFolder:
    """The output folder of a new run (rank zero): created with run.json; `discard()` removes what this run
    created when it failed before writing a checkpoint: the folder if it made it (and the empty parents it made),
    else only the entries it added to the (empty) folder the user made."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.created: list[Path] = []  # folders this run creates, outermost first
        p = out
        while not p.exists() and p != p.parent:
            self.created.insert(0, p)
            p = p.parent
        self.before: set[str] = set()

    def create(self, plan: Plan, config_text: str = "") -> None:
        """Make the folder with run.json (what --resume reads) and config.yaml (what --config replays)."""
        if self.out.is_dir() and is_stale_run(self.out):  # left by a run killed before its first checkpoint
            for name in os.listdir(self.out):
                remove_entry(self.out / name)
        self.before = set(os.listdir(self.out)) if self.out.is_dir() else set()
        self.out.mkdir(parents=True, exist_ok=True)
        write_plan(plan, self.out / RUN_FILE)
        if config_text:
            with atomic_path(self.out / CONFIG_FILE) as tmp:
                tmp.write_text(config_text)

    def resumable(self) -> bool:
        return (self.out / CKPT_FILE).is_file() or (self.out / "model.safetensors").is_file()

    def discard(self) -> None:
        """Remove what this run created, unless it got as far as a checkpoint (then --resume continues it)."""
        if not self.out.is_dir() or self.resumable():
            return
        if self.created:
            shutil.rmtree(self.out, ignore_errors=True)
            for parent in reversed(self.created[:-1]):
                try:
                    parent.rmdir()  # only when empty: another run may have put its folder there meanwhile
                except OSError:
                    break
        else:
            for name in set(os.listdir(self.out)) - self.before:
                remove_entry(self.out / name)


def write_plan(plan: Plan, path: Path) -> None:
    """OUT/run.json, atomically; Trainer objects built in Python cannot be recorded (a --resume gets them again from
    its caller)."""
    plain_trainer = {k: v for k, v in plan.trainer.items() if is_plain(v)}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({**plan.__dict__, "trainer": plain_trainer}, indent=1))


def remove_entry(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def is_rank_zero() -> bool:
    # imported here: `predict` reaches this module (through train.checks) and needs no Lightning
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0
