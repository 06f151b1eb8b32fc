"""`swinzoo.hard_stop`: the watchdog that ends the CLI on SIGTERM / Ctrl-C when the main thread waits in C++, and
only then. Each case runs in a fresh process, armed as `cli.main` arms it (a wakeup fd is a process-wide setting)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import os, signal, socket, sys, time
from swinzoo import errors, hard_stop

def handler(signum, frame):  # as cli._terminated: counted, then unwound as Ctrl-C
    errors.note_signal()
    raise KeyboardInterrupt

signal.signal(signal.SIGTERM, handler)
signal.signal(signal.SIGINT, handler)
hard_stop.arm(taken=errors.signals_taken, grace_s=1.0)
marker = sys.argv[1]

def wait_in_cpp():
    import datetime
    import torch.distributed as dist
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    print("ready", flush=True)
    dist.TCPStore("127.0.0.1", port, 2, True, datetime.timedelta(seconds=60))  # a peer that never comes
"""


def start(body: str, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    marker = tmp_path / "marker"
    script = PRELUDE + textwrap.dedent(body)
    proc = subprocess.Popen([sys.executable, "-c", script, str(marker)], cwd=tmp_path, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "ready", proc.communicate()[1][-2000:]
    return proc, marker


def ended(proc: subprocess.Popen, timeout: float = 20) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        return -1, err + "[hung: killed by the test]"
    return proc.returncode, err


def test_a_signal_the_main_thread_cannot_take_runs_the_cleanups_and_exits_130(tmp_path):
    proc, marker = start("""
        with hard_stop.on_hard_stop(lambda: open(marker, "w").write("cleaned")):
            wait_in_cpp()
        """, tmp_path)
    time.sleep(1)  # into the C++ wait
    start_time = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code, err = ended(proc)
    assert code == 130, err
    assert err.strip().splitlines()[-1] == "error: interrupted"
    assert marker.read_text() == "cleaned"
    assert time.monotonic() - start_time < 10  # the grace of 1 s, not the store's timeout of 60


def test_a_signal_the_main_thread_takes_is_left_to_it(tmp_path):
    proc, marker = start("""
        print("ready", flush=True)
        try:
            with hard_stop.on_hard_stop(lambda: open(marker, "w").write("cleaned")):
                while True:
                    time.sleep(0.01)
        except KeyboardInterrupt:
            time.sleep(2.5)  # a slow shutdown in Python, past the grace: not the watchdog's to cut short
            sys.exit(3)
        """, tmp_path)
    proc.send_signal(signal.SIGTERM)
    code, err = ended(proc)
    assert code == 3, err
    assert not marker.exists() and "interrupted" not in err


def test_a_second_signal_while_the_first_ones_unwinding_waits_in_cpp_ends_the_process(tmp_path):
    proc, marker = start("""
        print("ready", flush=True)
        try:
            while True:
                time.sleep(0.01)
        except KeyboardInterrupt:
            wait_in_cpp()  # a process group torn down with a dead peer
        """, tmp_path)
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.5)  # past the grace: the first signal was taken, so the watchdog waits
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    code, err = ended(proc)
    assert code == 130, err


def test_a_forked_workers_signal_is_not_the_parents(tmp_path):
    """A data loader worker inherits the wakeup fd: its SIGTERM read as the parent's ended the parent."""
    proc, marker = start("""
        print("ready", flush=True)
        child = os.fork()
        if child == 0:
            try:
                time.sleep(30)
            finally:
                os._exit(0)
        time.sleep(0.5)
        os.kill(child, signal.SIGTERM)
        os.waitpid(child, 0)
        time.sleep(2.5)  # past the grace
        sys.exit(0)
        """, tmp_path)
    code, err = ended(proc)
    assert code == 0, err


def test_a_forked_worker_says_nothing_of_its_parent_hanging_up(tmp_path):
    """A loader worker's fd-sharing thread (multiprocessing.resource_sharer) printed a traceback when the main process,
    interrupted by Ctrl-C to the group, hung up mid-handshake: under the one `error: interrupted` line. The CLI's
    forks stay quiet about a peer gone (EOFError, ConnectionError); any other error still prints."""
    script = textwrap.dedent("""
        import os, sys
        from swinzoo import cli
        cli.quiet_forks()
        child = os.fork()
        if child == 0:
            for error in (EOFError("peer gone"), ConnectionResetError("reset"), ValueError("a real bug")):
                try:
                    raise error
                except Exception:
                    sys.excepthook(*sys.exc_info())
            sys.stderr.flush()
            os._exit(0)
        os.waitpid(child, 0)
        try:
            raise EOFError("in the main process")
        except EOFError:
            sys.excepthook(*sys.exc_info())
        """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, text=True, capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "a real bug" in proc.stderr and "in the main process" in proc.stderr
    assert "peer gone" not in proc.stderr and "reset" not in proc.stderr


def test_a_fork_of_a_forked_worker_keeps_its_own_files(tmp_path):
    """The disarm closed the parent's pipe in every fork, a fork of a worker too, where those numbers were by then
    the worker's own files (a dataset's multiprocessing pool forked from a worker lost them)."""
    proc, marker = start("""
        print("ready", flush=True)
        child = os.fork()
        if child == 0:
            read_end, write_end = os.pipe()  # the lowest free numbers: those the disarm closed here
            grandchild = os.fork()
            if grandchild == 0:
                try:
                    os.fstat(read_end), os.fstat(write_end)
                    os._exit(0)
                except OSError:
                    os._exit(1)
            os._exit(os.waitstatus_to_exitcode(os.waitpid(grandchild, 0)[1]))
        sys.exit(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
        """, tmp_path)
    code, err = ended(proc)
    assert code == 0, err
