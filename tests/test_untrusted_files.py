"""Files made by someone else (a Hub repo, a model or run folder, a scraped image set): what they hold is data, never
markup, terminal control, a path to follow or a size to allocate before it is checked."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import save_file

import swinzoo
from tests.conftest import one_error_line, run_cli


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


def test_run_log_prints_class_names_paths_and_report_lines_as_text():
    """Class names come from folder names or a dataset's labels, notes from a file's keys: printed as they are."""
    from types import SimpleNamespace

    from rich.console import Console

    from swinzoo.train.options import Plan
    from swinzoo.train.recipes import load_recipe
    from swinzoo.train.run import print_finetune_plan
    from swinzoo.weight_transfer import TransferReport

    cfg = swinzoo.load_model("swin_n_64").config.replace(num_classes=2, class_names=["[red]y", "[/bold]z"])
    recipe = load_recipe("nano_finetune")
    plan = Plan(out="runs/[b]out", source="swin_n_64", config=cfg.to_dict(), recipe=recipe.to_dict(),
                data="images[v2]")
    module = SimpleNamespace(peak_lr=1e-4, warmup_lr=1e-7, min_lr=1e-6)
    console = Console(record=True, width=400)
    print_finetune_plan(console, plan, module, 32, recipe, None)
    TransferReport(notes=["dropped 1 other keys: backbone.[/]x"]).print_to(console)
    text = console.export_text()
    assert "classes 2: [red]y, [/bold]z" in text
    assert "data images[v2]," in text and "runs/[b]out" in text
    assert "dropped 1 other keys: backbone.[/]x" in text


# ---------------------------------------------------------------------------------------------- terminal control
def test_file_names_with_terminal_controls_are_shown_escaped(tmp_path, capsys):
    """An image set from the web names its files: predict's lines and the error naming a bad file escape them."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(folder / "a\x1b]0;owned\x07.png")
    code, out, err = run_cli(["predict", "swin_n_64", folder, "--topk", "1"], capsys)
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out
    assert out.startswith(str(folder / r"a\x1b]0;owned\x07.png") + ": ")
    (folder / "b\x1b[2J\n.png").write_bytes(b"not an image")
    code, out, err = run_cli(["predict", "swin_n_64", folder / "b\x1b[2J\n.png"], capsys)
    assert code == 2
    line = one_error_line(err, r"b\x1b[2J\n.png")
    assert "\x1b" not in line


# ---------------------------------------------------------------------------------------------- declared sizes
@pytest.mark.parametrize("change, needle", [
    # V2 weights do not depend on the window: a 9 MB file declaring a 2048 window asked for 281 TB at once (the
    # (N, N) position index of N = 2048^2 tokens) in `info`'s shape check; windows of 100-200 fit a large machine
    # and took gigabytes per block
    (dict(img_size=8192, window_size=2048), "windows [2048, 1024, 512, 256]"),
    # weights need not hold every block for the shape check: 5000 blocks were built (seconds; 200000: minutes)
    (dict(depths=[5000, 2, 2, 2]), "5006 blocks"),
    # the window plans of each stage are built at the resolution (grid^2 gather indices): at 65536 px, 23 GB (the
    # test machine's kernel killed the process); just above the ceiling, little
    (dict(img_size=8320), "8320 px"),
])
def test_configs_declaring_absurd_sizes_are_refused_before_building(tmp_path, capsys, change, needle):
    model = crafted(tmp_path / "m.safetensors", "swinv2_n_64_w4", **change)
    code, out, err = run_cli(["info", model], capsys)
    assert code == 2, err
    one_error_line(err, needle)


# ---------------------------------------------------------------------------------------------- links
def test_push_does_not_upload_what_a_curves_link_points_at(tmp_path, capsys):
    """A run folder from someone else (a tarball keeps links): its curves.png linking to the user's Hub token or SSH
    key was copied into the pushed folder, public on the Hub."""
    secret = tmp_path / "token"
    secret.write_text("hf_secret\n")
    run = tmp_path / "run"
    run.mkdir()
    crafted(run / "model.safetensors", provenance={"finetune": {"top1": 0.5, "n": 8}})
    (run / "metrics.json").write_text(json.dumps({"top1": 0.5, "n": 8}))
    (run / "curves.png").symlink_to(secret)
    preview = tmp_path / "preview"
    code, out, err = run_cli(["push", run, "--repo", "me/model", "--dry-run", preview], capsys)
    assert code == 2, err
    one_error_line(err, "curves.png")
    assert not preview.exists()
    (run / "curves.png").unlink()
    (run / "curves.png").write_text("hf_secret\n")  # no PNG either
    code, out, err = run_cli(["push", run, "--repo", "me/model", "--dry-run", preview], capsys)
    assert code == 2 and not preview.exists(), err


# ---------------------------------------------------------------------------------------------- recipes a file names
@pytest.mark.parametrize("named", ["path", "mapping"])
def test_a_source_names_only_packaged_recipes(tmp_path, named):
    """The recipe a model's provenance names is chosen without --recipe: a path in a downloaded file read a YAML file
    of this machine as the recipe, a mapping set any recipe key (`data` a local folder to train on and push)."""
    from swinzoo.train.module import SwinClassifier
    from swinzoo.train.recipes import finetune_recipe

    local = tmp_path / "elsewhere.yaml"
    local.write_text("base_lr: 0.5\ndata: /home/someone/photos\n")
    source_recipe = str(local) if named == "path" else {"base_lr": 0.5, "data": "/home/someone/photos"}
    recipe, _, why = finetune_recipe(None, {}, 1, 64, 10, None, source_recipe)
    assert recipe.name == "finetune" and recipe.base_lr != 0.5 and recipe.data is None
    assert "not a packaged" in why
    model = crafted(tmp_path / "m.safetensors", provenance={"finetune_recipe": source_recipe})
    module = SwinClassifier.from_pretrained(model, num_classes=3)
    assert module.recipe.name == "finetune" and module.recipe.base_lr != 0.5
    assert finetune_recipe(None, {}, 1, 64, 10, None, "nano_finetune")[0].name == "nano_finetune"


# ---------------------------------------------------------------------------------------------- model cards
def test_model_card_shows_provenance_text_as_text(tmp_path, capsys):
    """Pushing a model someone else made puts its provenance in your card: a backtick or a newline in it ended the
    code span and wrote its own headings, links and images into the card."""
    evil = "x`\n\n## Fake results\n[click](https://example.com/a) <img src=https://example.com/t.png>"
    provenance = {"source": evil, "dataset": evil, "recipe": {"name": evil}, "finetune": {"command": evil},
                  "transfer": {"from": {"img_size": evil, "window_size": 4}, "notes": [evil]}}
    model = crafted(tmp_path / "m.safetensors", provenance=provenance)
    code, out, err = run_cli(["push", model, "--repo", "me/model", "--dry-run", tmp_path / "preview"], capsys)
    assert code == 0, err
    from markdown_it import MarkdownIt  # rich's markdown parser: the card as the Hub renders it (CommonMark)

    card = (tmp_path / "preview" / "README.md").read_text()
    html = MarkdownIt("commonmark").render(card.split("---\n", 2)[2])
    assert "Fake results" in html and "<h2>Fake" not in html
    assert 'href="https://example.com' not in html and "<img" not in html


def _feed_fifo_if_read(fifo, seconds: float = 5.0) -> None:
    """Should a reader open `fifo` (the bug), give it `{}` so it returns instead of waiting forever."""
    import os
    import threading
    import time

    def feed() -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while no one reads
            except OSError:
                time.sleep(0.05)
                continue
            os.write(fd, b"{}")
            os.close(fd)
            return

    threading.Thread(target=feed, daemon=True).start()


def test_folder_json_files_that_are_no_regular_files_or_huge_are_refused(tmp_path, capsys):
    """A model or run folder from an archive: config.json linking to /dev/zero or a pipe was read forever (memory
    without end, or a hang), a sparse one of a terabyte read whole."""
    import os

    folder = tmp_path / "timm"
    swinzoo.export("swin_n_64", "timm", folder)
    (folder / "config.json").unlink()
    os.mkfifo(tmp_path / "pipe")
    (folder / "config.json").symlink_to(tmp_path / "pipe")
    _feed_fifo_if_read(tmp_path / "pipe")
    code, out, err = run_cli(["info", folder], capsys)
    assert code == 2
    one_error_line(err, "config.json", "not a regular file")
    (folder / "config.json").unlink()
    with open(folder / "config.json", "wb") as f:
        f.truncate(2**40)  # sparse: no disk used
    code, out, err = run_cli(["info", folder], capsys)
    assert code == 2
    one_error_line(err, "config.json", "1048576 MiB")


@pytest.mark.parametrize("change, missing", [
    # a 4.5 MB file whose config declares 3 million classes but holds no head: predict built and ran a 3 GB head
    # (9 GB at its peak) of fresh weights; export wrote it
    (dict(num_classes=3_000_000, class_names=None), "head.weight"),
    # an absolute position embedding (at 8192 px and 768 channels, 12 GB), likewise never in the file
    (dict(ape=True), "absolute_pos_embed"),
])
def test_a_config_must_describe_only_tensors_its_file_holds(tmp_path, capsys, change, missing):
    model = swinzoo.load_model("swin_n_64")
    cfg = {**model.config.to_dict(), **change}
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("head.")}
    save_file(tensors, str(tmp_path / "m.safetensors"),
              metadata={"format": "pt", "swinzoo_config": json.dumps(cfg)})
    code, out, err = run_cli(["info", tmp_path / "m.safetensors"], capsys)
    assert code == 2, out
    one_error_line(err, missing, "does not hold")


def test_image_links_to_pipes_are_named_not_waited_on(tmp_path, capsys):
    """An image set from an archive: a .png linking to a pipe hung the image check (and Ctrl-C, which waits for the
    check's threads) until something wrote to the pipe; predict likewise."""
    import os

    from PIL import Image

    for split in ("train", "val"):
        for name in ("solid", "frame"):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "data" / split / name / "a.png")
    os.mkfifo(tmp_path / "pipe")
    link = tmp_path / "data" / "val" / "solid" / "b.png"
    link.symlink_to(tmp_path / "pipe")
    _feed_fifo_if_read(tmp_path / "pipe")
    code, out, err = run_cli(["eval", "swin_n_64", "--data", tmp_path / "data", "--num-workers", "0"], capsys)
    assert code == 2
    one_error_line(err, "b.png", "not a regular file")
    _feed_fifo_if_read(tmp_path / "pipe")
    code, out, err = run_cli(["predict", "swin_n_64", link], capsys)
    assert code == 2
    one_error_line(err, "b.png", "not a regular file")
