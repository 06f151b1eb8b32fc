"""`swinzoo list PATTERN`: a pattern that matches nothing is an error naming close names; small GMACs keep digits."""

import json

from .conftest import run_cli


def test_list_without_a_match_says_so(capsys):
    code, out, err = run_cli(["list", "nosuch"], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no model matches 'nosuch'"), err


def test_list_json_without_a_match_is_an_empty_list(capsys):
    """Scripts get an answer, as `swinzoo.list_models` gives one."""
    code, out, err = run_cli(["list", "nosuch", "--json"], capsys)
    assert code == 0 and json.loads(out) == [], err


def test_list_suggests_close_names(capsys):
    code, _, err = run_cli(["list", "swin_n_46"], capsys)
    assert code == 2 and "did you mean swin_n_64" in err, err


def test_list_shows_the_nano_models_gmacs(capsys):
    code, out, err = run_cli(["list", "n_64"], capsys)
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if line.startswith(("swin_n_64.", "swinv2_n_64_w4."))]
    assert rows and all("0.028" in row for row in rows), out
    code, out, _ = run_cli(["list", "swin_b_384"], capsys)
    assert "47.1" in out  # the paper's numbers as before
