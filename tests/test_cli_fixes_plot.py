"""`bench --plot` / `eval --plot`: the path is checked before the work, "plot written" is said only once it is."""

import pytest

from .conftest import one_error_line, run_cli

BENCH = ["bench", "swin_n_64", "--res", 32, 48, "--batch", 1, "--reps", 1, "--warmup", 0]


def test_bench_says_plot_written_only_after_the_write(tmp_path, capsys, monkeypatch):
    import swinzoo.bench_plot

    plot = tmp_path / "b.png"

    def refuse(img, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(swinzoo.bench_plot, "save_png", refuse)
    code, out, err = run_cli([*BENCH, "--plot", plot], capsys)
    assert code == 2 and "swin_n_64" in out  # the measurements are printed all the same
    assert "plot written" not in out
    one_error_line(err.strip().splitlines()[-1], str(plot), "permission denied")  # after the progress bar


def test_bench_plot_written(tmp_path, capsys):
    plot = tmp_path / "b.png"
    code, out, err = run_cli([*BENCH, "--plot", plot], capsys)
    assert code == 0, err
    assert out.rstrip().endswith(f"plot written to {plot}") and plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("verb", [BENCH, ["eval", "swin_n_64", "--res", 64, "--batch-size", 500, "--num-workers", 0]])
def test_plot_in_a_folder_that_is_a_file(tmp_path, capsys, monkeypatch, verb):
    """Found when the path is checked, before the work: not after the measurements, when the plot is written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("a file")
    code, out, err = run_cli([*verb, "--plot", "f/b.png"], capsys)
    assert code == 2 and out == ""
    one_error_line(err, "f is a file, not a folder")


@pytest.mark.parametrize("verb", [BENCH, ["eval", "swin_n_64", "--res", 64, 96]])
def test_plot_name_checked_before_the_work(tmp_path, capsys, monkeypatch, verb):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli([*verb, "--plot", "p.txt"], capsys)
    assert code == 2 and out == ""
    one_error_line(err, "p.txt", ".png", "p.png")
    assert list(tmp_path.iterdir()) == []
