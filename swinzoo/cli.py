"""The `swinzoo` command: a thin dispatcher over one module per verb in `swinzoo.commands`.

Each command module has `register(subparsers)`, which adds its parser and sets `func`; `finetune` and `pretrain`
parse their own arguments with jsonargparse (config files, Lightning objects) and are handed everything after
their name.
`cli_main(args)` runs in process (tests call it directly); `errors.exit_code` turns exceptions into one line on
stderr and the exit code its docstring lists: 2 for what the input must change (a `SwinzooError`, a path this user
may not read or write, an allocation too large for the machine), 1 for the network, the disk and anything
unexpected, 130 interrupted; `SWINZOO_DEBUG=1` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import signal
import sys

from swinzoo import hard_stop
from swinzoo.errors import OneLineParser, SwinzooError, exit_code, note_signal, signals_taken
from swinzoo.settings import check_environment

COMMAND_MODULES = (
    "swinzoo.commands.zoo",  # list, info
    "swinzoo.commands.convert",  # convert, export
    "swinzoo.commands.push",  # push
    "swinzoo.commands.download",  # download
    "swinzoo.commands.bench",  # bench
    "swinzoo.commands.finetune",  # finetune
    "swinzoo.commands.pretrain",  # pretrain (SimMIM)
    "swinzoo.commands.recipes",  # recipes
    "swinzoo.commands.eval",  # eval, predict
)


EXAMPLES = """examples:
  swinzoo list swin_b                                   # the zoo (names, tags, paper numbers)
  swinzoo convert swin_base_patch4_window7_224.pth -o b384.safetensors --res 384
  swinzoo export b384.safetensors --to timm -o b384_timm
  swinzoo finetune --from swin_n_64 --res 128           # offline, minutes on a CPU
  swinzoo pretrain --from swin_n_64 --data shapes       # SimMIM self-supervised pretraining
  swinzoo eval runs/swin_n_64-128                       # top-1 / top-5 on the validation split

`swinzoo COMMAND --help` describes each command; SWINZOO_DEBUG=1 shows tracebacks; --json documents, exit
codes and environment variables: docs/scripting.md."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs as written; each option's default shown, unless it has none or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".strip()


class Parser(OneLineParser):
    """argparse with its errors as a `SwinzooError` (one line, no usage dump) and `HelpFormatter`.

    `hidden_options` ({old: flag}): spellings read as `flag` and listed nowhere. A second, hidden action would not
    do for a required flag: argparse counts only the listed one as given."""

    def __init__(self, *args, hidden_options: dict[str, str] | None = None, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.hidden_options = hidden_options or {}

    def parse_known_args(self, args=None, namespace=None):
        if args is not None and self.hidden_options:
            args = [self._spelled(a) for a in args]
        return super().parse_known_args(args, namespace)

    def _spelled(self, arg: str) -> str:
        name, eq, value = arg.partition("=")
        return self.hidden_options[name] + eq + value if name in self.hidden_options else arg


def build_parser() -> argparse.ArgumentParser:
    from swinzoo import __version__

    parser = Parser(prog="swinzoo", description="Swin Transformer V1/V2 with the official numerics: a model zoo,\n"
                    "converters, fine-tuning and SimMIM pretraining with Lightning.", epilog=EXAMPLES)
    parser.add_argument("--version", action="version", version=f"swinzoo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def parse(parser: argparse.ArgumentParser, args: list[str] | None) -> argparse.Namespace:
    """Parse, naming an unknown command or flag and the closest real one."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    # the first word not a flag is the command: swinzoo's own flags (--help, --version) take no value
    word = next((a for a in (sys.argv[1:] if args is None else args) if not a.startswith("-")), None)
    if word is not None and word not in commands:
        close = difflib.get_close_matches(word, list(commands), n=1)
        hint = f"did you mean {close[0]}?" if close else f"the commands: {', '.join(commands)}"
        raise SwinzooError(f"swinzoo: unknown command {word!r}; {hint} (see `swinzoo --help`)")
    ns, unknown = parser.parse_known_args(args)
    if unknown and ns.command is None:
        raise SwinzooError(f"swinzoo: unrecognized argument {unknown[0]}; see `swinzoo --help`")
    if unknown:
        sub = commands[ns.command]
        close = difflib.get_close_matches(unknown[0].split("=")[0], list(sub._option_string_actions), n=1)
        hint = f"did you mean {close[0]}?" if close else f"see `swinzoo {ns.command} --help`"
        raise SwinzooError(f"swinzoo {ns.command}: unrecognized argument {unknown[0]}; {hint}")
    return ns


def from_home(arg: str) -> str:
    """`arg` with a leading `~` or `~user` expanded, also after `--flag=`: where the shell left it (quoted, or after
    `=`), it would name a folder called `~` in the working folder."""
    name, eq, value = arg.partition("=")
    if eq and name.startswith("--") and value.startswith("~"):
        return name + eq + os.path.expanduser(value)
    return os.path.expanduser(arg) if arg.startswith("~") else arg


def asks_for_help(argv: list[str]) -> bool:
    """Whether `argv` asks only for a help page or the version (before a `--`, after which words are values)."""
    flags = argv[:argv.index("--")] if "--" in argv else argv
    return any(a in ("-h", "--help", "--version") for a in flags)


def cli_main(args: list[str] | None = None) -> int:
    argv = [from_home(a) for a in (sys.argv[1:] if args is None else [str(a) for a in args])]

    def run() -> int:
        if not asks_for_help(argv):  # the help documents the variables, so a typo in one must not hide it
            check_environment()  # a mistyped SWINZOO_* value: one error line, not the default run without a word
        if argv[:1] in (["finetune"], ["pretrain"]):  # own parsers: YAML configs, the Trainer's arguments
            verb = importlib.import_module(f"swinzoo.commands.{argv[0]}")
            return verb.main(argv[1:])
        parser = build_parser()
        try:
            ns = parse(parser, argv)
        except SystemExit as e:  # --help, --version: an exit code, as finetune's; a script calling cli_main goes on
            return int(e.code or 0)
        if ns.command is None:  # a bare `swinzoo`: what it can do
            parser.print_help()
            return 0
        return int(ns.func(ns) or 0)

    return exit_code(run)


MAIN_PID: int | None = None  # the process `main` runs in; its forks (data loader workers) inherit the handler


def _terminated(signum, frame) -> None:
    if os.getpid() != MAIN_PID:
        # a forked worker, signalled with its process group (Ctrl-C, `timeout`, a scheduler): it ends as the signal
        # would, quietly, and the main process says so once; a KeyboardInterrupt here printed tracebacks
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    note_signal()
    # what the unwinding leaves half-built (a loader starting its workers) fails in its destructor: "Exception
    # ignored in ..." tracebacks under the one line, which say nothing about the interruption
    sys.unraisablehook = lambda unraisable: None
    _workers_may_end()
    # SIGTERM unwinds like Ctrl-C, so every atomic write in flight removes its temporary file on the way out
    raise KeyboardInterrupt


def main() -> None:
    global MAIN_PID
    MAIN_PID = os.getpid()
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGINT, _terminated)
    hard_stop.arm(taken=signals_taken)  # for a main thread waiting in C++, where `_terminated` never runs
    quiet_forks()
    try:
        code = cli_main()
    except KeyboardInterrupt:  # a second signal of the group, after the first was reported (`exit_code`)
        code = 130
    _workers_may_end()
    sys.exit(code)


def quiet_forks() -> None:
    """In each forked loader worker: a thread that finds the main process gone (multiprocessing's fd-sharing thread,
    whose handshake the interrupted main process hangs up) ends without a traceback under the one line."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_quiet_disconnects)


def _quiet_disconnects() -> None:
    shown = sys.excepthook

    def hook(kind, value, traceback) -> None:
        if not issubclass(kind, (EOFError, ConnectionError)):
            shown(kind, value, traceback)

    sys.excepthook = hook


def _workers_may_end() -> None:
    """Loader workers ending from now on (the group's signal, or the exit) must not raise from torch's SIGCHLD
    handler, which it runs in the main process at any point: a traceback after the one line."""
    if hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


if __name__ == "__main__":
    main()
