"""The processes of one run that a launcher started, each running the command from the top: torchrun, SLURM's
srun, or by hand on every node (MASTER_ADDR, MASTER_PORT, NODE_RANK). Each plans the run on its own (its node's
data, its devices, its copy of the source), and one that fails there would leave the others waiting in Lightning's
rendezvous until torch's process-group timeout (30 minutes). So they check in with each other (`CheckIn`) before
rank zero's first write and before any trains, on the store the process group uses next (rank zero's TCPStore,
or torchrun's agent's): one that failed posts its error there, and every other one stops with it.

The processes Lightning starts itself (a node's other devices under --devices N, with LOCAL_RANK set) do not
check in: their parent did, and Lightning ends the run when one of them fails."""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from swinzoo.errors import SwinzooError
from swinzoo.run_folder import RUN_FILE

POLL_S = 0.2
OK = "ok"
# the stores this process serves as rank zero: kept for the life of the process, as the other processes may still
# be reading them, and torch's process group (multi-tenant on the same port) serves from the same one
SERVED: dict[tuple[str, int], object] = {}
# runs checked in by this process: a library caller may run several, under one launch
RUN_COUNT = itertools.count()


@dataclass(frozen=True)
class Group:
    """The processes that check in: this one's place among them, their count, the store's address, whether this
    process serves it, and the key prefix of this run's check-in."""

    rank: int
    size: int
    host: str
    port: int
    serves: bool
    prefix: str


def launched_group(num_nodes: int) -> Group | None:
    """The processes a launcher started with this one, or None: it runs alone, or Lightning started it. By hand
    (no launcher Lightning detects), one process a node checks in: --num-nodes of them."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    env = os.environ
    run = next(RUN_COUNT)
    if TorchElasticEnvironment.detect():
        rank, size = int(env["RANK"]), int(env["WORLD_SIZE"])
        host, port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
        serves = rank == 0 and env.get("TORCHELASTIC_USE_AGENT_STORE") != "True"  # else torchrun's agent serves it
        prefix = f"{env.get('TORCHELASTIC_RUN_ID', '')}/{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    elif SLURMEnvironment.detect():
        slurm = SLURMEnvironment()
        rank, size = slurm.global_rank(), slurm.world_size()
        host, port, serves, prefix = slurm.main_address, slurm.main_port, rank == 0, env.get("SLURM_JOB_ID", "")
    elif {"MASTER_ADDR", "MASTER_PORT", "NODE_RANK"} <= set(env) and "LOCAL_RANK" not in env:
        rank, size = int(env["NODE_RANK"]), num_nodes
        host, port, serves, prefix = env["MASTER_ADDR"], int(env["MASTER_PORT"]), rank == 0, ""
    else:
        return None
    return Group(rank, size, host, port, serves, f"swinzoo/check-in/{prefix}/{run}") if size > 1 else None


def expected_nodes(args) -> int:
    """--num-nodes as known before the plan: the flag, or a resumed run's run.json (read leniently: it is checked
    where it is planned)."""
    if isinstance(args.num_nodes, int) and args.num_nodes > 1:
        return args.num_nodes
    try:
        recorded = json.loads((Path(args.resume) / RUN_FILE).read_text()).get("num_nodes") if args.resume else 1
    except (OSError, ValueError, AttributeError):
        return 1
    return recorded if isinstance(recorded, int) and recorded > 0 else 1


class CheckIn:
    """Around a run (`with CheckIn(args) as check_in:`): `ready(num_nodes)` once this process has planned and is
    about to train posts that it is, waits for the others, and raises when one of them failed. Leaving the block by
    an exception before `ready` posts it, so the others stop rather than wait."""

    def __init__(self, args) -> None:
        self.args = args
        self.done = False

    def __enter__(self) -> CheckIn:
        return self

    def __exit__(self, kind, error, tb) -> None:
        if kind is None or self.done:
            return
        self.done = True
        try:
            group = launched_group(expected_nodes(self.args))
        except (KeyError, ValueError):  # a launcher variable Lightning refuses: the error in flight says so
            return
        if group is not None:
            why = str(error) if isinstance(error, SwinzooError) else (
                "interrupted" if isinstance(error, KeyboardInterrupt) else f"unexpected {kind.__name__}: {error}")
            post(group, " ".join(why.split()) or kind.__name__)

    def ready(self, num_nodes: int) -> None:
        self.done = True
        group = launched_group(num_nodes)
        if group is not None:
            failed = post(group, OK)
            if failed:
                rank, why = failed
                raise SwinzooError(f"rank {rank} of this {group.size}-process launch stopped before training: {why}; "
                                   "this process stops with it, nothing written")


def post(group: Group, status: str) -> tuple[int, str] | None:
    """Post this process's status ("ok", or why it failed); when "ok", wait until every process of `group` has
    posted one (up to torch's process-group timeout) and return the first failure posted (rank, why), if any. A
    failed process serving the store waits for the others to read it there (the store ends with the process),
    unless it was interrupted."""
    from torch.distributed import TCPStore
    from torch.distributed.constants import default_pg_timeout

    key, count = f"{group.prefix}/rank-", f"{group.prefix}/read"
    keys = [f"{key}{rank}" for rank in range(group.size)]
    deadline = time.monotonic() + default_pg_timeout.total_seconds()
    try:
        store = SERVED.get((group.host, group.port)) if group.serves else None
        if store is None:  # a client waits for the server to be up, as torch's rendezvous would
            store = TCPStore(group.host, group.port, None, group.serves, default_pg_timeout, wait_for_workers=False,
                             multi_tenant=True)
            if group.serves:
                SERVED[(group.host, group.port)] = store
        store.set(f"{key}{group.rank}", status)
        if status != OK:
            if not group.serves:
                store.add(count, 1)
            while group.serves and status != "interrupted" and int(store.add(count, 0)) < group.size - 1 and (
                    time.monotonic() < deadline):
                time.sleep(POLL_S)
            return None
        while not store.check(keys):  # short polls: Ctrl-C is not held up in C++
            if time.monotonic() > deadline:
                raise SwinzooError(f"waited {default_pg_timeout} for the other processes of this launch to plan the "
                                   "run; start the command on every node")
            time.sleep(POLL_S)
        statuses = [store.get(k).decode(errors="replace") for k in keys]
        store.add(count, 1)
    except SwinzooError:
        raise
    except Exception as e:  # the store's host went away, refused, ...
        if status != OK:
            return None  # this process fails with its own error anyway
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise SwinzooError(f"lost the other processes of this launch at {group.host}:{group.port} while checking "
                           f"in before training ({why})") from None
    return next(((rank, s) for rank, s in enumerate(statuses) if s != OK), None)
