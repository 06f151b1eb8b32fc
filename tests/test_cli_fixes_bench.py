"""`bench --compile --warmup 0` says that the first timed round includes the compilation."""

import pytest

from .conftest import run_cli


@pytest.fixture
def no_measuring(monkeypatch):
    # the warning is about the options; compiling a model on a CPU takes a minute and a C compiler
    import swinzoo.bench

    monkeypatch.setattr(swinzoo.bench, "plan", lambda *a, **k: [])
    monkeypatch.setattr(swinzoo.bench, "run", lambda *a, **k: [])


@pytest.mark.parametrize(("warmup", "warned"), [("0", True), ("1", False)])
def test_compile_without_warmup_warns(no_measuring, capsys, warmup, warned):
    code, _, err = run_cli(["bench", "swin_n_64", "--compile", "--warmup", warmup, "--reps", "1", "--json"], capsys)
    assert code == 0, err
    assert ("warning: --compile with --warmup 0" in err) == warned, err
    assert not warned or "--warmup 1 or more" in err
