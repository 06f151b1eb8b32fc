"""Ctrl-C and SIGTERM for a main thread that cannot take them.

Python runs a signal handler only between bytecodes of the main thread. While that thread waits in C++ with the GIL
released (torch's rendezvous for a peer node that never joins, a collective whose peer died) the handler waits with
it: for a process group that is 30 minutes, and only SIGKILL stops the run, leaving its folder behind. The CLI arms a
watchdog thread that hears every signal through `signal.set_wakeup_fd`. When the main thread has not taken every
SIGTERM and SIGINT that came `GRACE_S` seconds after the last of them, the watchdog runs the cleanups registered
with `on_hard_stop` (a new run's folder, a temporary file), prints the line an interrupt prints and ends the process
with 130.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

GRACE_S = 5.0  # longer than any one torch op of a step takes on a CPU; a wait for a peer lasts minutes
STOP_SIGNALS = {int(signal.SIGTERM), int(signal.SIGINT)}

_cleanups: list[Callable[[], object]] = []
_lock = threading.Lock()
_armed_pid: int | None = None


@contextmanager
def on_hard_stop(cleanup: Callable[[], object] | None) -> Iterator[None]:
    """Run `cleanup` if the watchdog ends the process inside this block (the main thread's own unwinding does its
    cleaning otherwise). None registers nothing."""
    if cleanup is None:
        yield
        return
    with _lock:
        _cleanups.append(cleanup)
    try:
        yield
    finally:
        with _lock:
            if cleanup in _cleanups:
                _cleanups.remove(cleanup)


def arm(taken: Callable[[], int], grace_s: float = GRACE_S) -> None:
    """From the main thread of the CLI process, after its handlers for SIGTERM and SIGINT are installed: `taken()`
    counts the stop signals the main thread's handler has run for. A second Ctrl-C while the first one's unwinding
    waits in C++ (a process group torn down with a dead peer) is not taken either, and ends the process."""
    global _armed_pid
    if _armed_pid == os.getpid() or not hasattr(os, "register_at_fork"):  # Windows: no fork, no pipe wakeup fd
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # a full pipe drops a byte; it never blocks the C-level handler
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    _armed_pid = os.getpid()
    # a forked loader worker inherits the wakeup fd, and its own SIGTERM would otherwise read as the parent's
    os.register_at_fork(after_in_child=lambda: _disarm_in_child(read_fd, write_fd))
    threading.Thread(target=_watch, args=(read_fd, taken, grace_s), name="swinzoo-hard-stop", daemon=True).start()


def _disarm_in_child(read_fd: int, write_fd: int) -> None:
    global _armed_pid
    if _armed_pid is None or _armed_pid == os.getpid():
        return
    _armed_pid = None  # a fork of this child runs the hook too: by then these numbers may be the child's own files
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:  # forked from a thread other than the main one: that thread is the child's main thread
        pass
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


def _watch(read_fd: int, taken: Callable[[], int], grace_s: float) -> None:
    came = 0
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        if not data:
            return
        stops = sum(byte in STOP_SIGNALS for byte in data)  # not SIGCHLD of a loader worker and the like
        if not stops:
            continue
        came += stops
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            # Python runs the handler once for signals that came together: that is the user asking twice to stop
            if taken() >= came:
                break
            time.sleep(0.05)
        else:
            _stop()


def _stop() -> None:
    with _lock:
        cleanups = list(reversed(_cleanups))
    for cleanup in cleanups:
        try:
            cleanup()
        except Exception:  # the process ends either way; one failed cleanup must not keep the others from running
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    try:
        os.write(2, b"error: interrupted\n")
    except OSError:
        pass
    os._exit(130)
