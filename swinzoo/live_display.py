"""Where a rich display redrawn in place (a progress bar) can be shown, and where timed lines must do instead."""

from __future__ import annotations

import importlib.util


def redraws_in_place(console) -> bool:
    """A terminal, or a Jupyter notebook with ipywidgets, where rich draws a live display into an Output widget (as
    Lightning's rich bar does there). Not a file or a pipe, where a bar shows nothing until the end, nor a notebook
    without ipywidgets, where rich's live display only warns: those get a progress line at a steady rate."""
    if console.is_terminal:
        return True
    return console.is_jupyter and importlib.util.find_spec("ipywidgets") is not None
