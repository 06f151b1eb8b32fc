"""The command lines of the README, docs/ and the `--help` examples, parsed (never run) by the parsers that would
read them: `swinzoo VERB ...` by the CLI's (finetune and pretrain by their jsonargparse ones), `python -m
swinzoo.converters ...` by the converters script's, `python benchmarks/X.py ...` by that script's. A copied command
must name a real verb, only flags it has (spelt out: no abbreviation argparse would guess), values among its
choices and the right positional arguments. A synopsis (`[--res R]`, `fp32|bf16`) and a command in prose (`swinzoo
export --to pt2`) are checked flag by flag; a flag named alone in prose must exist on some parser. (The recipes,
variables and extras the docs name: tests/test_docs_examples.py.)"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
import typing
from functools import cache
from pathlib import Path

import pytest

import swinzoo.commands.finetune as finetune_command
import swinzoo.commands.pretrain as pretrain_command
from swinzoo import cli
from swinzoo.commands.run_parsing import normalise_argv
from swinzoo.errors import SwinzooError
from swinzoo.train.recipes import valid_keys
from swinzoo.train.trainer_options import trainer_hints
from tests.conftest import DOCS, ROOT

SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))
SHELLS = ("", "bash", "sh", "shell", "console")
# the docs' placeholders, where a full parse needs a value of the flag's type; ARM is what docs/simmim.md's comment
# lists as one arm's flags
PLACEHOLDERS = {"R": "384", "W": "12", "N": "8", "FRAC": "0.1", "SEED": "0", "...": "X",
                "ARM": "--from runs/le/pre/model.safetensors --recipe nano_finetune"}
# flags in prose that belong to other programs (LightningCLI's, in the README's comparison)
FOREIGN_FLAGS = ("--model.",)


def fenced_commands(path: Path) -> list[tuple[str, str]]:
    """(where, line) of every line of a shell block, with `\\` continuations and indented synopsis lines joined."""
    found, lines, i = [], path.read_text().split("\n"), 0
    while i < len(lines):
        fence = lines[i].strip()
        if not fence.startswith("```"):
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
        k = i + 1
        while fence[3:] in SHELLS and k < end:
            first, line = k, lines[k]
            while k + 1 < end and (line.rstrip().endswith("\\") or lines[k + 1].startswith(" ")):
                k += 1
                line = line.rstrip().removesuffix("\\") + " " + lines[k].strip()
            found.append((f"{path.name}:{first + 1}", line))
            k += 1
        i = end + 1
    return found


def prose(path: Path) -> str:
    """The text outside fenced blocks (their lines blanked, so line numbers hold)."""
    lines, inside = path.read_text().split("\n"), False
    for i, line in enumerate(lines):
        fence = line.strip().startswith("```")
        if inside or fence:
            lines[i] = ""
        inside ^= fence
    return "\n".join(lines)


def inline_spans(path: Path) -> list[tuple[str, str]]:
    """(where, text) of every `code span` outside fenced blocks, a span broken over lines joined."""
    text = prose(path)
    return [(f"{path.name}:{text[:m.start()].count(chr(10)) + 1}", " ".join(m.group(1).split()))
            for m in re.finditer(r"`([^`]+)`", text)]


def help_examples() -> list[tuple[str, str]]:
    """(where, line) of every example in `swinzoo --help` and each verb's, and in each script's docstring."""
    texts = [("swinzoo --help", cli.EXAMPLES), ("swinzoo finetune --help", finetune_command.EXAMPLES),
             ("swinzoo pretrain --help", pretrain_command.EXAMPLES)]
    for name, sub in verb_parsers().items():
        texts.append((f"swinzoo {name} --help", sub.epilog or ""))
    from swinzoo.converters import __main__ as converters_script

    texts.append(("swinzoo.converters", converters_script.__doc__))
    texts += [(f"benchmarks/{s.name}", script_module(s).__doc__) for s in SCRIPTS]
    found = []
    for where, text in texts:
        lines = [line.strip() for line in text.split("\n")]
        for i, line in enumerate(lines):
            if re.match(r"(swinzoo|python3? )", line) and not (i and lines[i - 1].endswith("\\")):
                while line.endswith("\\"):
                    i += 1
                    line = line.removesuffix("\\") + " " + lines[i]
                found.append((where, line))
    return found


def commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line: split at `&&`, `;`, `|`, without redirections and comments. A synopsis
    (`[--keep best|last]`) is one command: its `|` separates alternatives."""
    if re.search(r"(^|\s)\[", line):
        return [shlex.split(line, comments=True)]
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens, out, current = list(lexer), [], []
    skip = False
    for token in tokens:
        if skip:
            skip = False
        elif token in ("&&", "||", ";", "|", "&"):
            out.append(current)
            current = []
        elif token in (">", ">>", "<", "2>"):
            skip = True
        else:
            current.append(token)
    return [c for c in [*out, current] if c]


def program(words: list[str]) -> tuple[str, list[str]] | None:
    """("swinzoo" | "converters" | "benchmarks/X.py", argv) of a command this project runs, else None."""
    if words[0] == "swinzoo" and len(words) > 1:
        return "swinzoo", words[1:]
    if words[0] in ("python", "python3") and len(words) > 1:
        if words[1:3] == ["-m", "swinzoo"]:
            return "swinzoo", words[3:]
        if words[1:3] == ["-m", "swinzoo.converters"]:
            return "converters", words[3:]
        if words[1].startswith("benchmarks/"):
            return words[1], words[2:]
    return None


def documented_commands() -> list[tuple[str, str, bool]]:
    """(where, line, whole) of every command: `whole` for a block line or a help example (a full command), not for
    a span in prose (which may name a verb and the flag the sentence is about)."""
    found = [(w, line, True) for path in DOCS for w, line in fenced_commands(path)]
    found += [(w, line, True) for w, line in help_examples()]
    verbs = "|".join(verb_parsers())
    for path in DOCS:
        for where, span in inline_spans(path):
            if re.match(r"(swinzoo [a-z]|python3? (-m swinzoo|benchmarks/))", span):
                found.append((where, span, False))
            elif re.match(rf"({verbs})(/({verbs}))? ", span):  # `eval --per-class`, `info NAME|PATH --json`
                found.append((where, f"swinzoo {span}", False))
    return found


class Parsed(Exception):
    """Raised in place of running a script: the parser and what it parsed."""

    def __init__(self, parser, namespace) -> None:
        self.parser, self.namespace = parser, namespace


@cache
def script_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script_parser(path: Path, argv: list[str] | None):
    """What `path`'s main() parses `argv` into (None: only its parser), without running the script."""
    parse_args = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        def refuse(message):
            raise SwinzooError(f"{self.prog}: {message}")

        self.allow_abbrev, self.error = False, refuse
        raise Parsed(self, None if argv is None else parse_args(self, args, namespace))

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = parse_only
    try:
        script_module(path).main(argv or [])
    except Parsed as parsed:
        return parsed
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{path.name}: main() returned without parsing its arguments")


@cache
def verb_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


def strict(build):
    def built(with_trainer: bool = True):
        parser = build(with_trainer)
        parser.allow_abbrev = False
        return parser
    return built


@cache
def run_parser(verb: str):
    return strict(RUN_VERBS[verb].build_parser)(True)


RUN_VERBS = {"finetune": finetune_command, "pretrain": pretrain_command}


def parse_swinzoo(argv: list[str], monkeypatch) -> None:
    """Parse as `swinzoo ARGV` would, without running the command; a SwinzooError or SystemExit(2) if refused."""
    argv = [cli.from_home(a) for a in argv]
    if argv[0] in RUN_VERBS:
        module = RUN_VERBS[argv[0]]
        monkeypatch.setattr(module, "build_parser", strict(module.build_parser))
        with contextlib.redirect_stdout(io.StringIO()):  # --print-config prints the config
            module.parse(argv[1:])
        return
    parser = cli.build_parser()
    for sub in next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices.values():
        sub.allow_abbrev = False
    parser.allow_abbrev = False
    cli.parse(parser, argv)


def option_actions(name: str, argv: list[str]) -> dict[str, argparse.Action] | None:
    """The flags of the parser `name` (and argv's verb) reads, or None for an unknown verb."""
    if name == "converters":
        from swinzoo.converters.__main__ import build_parser

        return build_parser()._option_string_actions
    if name.startswith("benchmarks/"):
        return run_script_parser(ROOT / name, None).parser._option_string_actions
    verb = next((a for a in argv if not a.startswith("-")), None)
    if verb in RUN_VERBS:
        return run_parser(verb)._option_string_actions
    sub = verb_parsers().get(verb)
    return None if sub is None else {**sub._option_string_actions, **getattr(sub, "hidden_options", {})}


def check_flags(name: str, argv: list[str]) -> list[str]:
    return flag_check(name, argv)[0]


def flag_check(name: str, argv: list[str]) -> tuple[list[str], bool]:
    """What is wrong with argv flag by flag (a synopsis, a fragment in prose): unknown verb or flag, a value given
    (or each of `a|b` alternatives) not among the flag's choices; and whether a value listed alternatives."""
    if name == "swinzoo" and argv[0].split("/")[0] not in verb_parsers():
        return [f"no verb {argv[0]!r}"], False
    verbs = argv[0].split("/") if name == "swinzoo" else [None]  # `swinzoo convert/export --no-ema`
    problems, listed = [], False
    for verb in verbs:
        words = [verb, *argv[1:]] if verb else argv
        actions = option_actions(name, words)
        words = [w.strip("[]") for w in words]  # a synopsis: `[--keep best|last]`
        if name == "swinzoo" and verb in RUN_VERBS:
            words = normalise_argv(words)
        words = [part for word in words for part in re.split(r"/(?=--)", word)]  # `--res/--window`
        for i, word in enumerate(words):
            flag = word.split("=")[0]
            if not flag.startswith("--") or flag == "--":
                continue
            if flag.startswith("--trainer.") and verb in RUN_VERBS:
                key = flag[len("--trainer."):].split(".")[0].removesuffix("+")
                if key not in ("NAME", "*") and key not in trainer_hints():
                    problems.append(f"{verb}: no Trainer argument {key!r}")
                continue
            if flag.startswith("--recipe_overrides.") and verb in RUN_VERBS:
                key = flag[len("--recipe_overrides."):]
                if key != "KEY" and key not in valid_keys():
                    problems.append(f"{verb}: no recipe key {key!r}")
                continue
            action = actions.get(flag)
            if isinstance(action, str):  # a hidden spelling: the flag it stands for
                action = actions.get(action)
            if action is None:
                problems.append(f"{verb or name}: no flag {flag}")
                continue
            value = word.split("=", 1)[1] if "=" in word else (words[i + 1] if i + 1 < len(words) else "")
            if choices_of(action) and value and not value.startswith("-") and not re.fullmatch(r"[A-Z]\w*", value):
                alternatives = re.split(r"[|,/]", value.strip("{}"))  # `fp32|bf16`, `{a,b}`, `pt2/onnx`
                listed |= len(alternatives) > 1
                bad = [a for a in alternatives if a not in choices_of(action)]
                if bad:
                    problems.append(f"{verb or name}: {flag} {'|'.join(bad)} not among {list(choices_of(action))}")
    return problems, listed


def is_synopsis(argv: list[str]) -> bool:
    return any(re.search(r"[\[\]{}|]|\w\.\.\.$", w) for w in argv)


def substituted(argv: list[str]) -> list[str]:
    out = []
    for word in argv:
        out += PLACEHOLDERS[word].split() if word in PLACEHOLDERS else [word]
    return out


def parse_command(name: str, argv: list[str], monkeypatch) -> None:
    if name == "swinzoo":
        parse_swinzoo(argv, monkeypatch)
    elif name == "converters":
        from swinzoo.converters.__main__ import build_parser

        parser = build_parser()
        parser.allow_abbrev = False
        parser.parse_args(argv)
    else:
        run_script_parser(ROOT / name, argv)


COMMANDS = [(where, line, whole) for where, line, whole in documented_commands()]


@pytest.mark.parametrize(("where", "line", "whole"), COMMANDS, ids=[f"{w}: {line[:60]}" for w, line, _ in COMMANDS])
def test_a_documented_command_parses(where, line, whole, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no --config or run folder of the docs exists here
    for words in commands(line):
        found = program(words)
        if found is None:
            continue
        name, argv = found
        problems, listed = flag_check(name, argv) if argv else ([], False)
        assert not problems, f"{where}: {line}: {problems}"
        if listed or is_synopsis(argv):
            continue
        for each in each_verb(name, substituted(argv)):
            made_configs(each)
            try:
                parse_command(name, each, monkeypatch)
            except (SwinzooError, SystemExit) as e:
                refused = str(e)
                # prose names a verb with the flag it is about, not always the command's other required arguments
                if whole or not re.search(r"required|expected one argument|too few|needs a value", refused):
                    pytest.fail(f"{where}: {line}\n  -> {refused}")


def each_verb(name: str, argv: list[str]) -> list[list[str]]:
    """`convert/export --no-ema` (prose naming two verbs) as one command line each."""
    if name != "swinzoo" or not argv or "/" not in argv[0] or argv[0].split("/")[0] not in verb_parsers():
        return [argv]
    return [[verb, *argv[1:]] for verb in argv[0].split("/")]


def made_configs(argv: list[str]) -> None:
    """The `--config FILE`s the docs made one line earlier (`--print-config > run.yaml`, a run's config.yaml), made
    here as a config of one key."""
    for i, word in enumerate(argv[:-1]):
        if word == "--config" and not Path(argv[i + 1]).exists():
            Path(argv[i + 1]).parent.mkdir(parents=True, exist_ok=True)
            Path(argv[i + 1]).write_text("from: swin_n_64\n")


def choices_of(action: argparse.Action):
    """argparse's choices, or the values of jsonargparse's `Literal[...]` (`--keep`, `--logger`)."""
    if action.choices:
        return action.choices
    hint = getattr(action, "_typehint", None)
    values = [v for arg in [hint, *typing.get_args(hint)] if typing.get_origin(arg) is typing.Literal
              for v in typing.get_args(arg)]
    return values or None


def all_flags(scripts: bool = True) -> dict[str, list[argparse.Action]]:
    """Every flag of every parser (`scripts`: also the benchmark scripts'), with the actions that read it."""
    from swinzoo.converters.__main__ import build_parser

    flags: dict[str, list[argparse.Action]] = {}
    parsers = [run_parser(verb) if verb in RUN_VERBS else sub for verb, sub in verb_parsers().items()]
    parsers += [build_parser(), cli.build_parser()]
    parsers += [run_script_parser(s, None).parser for s in SCRIPTS] if scripts else []
    for parser in parsers:
        actions = dict(parser._option_string_actions)
        for old, flag in getattr(parser, "hidden_options", {}).items():
            actions[old] = actions[flag]
        for flag, action in actions.items():
            flags.setdefault(flag, []).append(action)
    return flags


def test_every_flag_named_in_prose_exists():
    """`--res`, `--keep best`, `--ema/--no-ema`: each flag a sentence names is one some parser has (the verb it is
    about is left to the reader), its value among the choices of one that has it."""
    flags, swinzoo_flags, problems = all_flags(), all_flags(scripts=False), []
    for path in DOCS:
        for where, span in inline_spans(path):
            if not span.startswith("--") or span.startswith(FOREIGN_FLAGS):
                continue
            words = span.split()
            for flag in words[0].split("/"):
                flag = normalise_argv([flag.split("=")[0]])[0]
                if flag.startswith(("--trainer.", "--recipe_overrides.")):
                    continue
                if flag not in flags:
                    problems.append(f"{where}: `{span}`: no command has {flag}")
                    continue
                choices = [choices_of(a) for a in swinzoo_flags.get(flag, flags[flag])]
                value = words[0].split("=", 1)[1] if "=" in words[0] else words[1] if len(words) > 1 else ""
                if value and not value.startswith("-") and all(choices):
                    allowed = {c for each in choices for c in each}
                    if not set(re.split(r"[|,/]", value)) <= allowed:
                        problems.append(f"{where}: `{span}`: {value} not among {sorted(allowed)}")
    assert not problems, "\n".join(problems)


def test_the_checks_refuse_what_is_wrong(monkeypatch, tmp_path):
    """The helpers above find a renamed flag, a bad choice, an abbreviation and a stray positional: they can fail."""
    monkeypatch.chdir(tmp_path)
    assert check_flags("swinzoo", ["bench", "--vs-tim"]) == ["bench: no flag --vs-tim"]
    assert check_flags("swinzoo", ["eval", "m", "--precision", "fp32|fp8"])
    assert check_flags("swinzoo", ["finetune", "[--keep", "best|bets]"])
    assert check_flags("swinzoo", ["finetune", "--trainer.max_epoch", "3"])
    assert check_flags("swinzoo", ["pretrain", "--recipe.base_lrr", "1"])
    assert check_flags("swinzoo", ["frobnicate"])
    for argv in (["bench", "--vs"], ["list", "a", "b"], ["finetune", "--max-st", "5"], ["finetune", "ARM"]):
        with pytest.raises((SwinzooError, SystemExit)):
            parse_swinzoo(argv, monkeypatch)
    with pytest.raises(SwinzooError, match="unrecognized arguments: --no-such-flag"):
        run_script_parser(SCRIPTS[0], ["--no-such-flag"])
    assert sum(whole for *_, whole in COMMANDS) > 100 and sum(not whole for *_, whole in COMMANDS) > 100
    assert commands("a && swinzoo list x | head > o  # c") == [["a"], ["swinzoo", "list", "x"], ["head"]]
    assert commands("swinzoo eval M [--precision fp32|bf16]") == [["swinzoo", "eval", "M", "[--precision",
                                                                     "fp32|bf16]"]]
