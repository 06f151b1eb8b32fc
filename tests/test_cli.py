"""The CLI explains itself: fast help (no torch import to build the parser), --version, a bare `swinzoo` prints help,
every example in every epilog parses, format choices match the registry, `list` filters and keeps its digits."""

import shlex
import subprocess
import sys
from pathlib import Path

from swinzoo import converters
from swinzoo.cli import build_parser, parse
from swinzoo.commands import EXPORT_CHOICES, FORMAT_CHOICES
from swinzoo.converters import graph

from .conftest import run_cli


def test_building_the_parser_imports_no_heavy_library():
    code = ("import sys; from swinzoo.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'lightning', 'torchmetrics', 'rich', 'huggingface_hub', 'safetensors', "
            "'torchvision', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_version_and_bare_command(capsys):
    import swinzoo

    code, out, err = run_cli([], capsys)
    assert code == 0 and "usage: swinzoo" in out and "examples:" in out and err == ""
    proc = subprocess.run([sys.executable, "-m", "swinzoo", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"swinzoo {swinzoo.__version__}"


def test_format_choices_match_the_registry():
    assert FORMAT_CHOICES == ("auto", *converters.FORMATS)
    assert EXPORT_CHOICES == (*converters.EXPORT_FORMATS, *graph.GRAPH_FORMATS)


def test_every_example_parses(tmp_path, monkeypatch, capsys):
    """Each example of each epilog parses; `finetune` and `pretrain` ones with their own parsers, a `> FILE`
    redirect of --print-config writing FILE, so the next example's --config reads it."""
    from swinzoo.commands import finetune, pretrain
    from swinzoo.train.options import FinetuneOptions
    from swinzoo.train.pretrain_options import PretrainOptions

    own = {"finetune": (finetune, FinetuneOptions), "pretrain": (pretrain, PretrainOptions)}

    monkeypatch.chdir(tmp_path)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    lines = [line for p in [parser, *sub.choices.values()] for line in (p.epilog or "").splitlines()]
    commands = [line.split("#")[0].strip() for line in lines if line.strip().startswith("swinzoo ")]
    assert len(commands) >= 20
    printed = ""
    for command in commands:
        command, _, redirect = command.partition(" > ")
        args = shlex.split(command)[1:]
        if args[0] not in own:
            ns = parse(parser, args)
            assert ns.command and callable(ns.func), command
            continue
        if "--config" in args:  # an example replaying a config: the one printed before it
            path = Path(args[args.index("--config") + 1])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(printed)
        capsys.readouterr()
        verb, options = own[args[0]]
        result = verb.parse(args[1:])
        if redirect:
            assert result == 0, command
            printed = capsys.readouterr().out
            assert "from: swin_n_64" in printed
        else:
            assert isinstance(result, options), command


def test_help_shows_defaults():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = sub.choices["bench"].format_help()
    assert "(default: 8)" in text and "(default: fp32)" in text


def test_list_filters_and_keeps_its_digits(capsys):
    code, out, _ = run_cli(["list", "swinv2_l"], capsys)
    assert code == 0 and "swinv2_l_384_w24.in22k_ft_in1k" in out and "swin_b_224" not in out
    assert "196.7" in out and "115.4" in out and "…" not in out
    code, out, _ = run_cli(["list", "swin_*_384*", "--json"], capsys)
    import json

    names = [row["name"] for row in json.loads(out)]
    assert names and all(n.startswith("swin_") and "_384" in n for n in names)


def test_every_argument_says_what_it_is():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    missing = [(name, a.option_strings or a.dest) for name, p in sub.choices.items() for a in p._actions
               if not a.help and a.dest != "help"]
    assert missing == []


def test_a_closed_pipe_ends_the_output_quietly():
    """`swinzoo list --json | head -1`: the reader left; no error line, the shell's 141 (128 + SIGPIPE)."""
    proc = subprocess.Popen([sys.executable, "-m", "swinzoo", "list", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # before the first write
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and err == b"", err
