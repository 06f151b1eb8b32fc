"""`finetune` / `pretrain` started on two "nodes" on this machine (one shared folder, as a cluster's NFS), over gloo:
Lightning's bare-metal way (the same command on each node with MASTER_ADDR, MASTER_PORT and NODE_RANK set) and
torchrun's, and SLURM's variables. One run folder, rank zero's, written once; every process ends."""

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .hub_emulator import HubEmulator

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--max-steps", "2", "--batch-size", "4", "--num-workers", "0", "--trainer", "limit_val_batches=2"]
# what a launcher around pytest may have set, which would make these processes part of its world instead
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
                      "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "_SWINZOO_RUN_OUT",
                      "_SWINZOO_IMAGES_CHECKED", "JSM_NAMESPACE_RANK", "LSB_JOBID")
WAIT = 150  # seconds a two-node run of 2 steps may take on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES and not k.startswith("SLURM_")}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def node(rank: int, port: int, cwd: Path, *args, devices: int = 1, env: dict | None = None) -> subprocess.Popen:
    """One node's `swinzoo ARGS --num-nodes 2`, started by hand (Lightning's bare-metal launch)."""
    env = clean_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK=str(rank), **(env or {}))
    command = [sys.executable, "-m", "swinzoo", *map(str, args), "--num-nodes", "2", "--devices", str(devices),
               "--accelerator", "cpu", "--strategy", "ddp"]
    return subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(procs: list[subprocess.Popen], timeout: float = WAIT) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each; a process still running after `timeout` is killed with its children
    (the ranks Lightning started) and reported as 'hung'."""
    deadline, results = time.monotonic() + timeout, []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((proc.returncode, out, err))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            results.append((-1, out, err + "\n[hung: killed by the test]"))
    return results


def locked(out: Path) -> bool:
    """Whether a process holds the run lock of `out` (swinzoo.train.folder.RunLock)."""
    try:
        fd = os.open(out / ".swinzoo-run.lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def two_nodes(cwd: Path, args: list, out: Path, devices: int = 1, env: dict | None = None) -> list[tuple]:
    """Node 1 started once node 0 holds the run's folder (its lock): nodes never start at once, and this is the
    order in which node 1 would find the folder taken."""
    port = free_port()
    first = node(0, port, cwd, *args, devices=devices, env=env)
    deadline = time.monotonic() + WAIT
    while not locked(out) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    second = node(1, port, cwd, *args, devices=devices, env=env)
    return finish([first, second])


def assert_all_ended(results) -> None:
    for rank, (code, _, err) in enumerate(results):
        assert code == 0, f"node {rank}: exit {code}\n{err[-3000:]}"


def test_finetune_by_hand_on_two_nodes_one_folder_written_once_pushed_once_and_resumed(tmp_path):
    out = tmp_path / "run"
    with HubEmulator(token="hf_test") as hub:
        hf = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf_home"), "HF_TOKEN": "hf_test",
              "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "0"}
        results = two_nodes(tmp_path, ["finetune", "--from", "swin_n_64", "--data", "shapes", *QUICK, "--out", out,
                                       "--push-to", "acme/two-nodes"], out, env=hf)
        assert_all_ended(results)
        assert hub.calls.count("commit") == 1
    model = load_file(out / "model.safetensors")
    one_node = tmp_path / "one_node"  # the same run on one node's two processes: the same weights, bit for bit
    proc = subprocess.run([sys.executable, "-m", "swinzoo", "finetune", "--from", "swin_n_64", "--data", "shapes",
                           *QUICK, "--out", one_node, "--devices", "2", "--accelerator", "cpu", "--strategy", "ddp"],
                          env=clean_env(), capture_output=True, text=True, timeout=WAIT, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((one_node / "metrics.json").read_text()) == json.loads((out / "metrics.json").read_text())
    assert all(torch.equal(tensor, model[name]) for name, tensor in load_file(one_node / "model.safetensors").items())
    shutil.rmtree(one_node)
    (_, first, _), (_, second, second_err) = results
    assert "total batch 8" in first and "wrote " in first  # 4 per process x 2 nodes
    assert second.strip() == "" and second_err.strip() == ""  # the plan and the result once, on rank zero's node
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and metrics["n"] == 16  # both nodes' validation images, synced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no second folder from the other node

    # --resume OUT on both nodes, node 1 once node 0 holds the run (it was refused: "is in use")
    results = two_nodes(tmp_path, ["finetune", "--resume", out, "--max-steps", "3"], out)
    assert_all_ended(results)
    assert "at global step 2" in results[0][1] and results[1][1].strip() == ""
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 3
    assert len(json.loads((out / "run.json").read_text())["provenance"]["resumed"]) == 1  # recorded once


def test_pretrain_by_hand_on_two_nodes(tmp_path):
    out = tmp_path / "simmim"
    results = two_nodes(tmp_path, ["pretrain", "--from", "swin_n_64", "--data", "shapes", *QUICK, "--out", out], out)
    assert_all_ended(results)
    assert "wrote " in results[0][1] and results[1][1].strip() == "" and results[1][2].strip() == ""
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and metrics["n"] == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["simmim"]


def torchrun_node(rank: int, port: int, cwd: Path, *args) -> subprocess.Popen:
    """One node's `torchrun --nnodes 2 --nproc-per-node 1 -m swinzoo ARGS`, meeting the other at 127.0.0.1:port."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank",
               str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "swinzoo", *map(str, args),
               "--num-nodes", "2", "--devices", "1", "--accelerator", "cpu", "--strategy", "ddp"]
    return subprocess.Popen(command, env=clean_env(), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def test_finetune_under_torchrun_on_two_nodes_without_out(tmp_path):
    """No --out: rank zero picks runs/SRC-RES; the rank on the other node, started by its own torchrun, has no
    folder passed on to it (it crashed: 'expected str, bytes or os.PathLike object, not NoneType')."""
    (tmp_path / "runs/swin_n_64-64").mkdir(parents=True)  # an earlier run's: this one is numbered past it
    port = free_port()
    results = finish([torchrun_node(rank, port, tmp_path, "finetune", "--from", "swin_n_64", "--data", "shapes",
                                    *QUICK) for rank in (0, 1)])
    assert_all_ended(results)
    out = tmp_path / "runs/swin_n_64-64-2"
    assert "out runs/swin_n_64-64-2" in results[0][1] and results[1][1].strip() == ""
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 2
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["swin_n_64-64", "swin_n_64-64-2"]


def test_pretrain_under_slurm_on_two_nodes_without_out(tmp_path):
    """Two tasks as srun starts them (SLURM_PROCID, SLURM_NODEID, ...; Lightning's SLURMEnvironment), no --out."""
    port = free_port()
    slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2", "SLURM_JOB_NAME": "train",
             "SLURM_JOB_ID": "4242", "SLURM_NODELIST": "localhost", "MASTER_PORT": str(port)}
    command = [sys.executable, "-m", "swinzoo", "pretrain", "--from", "swin_n_64", "--data", "shapes", *QUICK,
               "--num-nodes", "2", "--devices", "1", "--accelerator", "cpu", "--strategy", "ddp"]
    procs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True,
                              env=clean_env(**slurm, SLURM_PROCID=str(rank), SLURM_NODEID=str(rank), SLURM_LOCALID="0"))
             for rank in (0, 1)]
    results = finish(procs)
    assert_all_ended(results)
    assert "wrote runs/swin_n_64-simmim-64/model.safetensors" in results[0][1] and results[1][1].strip() == ""
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["swin_n_64-simmim-64"]


@pytest.mark.parametrize("verb, sig, to", [("finetune", signal.SIGTERM, "the process"),
                                           ("pretrain", signal.SIGINT, "its process group")])
def test_a_node_whose_peer_never_joins_stops_on_a_signal(verb, sig, to, tmp_path):
    """Node 0 alone waits in torch's rendezvous, in C++, where Python never runs the CLI's handler: SIGTERM and
    Ctrl-C did nothing for the 30 minutes of the process group's timeout, and SIGKILL left the run folder."""
    out = tmp_path / "run"
    proc = node(0, free_port(), tmp_path, verb, "--from", "swin_n_64", "--data", "shapes", *QUICK, "--out", out)
    deadline = time.monotonic() + WAIT
    while not locked(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # from the folder made to the wait for the peer
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    if to == "the process":
        proc.send_signal(sig)
    else:
        os.killpg(proc.pid, sig)
    [(code, out_text, err)] = finish([proc], timeout=30)
    assert code == 130, err[-2000:]
    assert "node 0 of 2 waits at 127.0.0.1:" in out_text  # said, not a silent wait of up to 30 minutes
    assert err.strip().splitlines()[-1] == "error: interrupted"
    assert not out.exists()  # the run had not begun: nothing to resume, nothing left
