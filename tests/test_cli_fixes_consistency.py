"""One concept, one spelling across the verbs (old spellings kept, unlisted), and help that says each default once."""

import re

import pytest

from swinzoo.cli import build_parser, parse
from swinzoo.commands import finetune, pretrain

from .conftest import one_error_line, run_cli


def _subparsers():
    parser = build_parser()
    return parser, next(a for a in parser._actions if a.dest == "command").choices


def test_bench_takes_batch_size_as_the_other_verbs_and_keeps_batch():
    parser, sub = _subparsers()
    assert parse(parser, ["bench", "--batch-size", "4"]).batch_size == 4
    assert parse(parser, ["bench", "--batch", "3"]).batch_size == 3  # the spelling of earlier versions
    assert parse(parser, ["bench"]).batch_size == 8
    text = sub["bench"].format_help()
    assert "--batch-size" in text and not re.search(r"--batch\b(?!-)", text)


@pytest.mark.parametrize("verb", ["convert", "export"])
def test_convert_and_export_take_finetunes_out(verb):
    """`--out` was an ambiguous prefix (of --output and --out-indices), refused, where finetune spells it so."""
    parser, sub = _subparsers()
    extra = ["--to", "timm"] if verb == "export" else []
    assert parse(parser, [verb, "m.pth", "--out", "o", *extra]).output == "o"
    assert parse(parser, [verb, "m.pth", "-o", "o", *extra]).output == "o"
    assert "--out " not in sub[verb].format_help()


def test_an_unknown_command_names_the_closest(capsys):
    code, out, err = run_cli(["lst"], capsys)
    assert code == 2 and out == ""
    one_error_line(err, "'lst'", "did you mean list?")
    code, _, err = run_cli(["finetun", "--from", "swin_n_64"], capsys)
    assert code == 2
    one_error_line(err, "did you mean finetune?")


def _help_strings(parser):
    formatter = parser._get_formatter()
    return [(a.option_strings or [a.dest], formatter._get_help_string(a)) for a in parser._actions if a.help]


def test_every_option_states_its_default_once():
    """A help that says the default itself (`default: the recipe's`) gets no second, contradicting one
    (jsonargparse's `default: null`)."""
    _, sub = _subparsers()
    parsers = [*sub.values(), finetune.build_parser(with_trainer=False), pretrain.build_parser(with_trainer=False)]
    twice = [(p.prog, flags, text) for p in parsers for flags, text in _help_strings(p) if text.count("default:") > 1]
    assert twice == []


@pytest.mark.parametrize("verb", [finetune, pretrain])
def test_run_help_lists_the_spellings_it_documents(verb):
    text = verb.build_parser(with_trainer=False).format_help()
    assert "--print-config" in text and "--print_config" not in text
    assert "--recipe-overrides" in text and "--recipe_overrides" not in text


@pytest.mark.parametrize("spelling", ["--recipe-overrides", "--recipe_overrides"])
def test_recipe_overrides_as_listed_or_as_the_yaml_key(spelling):
    options = finetune.parse(["--from", "swin_n_64", spelling, "{base_lr: 0.001}"])
    assert options.recipe_overrides == {"base_lr": 0.001}


@pytest.mark.parametrize("verb", ["eval", "predict", "info", "convert", "export"])
def test_every_model_argument_says_it_takes_any_source(verb):
    """eval and predict read what info and convert read (load_model's sources), hf-hub: references included."""
    _, sub = _subparsers()
    positional = next(a for a in sub[verb]._actions if not a.option_strings and a.dest in ("model", "models", "src"))
    assert "hf-hub:" in positional.help and "folder" in positional.help


@pytest.mark.parametrize("given,meant", [("fp16", "16-mixed"), ("fp32", "32-true")])
def test_finetune_precision_in_evals_spelling_names_lightnings(given, meant):
    from swinzoo.errors import SwinzooError
    from swinzoo.train.checks import check_values

    with pytest.raises(SwinzooError) as e:
        check_values({"precision": given}, lambda name, value: f"--{name} {value}")
    assert f"did you mean {meant}?" in str(e.value)
