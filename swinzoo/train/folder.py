"""The output folder of a run: checked before the run (`check_out`), held by the one process running it
(`RunLock`), and cleaned up when a run fails before its first checkpoint (`RunFolder`), so that a rerun with the
same --out is accepted."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # no flock (Windows): runs are not guarded against a second process
    fcntl = None

from swinzoo.errors import SwinzooError
from swinzoo.hard_stop import on_hard_stop
from swinzoo.io import atomic_path
from swinzoo.json_text import strict_dumps
from swinzoo.run_folder import CKPT_FILE, CONFIG_FILE, METRICS_FILE, RUN_FILE
from swinzoo.train.options import OUT_ENV, Plan, is_plain


def is_stale_run(out: Path) -> bool:
    """A folder left by a run killed before its first checkpoint: run.json of a run, its config and logs, nothing
    else."""
    names = set(os.listdir(out))
    temps = {n for n in names if n.startswith(".") and "tmp" in n}  # atomic writes cut short (swinzoo.io)
    if RUN_FILE not in names or not names <= {RUN_FILE, CONFIG_FILE, "logs", LOCK_FILE} | temps:
        return False
    try:
        data = json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"out", "source", "config", "recipe"} <= set(data)


def write_results(plan: Plan, state_dict: dict, task: str, metrics: dict) -> Path:
    """A finished run's outputs: model.safetensors, its provenance recording `task`'s metrics and the command, and
    metrics.json, each written whole or not at all. Returns the model file."""
    from swinzoo.config import SwinConfig
    from swinzoo.converters.native import save_state_dict

    model = Path(plan.out) / "model.safetensors"
    provenance = {**plan.provenance, task: {**metrics, "command": plan.command}}
    save_state_dict(state_dict, SwinConfig.from_dict(plan.config), model, provenance)
    with atomic_path(Path(plan.out) / METRICS_FILE) as tmp:
        tmp.write_text(strict_dumps(metrics, indent=1))
    return model


def default_out(source: str, res: int, kind: str = "") -> Path:
    """runs/<source's name>[-kind]-<res>, numbered -2, -3, ... past the folders that exist."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).stem if "/" in source else source)
    base = Path("runs") / f"{stem}{'-' + kind if kind else ''}-{res}"
    out, k = base, 2
    while out.exists():
        out, k = base.with_name(f"{base.name}-{k}"), k + 1
    return out


def planned_out(out: str | None, default: Callable[[], Path]) -> Path:
    """The folder of a new run. Rank zero: --out or `default()` (numbered past the folders there), checked, and
    passed on to the processes Lightning's launcher starts (OUT_ENV). Another rank takes what rank zero passed, else
    --out; one that a launcher started itself (torchrun, SLURM, another node) without --out is told nothing, and
    `default()` stands in: it writes nothing in it (checkpoints, logs and outputs are rank zero's; Lightning
    broadcasts its ModelCheckpoint folder from rank zero)."""
    if not is_rank_zero():
        return Path(os.environ.get(OUT_ENV) or out or default())
    chosen = Path(out) if out else default()
    check_out(chosen)
    os.environ[OUT_ENV] = str(chosen)
    return chosen


def check_out(out: Path) -> None:
    """--out must be a folder path (new, empty, or left by a run that never checkpointed) where we can write."""
    if out.is_symlink() and not out.exists():  # mkdir cannot make a folder through it
        raise SwinzooError(f"--out {out} is a link to {os.readlink(out)}, which does not exist; create that folder, "
                           "or pick another --out")
    if out.exists() and not out.is_dir():
        raise SwinzooError(f"--out {out} is a file; give a folder path (it is created) or remove the file")
    check_not_running(out, "--out")
    if out.is_dir() and any(out.iterdir()) and not is_stale_run(out):
        raise not_empty(out)
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


def not_empty(out: Path) -> SwinzooError:
    return SwinzooError(f"--out {out} is not empty; continue that run with --resume {out} or pick another --out")


class RunFolder:
    """The output folder of a new run (rank zero): created with run.json, under this process's `RunLock`;
    `discard()` removes what this run created when it failed before writing a checkpoint: the folder if it made it
    (and the empty parents it made), else only the entries it added to the (empty) folder the user made."""

    def __init__(self, out: Path, lock: RunLock) -> None:
        self.out = out
        self.lock = lock
        self.created: list[Path] = []  # folders this run created, outermost first
        self.before: set[str] = set()
        self.owned = False  # the folder is this run's: locked, and empty or left by a killed run

    def create(self, plan: Plan, config_text: str = "") -> None:
        """Make the folder with run.json (what --resume reads) and config.yaml (what --config replays)."""
        self.created = make_folders(self.out)
        self.lock.acquire(self.out, "--out")
        # checked again under the lock: another run may have started or ended here since `check_out`
        names = set(os.listdir(self.out)) - {LOCK_FILE}
        if names and not is_stale_run(self.out):
            raise not_empty(self.out)
        for name in names:  # left by a run killed before its first checkpoint
            remove_entry(self.out / name)
        self.before, self.owned = set(), True
        write_plan(plan, self.out / RUN_FILE)
        if config_text:
            with atomic_path(self.out / CONFIG_FILE) as tmp:
                # its values are YAML-escaped; a surrogate (a path that is not UTF-8) in the comment atop is escaped
                tmp.write_text(config_text, encoding="utf-8", errors="backslashreplace")

    def resumable(self) -> bool:
        return (self.out / CKPT_FILE).is_file() or (self.out / "model.safetensors").is_file()

    def discard(self) -> None:
        """Remove what this run created, unless it got as far as a checkpoint (then --resume continues it), or the
        folder was never its own (another process held it)."""
        if not self.owned or not self.out.is_dir() or self.resumable():
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


def make_folders(out: Path) -> list[Path]:
    """mkdir -p `out`; the folders this call made, outermost first (one another process made meanwhile is not)."""
    missing = []
    p = out
    while not p.exists() and p != p.parent:
        missing.insert(0, p)
        p = p.parent
    made = []
    for folder in missing:
        try:
            folder.mkdir()
            made.append(folder)
        except FileExistsError:
            pass
    return made


# in a run's folder while a process runs it: flock'ed by that process, holding its pid and host
LOCK_FILE = ".swinzoo-run.lock"


class RunLock:
    """The one process (rank zero) that runs the run in a folder: it holds an exclusive flock on OUT/LOCK_FILE from
    before it writes there until it ends, and another `finetune --out` / `--resume` of that folder is refused. The
    kernel drops the lock when the process ends, kill -9 included, so none outlives its run. `RunLock.held()` gives
    one that is released when the block ends (a library call: the next run in this process may take the folder)."""

    def __init__(self) -> None:
        self.fd: int | None = None

    @classmethod
    @contextmanager
    def held(cls):
        lock = cls()
        try:
            yield lock
        finally:
            lock.release()

    def acquire(self, out: Path, flag: str) -> None:
        if fcntl is None or self.fd is not None:
            return
        try:
            fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise SwinzooError(f"{flag} {out}: cannot write in {out} ({e.strerror or e}); a run writes its "
                               "checkpoints and logs there: copy the run to a folder you can write and give that"
                               ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(fd)
            os.close(fd)
            raise SwinzooError(in_use(out, flag, holder)) from None
        except OSError:  # a file system without locks (some network mounts): the run goes on unguarded
            os.close(fd)
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # the lock file stays: removing it would let two processes lock two files
            self.fd = None


def lock_holder(fd: int) -> str:
    try:
        pid, _, host = os.pread(fd, 200, 0).decode(errors="replace").strip().partition(" ")
    except OSError:
        return "another swinzoo process"
    here = host in ("", socket.gethostname())
    return f"swinzoo process {pid}" + ("" if here else f" on {host}") if pid else "another swinzoo process"


def in_use(out: Path, flag: str, holder: str) -> str:
    if flag == "--resume":
        return f"--resume {out}: {out} is in use: {holder} is running this run; wait for it to end, then resume it"
    return (f"--out {out} is in use: {holder} is running a run there; wait for it to end (then --resume it), or pick "
            "another --out")


def check_not_running(out: Path, flag: str) -> None:
    """Refuse `out` early, before the run plans, while another process runs a run in it (`RunLock`)."""
    if fcntl is None or not (out / LOCK_FILE).is_file():
        return
    try:
        fd = os.open(out / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return  # `RunLock.acquire` says why, when the run gets there
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SwinzooError(in_use(out, flag, lock_holder(fd))) from None
    except OSError:
        pass
    finally:
        os.close(fd)


def write_plan(plan: Plan, path: Path) -> None:
    """OUT/run.json, atomically; Trainer objects built in Python cannot be recorded (a --resume gets them again from
    its caller)."""
    plain_trainer = {k: v for k, v in plan.trainer.items() if is_plain(v)}
    with atomic_path(path) as tmp:
        tmp.write_text(strict_dumps({**plan.__dict__, "trainer": plain_trainer}, indent=1))


def remove_entry(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def is_rank_zero() -> bool:
    """Whether this process is (or will be, once the Trainer numbers the processes) global rank zero, the one that
    plans aloud, takes the run's folder and writes it. Until the Trainer sets it, Lightning's rank comes from RANK,
    LOCAL_RANK or SLURM_PROCID alone, which the first process of another node started by hand (Lightning's
    bare-metal way: MASTER_ADDR, MASTER_PORT, NODE_RANK=1) does not have: its node is counted too, as Lightning
    counts it (NODE_RANK, else GROUP_RANK)."""
    # imported here: `predict` reaches this module (through train.checks) and needs no Lightning
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0 and launch_node_rank() == 0


def launch_node_rank() -> int:
    raw = os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0"))
    try:
        return int(raw)
    except ValueError:  # Lightning refuses it when it builds the Trainer
        return 0


@contextmanager
def run_in_folder(plan: Plan, resuming: bool, lock: RunLock, trainer, config_text: str,
                  print_plan: Callable[[], None]):
    """Around a run's fit and the writing of its results: rank zero prints the plan and (a new run) creates OUT
    with run.json; whatever fails or interrupts the block (Ctrl-C, SIGTERM) discards the new run's folder unless it
    got as far as a checkpoint (`RunFolder.discard`)."""
    folder = RunFolder(Path(plan.out), lock) if not resuming and is_rank_zero() else None
    try:
        if is_rank_zero():
            print_plan()
        if folder is not None:
            folder.create(plan, config_text)
        with interruptible(trainer, folder):
            yield
    except BaseException:  # incl. Ctrl+C: no half-made run left behind
        if folder is not None:
            folder.discard()
        raise


@contextmanager
def interruptible(trainer, folder=None):
    """Around `trainer.fit` / `validate`: Lightning turns Ctrl+C (and SIGTERM, which swinzoo raises as one) into
    `SystemExit(1)` after its own shutdown; the CLI gets its KeyboardInterrupt back (exit 130, `error: interrupted`).
    A new run's `folder` (a `RunFolder`) is discarded too when the signal finds the main thread waiting in C++ (a
    peer node that never joins) and the CLI's watchdog ends the process (`hard_stop`)."""
    try:
        with on_hard_stop(folder.discard if folder is not None else None):
            yield
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise

