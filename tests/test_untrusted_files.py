"""Files made by someone else (a Hub repo, a model or run folder, a scraped image set): what they hold is data, never
markup, terminal control, a path to follow or a size to allocate before it is checked."""

from __future__ import annotations

import json

from safetensors.torch import save_file

import swinzoo
from tests.conftest import run_cli


def crafted(path, source: str = "swin_n_64", provenance: dict | None = None, **config) -> str:
    """A swinzoo .safetensors file holding `source`'s weights under a config with `config` changed, written raw
    (as anyone could write it), so that configs swinzoo itself would refuse to write can be made too."""
    model = swinzoo.load_model(source)
    cfg = {**model.config.to_dict(), **config}
    metadata = {"format": "pt", "swinzoo_config": json.dumps(cfg), "swinzoo_provenance": json.dumps(provenance or {})}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=metadata)
    return str(path)


NANO_NAMES = ["solid", "stripes_0", "stripes_45", "stripes_90", "stripes_135", "checker", "dots", "rings", "circle",
              "frame"]


# ---------------------------------------------------------------------------------------------- rich markup
def test_info_prints_markup_in_class_names_and_provenance_as_text(tmp_path, capsys):
    names = ["[/bold] closes", "[red]red", *NANO_NAMES[2:]]
    model = crafted(tmp_path / "m.safetensors", class_names=names, provenance={"source": "x [/] y [link=z]w"})
    code, out, err = run_cli(["info", model], capsys)
    assert code == 0, err
    assert "[/bold] closes, [red]red" in out
    assert "[/] y [link=z]w" in out
