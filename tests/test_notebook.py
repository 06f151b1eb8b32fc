"""swinzoo called from a Jupyter notebook: its stdout is no terminal, but rich draws a live display into an
ipywidgets Output there, as Lightning's own rich bar does; timed lines are for files and pipes (and a notebook
without ipywidgets, where rich's live display only warns). The last test runs a real kernel where one is installed."""

import importlib.machinery
import io
import sys
import types

import pytest
from rich.console import Console

import swinzoo
from tests.test_finetune import image_folder, tiny  # noqa: F401  (the module-scoped source model)
from tests.test_finetune_trainer_options import trainers  # noqa: F401  (the Trainers a run builds)


def jupyter_console() -> Console:
    return Console(force_jupyter=True, file=io.StringIO())


def widgets(monkeypatch, installed: bool) -> None:
    """ipywidgets installed or not, as `importlib.util.find_spec` sees it."""
    if installed:
        fake = types.ModuleType("ipywidgets")
        fake.__spec__ = importlib.machinery.ModuleSpec("ipywidgets", None)
        monkeypatch.setitem(sys.modules, "ipywidgets", fake)
    else:
        monkeypatch.setitem(sys.modules, "ipywidgets", None)


@pytest.mark.parametrize("installed", [True, False])
def test_a_notebook_run_draws_the_live_bar_where_rich_can(installed, tiny, tmp_path, trainers,  # noqa: F811
                                                           monkeypatch):
    """Before: a notebook got a line every 15 s, a new output each, for the whole run, as a log file does."""
    from swinzoo.train.progress import ProgressLines, StepBoundProgressBar

    widgets(monkeypatch, installed)
    swinzoo.finetune(str(tiny), data=str(image_folder(tmp_path / "data")), max_steps=1, batch_size=4, num_workers=0,
                     out=str(tmp_path / "run"), trainer={"limit_val_batches": 1, "enable_model_summary": False},
                     console=jupyter_console())
    callbacks = trainers[0].callbacks
    assert any(isinstance(c, StepBoundProgressBar) for c in callbacks) is installed
    assert any(isinstance(c, ProgressLines) for c in callbacks) is not installed


class SpyProgress:
    """rich's Progress, recorded and drawing nothing."""
    made: list = []

    def __init__(self, *args, **kwargs) -> None:
        self.disabled = kwargs.get("disable", False)
        SpyProgress.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def add_task(self, *args, **kwargs) -> int:
        return 0

    def advance(self, *args) -> None:
        pass


@pytest.mark.parametrize("installed", [True, False])
def test_eval_and_the_image_check_show_a_bar_in_a_notebook_with_widgets(installed, monkeypatch):
    import rich.progress

    from swinzoo import evaluation
    from swinzoo.train import image_check

    widgets(monkeypatch, installed)
    monkeypatch.setattr(evaluation, "Progress", SpyProgress)
    monkeypatch.setattr(rich.progress, "Progress", SpyProgress)  # image_check imports it when it checks
    monkeypatch.setattr(SpyProgress, "made", [])
    console = jupyter_console()
    with evaluation.progress_display(console, "eval", 2) as advance:
        advance()
        advance()
    assert len(SpyProgress.made) == (1 if installed else 0)
    monkeypatch.setattr(image_check, "CHECK_CHUNK", 2)
    monkeypatch.setattr(image_check, "PROGRESS_FROM", 4)
    assert image_check._scan(6, lambda a, b: [], "data", console) == []
    assert [not p.disabled for p in SpyProgress.made[-1:]] == [installed]


def test_a_notebook_cell_fine_tunes_under_one_live_bar(tiny, tmp_path):  # noqa: F811
    """In a real kernel (where ipykernel, nbclient and ipywidgets are installed): the cell's outputs are the plan,
    one live bar (an ipywidgets Output) and the result, with nothing on stderr; before, a "step N/M" line output."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("ipywidgets")
    data = image_folder(tmp_path / "data")
    run = (f"import swinzoo\nresult = swinzoo.finetune({str(tiny)!r}, data={str(data)!r}, max_steps=2, batch_size=4, "
           "num_workers=0, out='run', trainer={'limit_val_batches': 1, 'enable_model_summary': False})\nresult")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(run)])
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = notebook.cells[0].outputs
    texts = [o.get("text", "") if o.output_type == "stream" else o.get("data", {}).get("text/plain", "")
             for o in outputs]
    assert [o.name for o in outputs if o.output_type == "stream" and o.name == "stderr"] == [], texts
    assert sum("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs) >= 1, texts
    assert not any("step 2/2" in text for text in texts), texts
    assert sum("wrote run/model.safetensors" in text for text in texts) == 1, texts
    assert texts[-1].startswith("FinetuneResult(out=PosixPath('run')")


def test_a_checkpoint_shows_what_it_holds_not_every_tensor():
    """A cell ending in `swinzoo.read_checkpoint(...)` printed each tensor's values: 200 thousand characters for the
    nano model, 4 thousand lines for Swin-B. Now one line: the tensors counted, the config, the provenance."""
    ckpt = swinzoo.read_checkpoint("swin_n_64")
    text = repr(ckpt)
    assert len(text.splitlines()) == 1 and len(text) < 4000, text[:300]
    values = sum(t.numel() for t in ckpt.state_dict.values())
    assert text.startswith(f"Checkpoint(state_dict=<{len(ckpt.state_dict)} tensors, {values:,} values, float16>, "
                           f"config={ckpt.config!r}, provenance=")
    assert "tensor(" not in text


def test_several_devices_in_a_notebook_are_refused_not_trained_in_forks(tiny, tmp_path, monkeypatch):  # noqa: F811
    """In an interactive session Lightning runs several devices by forking the caller (strategy "auto" becomes
    ddp_fork), and the fork's training never reached the run: `devices=2` in a notebook wrote the untrained weights
    as the result ("step 0 of 0"), and the default devices="auto" would on a multi-GPU machine. Now refused first."""
    from lightning.pytorch.trainer.connectors import accelerator_connector

    monkeypatch.setattr(accelerator_connector, "_IS_INTERACTIVE", True)  # what a Jupyter kernel is to Lightning
    out = tmp_path / "run"
    with pytest.raises(swinzoo.SwinzooError) as refused:
        swinzoo.finetune(str(tiny), data=str(image_folder(tmp_path / "data")), max_steps=1, batch_size=4,
                         num_workers=0, devices=2, accelerator="cpu", out=str(out),
                         trainer={"limit_val_batches": 1, "enable_model_summary": False}, console=jupyter_console())
    message = str(refused.value)
    assert "--devices 2" in message and "devices=1" in message and "!swinzoo finetune" in message, message
    assert len(message.splitlines()) == 1 and not out.exists()


def test_a_command_run_from_a_notebook_cell_logs_lines_not_cursor_moves(tiny, tmp_path, trainers,  # noqa: F811
                                                                       monkeypatch):
    """`!swinzoo finetune ...` in a cell runs on a pseudo-terminal (TERM=xterm-color), but its output is the cell's:
    Jupyter renders no cursor moves, so each redraw of the bar became new lines (thousands in a long run)."""
    from swinzoo.train.progress import ProgressLines

    monkeypatch.setenv("JPY_PARENT_PID", "1")  # what a Jupyter kernel passes on to the commands it runs
    swinzoo.finetune(str(tiny), data=str(image_folder(tmp_path / "data")), max_steps=1, batch_size=4, num_workers=0,
                     out=str(tmp_path / "run"), trainer={"limit_val_batches": 1, "enable_model_summary": False},
                     console=Console(force_terminal=True, file=io.StringIO()))
    assert any(isinstance(c, ProgressLines) for c in trainers[0].callbacks)
