"""The exception types the CLI turns into a one-line message and a non-zero exit code: 2 for bad input, 1 for the
network; and `exit_code`, the one place that turns them (and the disk's, and bugs') into that line."""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import functools
import inspect
import multiprocessing
import os
import re
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar


class SwinzooError(Exception):
    """A problem with the user's input: the message names it and says how to fix it."""


class NetworkError(SwinzooError):
    """The network or the Hub failed (unreachable, timed out, a server error): not the user's input (exit 1)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are a `SwinzooError` (one line through `exit_code`, no usage dump)."""

    def error(self, message: str):
        raise SwinzooError(f"{self.prog}: {message}; see `{self.prog} --help`")


DEBUG_ENV = "SWINZOO_DEBUG"
DEBUG_ON, DEBUG_OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
# what torch raises in the main process when a data loader worker was stopped by SIGTERM or SIGINT; with the whole
# process group signalled, it can come before the main process's own KeyboardInterrupt
WORKER_STOPPED = re.compile(r"DataLoader worker \(pid\(?s?\)? [\d, ]+\) is killed by signal: (Terminated|Interrupt)")
# set by the CLI's SIGTERM / SIGINT handler: whatever fails after it (a loader read in Lightning's shutdown finding its
# workers gone, "exited unexpectedly") is the interruption, not a failure to report
SIGNALLED = False
SIGNALS_TAKEN = 0


# true while a CLI command runs (`exit_code`: its messages name flags, what a shell user typed) or a `python_api`
# function (which spells them for its Python caller, once: not again in the functions it calls)
_SPELLED_ABOVE = contextvars.ContextVar("swinzoo_spelled_above", default=False)
# within a `python_api` function called from Python: its keywords, so that a note it prints can spell the flags it
# names as that caller writes them (`for_caller`); None in the CLI, whose notes name flags as typed
_PYTHON_CALLER: contextvars.ContextVar[tuple[dict[str, str], str | None] | None] = contextvars.ContextVar(
    "swinzoo_python_caller", default=None)
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)(?:\.([A-Za-z_]\w*))?")
P = ParamSpec("P")
R = TypeVar("R")


def refuse_in_bootstrapping_worker(name: str) -> None:
    """A process started by spawn or forkserver (macOS, Windows; Linux from Python 3.14) runs the user's main script
    again before it works: a `swinzoo.finetune(...)` at the script's top level then ran in every loader worker (and
    stopped on the run's own lock, "--out ... is in use"). What Python checks itself when such a process starts one."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise SwinzooError(f"swinzoo.{name} was called again by a worker process re-running your script (spawn or "
                           "forkserver start them so): put the script's calls under `if __name__ == \"__main__\":`")


def python_api(options: type | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a public function whose errors may name CLI flags (the CLI calls the same code): called from Python,
    a `SwinzooError` naming `--trust-checkpoint` also gets "(in Python: --trust-checkpoint is trust_checkpoint=True)",
    for each flag that is one of the function's keyword arguments (or a field of the dataclass `options`, the
    keywords of a `**options` function)."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        params = [p for p in inspect.signature(func).parameters.values()
                  if p.kind is not p.VAR_KEYWORD and p.name not in ("self", "cls")]
        kinds = {p.name: p.annotation if isinstance(p.annotation, str) else "" for p in params}
        kinds.update({f.name: str(f.type) for f in dataclasses.fields(options)} if options else {})
        first = params[0].name if params else None

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if _SPELLED_ABOVE.get():
                return func(*args, **kwargs)
            outermost = _SPELLED_ABOVE.set(True)
            caller = _PYTHON_CALLER.set((kinds, first))
            try:
                refuse_in_bootstrapping_worker(func.__name__)
                return func(*args, **kwargs)
            except SwinzooError as e:
                spelled = python_spellings(str(e.args[0]), kinds, first) if e.args else []
                if spelled:
                    e.args = (f"{e.args[0]} (in Python: {', '.join(spelled)})", *e.args[1:])
                raise
            finally:
                _PYTHON_CALLER.reset(caller)
                _SPELLED_ABOVE.reset(outermost)

        return wrapper

    return decorate


def python_spellings(message: str, kinds: dict[str, str], first: str | None) -> list[str]:
    """For each flag of `message` that is one of `kinds` ({keyword: its annotation}): "--flag is keyword=..."."""
    spelled: list[str] = []
    for flag, key in dict.fromkeys(_FLAG.findall(message)):
        name = flag.replace("-", "_")
        if key:  # --trainer.limit_val_batches, --recipe.base_lr; not the syntax's own --trainer.NAME
            target = {"trainer": "trainer", "recipe": "recipe_overrides"}.get(name)
            if target not in kinds or key.isupper():
                continue
            text = f"{target}={{{key!r}: ...}}"
        elif name == "from" and first:
            text = f"{first}=..."
        elif name.startswith("no_") and kinds.get(name[3:]) == "bool":
            text = f"{name[3:]}=False"
        elif name in kinds:
            text = f"{name}=True" if kinds[name] == "bool" else f"{name}=..."
        else:
            continue
        item = f"--{flag}{'.' + key if key else ''} is {text}"
        if item not in spelled:
            spelled.append(item)
    return spelled


def for_caller(note: str) -> str:
    """`note` (a line printed, not raised) as the caller reads it: from Python, with the flags it names spelled as
    the keywords of the `python_api` function called, as its errors are; from the CLI, as it is."""
    caller = _PYTHON_CALLER.get()
    spelled = python_spellings(note, *caller) if caller else []
    return f"{note} (in Python: {', '.join(spelled)})" if spelled else note


def note_signal() -> None:
    global SIGNALLED, SIGNALS_TAKEN
    SIGNALLED = True
    SIGNALS_TAKEN += 1


def signals_taken() -> int:
    """How many SIGTERM / SIGINT the CLI's handler has run for in this process (what `hard_stop` watches)."""
    return SIGNALS_TAKEN


def debug_enabled() -> bool:
    """SWINZOO_DEBUG on: tracebacks instead of one-line errors, huggingface_hub's messages kept (a value that is
    neither on nor off counts as off, so the CLI's error about it is one line: `swinzoo.settings`)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in DEBUG_ON


def exit_code(command: Callable[[], int | None]) -> int:
    """Run `command` and return its exit code, every exception as one line on stderr: a `SwinzooError` (bad input:
    the message names the problem and the fix) 2, a failed memory allocation 2 (a resolution, batch or class count
    too large for the machine), a path this user may not read or write 2, a `NetworkError` and another OS error (disk
    full, I/O) 1, Ctrl-C / SIGTERM 130, a closed pipe 141, anything else 1 with its type. `SWINZOO_DEBUG=1` raises
    instead, for the traceback. Shared by `swinzoo` and `python -m swinzoo.converters`."""
    with lenient_output():  # the error lines too: they name the paths that printed no other way
        return _exit_code(command)


def _exit_code(command: Callable[[], int | None]) -> int:
    global SIGNALLED
    SIGNALLED = False  # a signal to an earlier command run in this process (tests, a notebook) is not this one's
    debug = debug_enabled()
    in_cli = _SPELLED_ABOVE.set(True)
    try:
        return int(command() or 0)
    except SystemExit as e:
        if not isinstance(e.__context__, BrokenPipeError):
            raise
        return 141  # rich's handler of a closed pipe: it already pointed stdout at /dev/null, and exits 1
    except SwinzooError as e:
        if debug:
            raise
        print(f"error: {printable(str(e))}", file=sys.stderr)  # one line, even naming a file with a line break
        return 1 if isinstance(e, NetworkError) else 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `swinzoo list | head`: the reader has what it wanted; stop quietly, as `cat` would
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error flushing stdout
        return 141  # 128 + SIGPIPE, what a shell reports for a command its pipe closed
    except PermissionError as e:  # a file or folder given that this user may not read or write: the input's to change
        if debug:
            raise
        where = f"{printable(str(e.filename))}: " if e.filename else ""
        print(f"error: {where}permission denied; give a path this user can read (or write, for an output), or change "
              "its permissions (SWINZOO_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2
    except OSError as e:  # the disk or the network: full, read-only, unreachable
        if debug:
            raise
        if SIGNALLED:  # a read or write the signal cut short
            print("error: interrupted", file=sys.stderr)
            return 130
        where = f" {printable(str(e.filename))}" if e.filename else ""
        reason = e.strerror or str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {type(e).__name__}{where}: {reason}; check the path, free space and permissions "
              "(SWINZOO_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    except Exception as e:  # a bug, or input no check caught yet: one line, the traceback on request
        if debug:
            raise
        if SIGNALLED or WORKER_STOPPED.search(str(e)) or _while_interrupted(e):  # Ctrl-C / SIGTERM: its workers too
            print("error: interrupted", file=sys.stderr)
            return 130
        size = allocation_failed(e)
        if size is not None:  # a --res, batch or class count this machine cannot hold: the input's to change
            print(f"error: out of memory ({size or 'an allocation failed'}); use a smaller resolution, batch or "
                  "class count, or a machine with more memory (SWINZOO_DEBUG=1 shows where)", file=sys.stderr)
            return 2
        first = (str(e).strip().splitlines() or [""])[0][:300]
        print(f"error: {type(e).__name__}: {first} (unexpected; rerun with SWINZOO_DEBUG=1 for the traceback and "
              "report it)", file=sys.stderr)
        return 1
    finally:
        _SPELLED_ABOVE.reset(in_cli)


def _while_interrupted(e: BaseException) -> bool:
    """`e` was raised while a KeyboardInterrupt unwound (torch's checkpoint writer failing to close the file the
    interrupt cut short, in a run called in-process, where no CLI signal handler marked SIGNALLED)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def lenient_output():
    """stdout and stderr that write a character their encoding lacks as an escape (`\\udce9`, `\\xf1`), as Python's
    own stderr does, while a command runs: a class or file name that is not UTF-8 on Linux (a surrogate), or
    not in a legacy or `PYTHONIOENCODING=ascii` output, then prints instead of failing the command midway."""
    strict = [stream for stream in (sys.stdout, sys.stderr)
              if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure")]
    for stream in strict:
        stream.reconfigure(errors="backslashreplace")
    try:
        yield
    finally:
        for stream in strict:
            with contextlib.suppress(Exception):  # closed, or its pipe is: nothing more is written to it
                stream.reconfigure(errors="strict")


def printable(text: str) -> str:
    """`text` for a line of text output: each character that does not print (a line break, a tab, a terminal escape,
    the surrogate of a name that is not UTF-8) as its Python escape, so that a class or file name keeps to its line
    and cannot drive the terminal. --json output keeps names exact instead."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def allocation_failed(e: BaseException) -> str | None:
    """When `e` is a failed memory allocation (Python's MemoryError, torch's CPU allocator, CUDA out of memory): the
    size it asked for ("" when it does not say); else None."""
    text = str(e)
    cpu = re.search(r"DefaultCPUAllocator: can't allocate memory: you tried to allocate (\d+) bytes", text)
    if cpu:
        return f"{int(cpu.group(1)) / 2**30:,.1f} GiB asked for at once"
    cuda = re.search(r"Tried to allocate ([\d.]+ [KMGTP]?i?B)", text)
    if type(e).__name__ == "OutOfMemoryError" or (cuda and "out of memory" in text):
        return f"{cuda.group(1)} asked for at once on the GPU" if cuda else "the GPU's memory is full"
    return "" if isinstance(e, MemoryError) else None
