"""Where a rich display redrawn in place (a progress bar) can be shown, and where timed lines must do instead."""

from __future__ import annotations

import importlib.util
import os


def redraws_in_place(console) -> bool:
    """A terminal, or a Jupyter notebook with ipywidgets, where rich draws a live display into an Output widget (as
    Lightning's rich bar does there). Not a file or a pipe, where a bar shows nothing until the end, nor a notebook
    without ipywidgets, where rich's live display only warns: those get a progress line at a steady rate."""
    if console.is_jupyter:
        return importlib.util.find_spec("ipywidgets") is not None
    # a command a Jupyter kernel started (`!swinzoo finetune ...` in a cell) writes into the cell on a pseudo-terminal,
    # with FORCE_COLOR set even when piped: the cell renders no cursor moves, so every redraw would be new lines
    return console.is_terminal and "JPY_PARENT_PID" not in os.environ
