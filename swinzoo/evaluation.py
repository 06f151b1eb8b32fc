"""`evaluate` (top-1 / top-5 on a dataset's val split) and `predict` (top-k classes of image files).

The datasets (`swinzoo.train.data`, whose data module is Lightning's) and torchmetrics are imported by the functions
that read data: `predict` needs neither, and they bring Lightning and transformers (about 900 modules)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress

from swinzoo.conversion import read_transferred
from swinzoo.converters import Checkpoint
from swinzoo.converters.objects import source_name, unwrap
from swinzoo.errors import SwinzooError, for_caller, python_api
from swinzoo.eval_precision import PRECISIONS, run_precision, runtime
from swinzoo.hardware import keep_freed_memory
from swinzoo.io import same_file
from swinzoo.live_display import redraws_in_place
from swinzoo.models import SimMIM, SwinBackbone, SwinTransformer
from swinzoo.per_class import ClassTally
from swinzoo.run_folder import BEST_FILE, CKPT_FILE, RUN_FILE
from swinzoo.state_dicts import load_strict
from swinzoo.train.checks import check_whole, max_processes
from swinzoo.train.hf_data import FLAGS, DataOptions


def prepare_model(model: str | SwinTransformer, *, res: int | None = None, window: int | None = None,
                  from_format: str = "auto", arch: str | None = None, trust_checkpoint: bool = False,
                  ema: bool | None = None, console: Console | None = None) -> SwinTransformer:
    """`model` itself (a classifier object, left in its mode: run it under `eval_mode`), or the source it names
    moved to `res` / `window` when they differ from its own (official window choice), in eval mode. The model
    carries `.provenance`."""
    found = unwrap(model)  # a Lightning module's .model, torch.compile's or DataParallel's model: the one inside
    if found is not None and isinstance(found[0], SwinTransformer):
        model = found[0]
    if isinstance(model, SwinTransformer):
        if (res and res != model.config.img_size) or (window and window != model.config.window_size):
            raise SwinzooError("res/window apply to a source that is read; convert the model first (swinzoo.convert)")
        if model.config.num_classes == 0:
            raise SwinzooError("the model has no classifier head (0 classes; a headless encoder): fine-tune it first "
                               "(swinzoo.save_model it, then swinzoo.finetune the file), or give a classifier")
        return model
    if not isinstance(model, (str, os.PathLike, Checkpoint)):  # str() of a module: its repr, as a path too long
        held = type(found[0] if found else model)
        what = {SwinBackbone: "a detection backbone: stage features", SimMIM: "a SimMIM pretraining model"}.get(
            held, "not a swinzoo classifier")
        raise SwinzooError(f"a {held.__name__} object ({what}, no classifier head) cannot classify: give a "
                           "SwinTransformer classifier (swinzoo.load_model) or a source: a zoo name, file, folder or "
                           "hf-hub: reference")
    checkpoint, report = read_transferred(model, res=res, window=window, from_format=from_format, arch=arch,
                                          trust_checkpoint=trust_checkpoint, ema=ema)
    model = source_name(model)
    if checkpoint.config.is_backbone:  # stage features for a detector: no pooling, no head
        raise SwinzooError(f"{model} is a detection backbone (stage features, no classifier head): classify with "
                           "the classifier it came from, or fine-tune one from it (swinzoo finetune --from "
                           f"{model})")
    if checkpoint.config.num_classes == 0:  # e.g. a SimMIM pretraining's encoder: nothing to classify with
        raise SwinzooError(f"{model} has no classifier head (0 classes; a SimMIM pretraining or a headless "
                           f"encoder): fine-tune it first (swinzoo finetune --from {model})")
    if report.changed and console is not None:
        console.print(f"transferred {model}: " + "; ".join(report.lines()[:2]), soft_wrap=True, markup=False)
    net = SwinTransformer(checkpoint.config)
    load_strict(net, {k: v.float() for k, v in checkpoint.state_dict.items()}, str(model))
    net.provenance = checkpoint.provenance
    return net.eval()


_sweep_said: set[str] | None = None  # within `sweep`: the run-log lines already printed
# within `sweep`: the val splits opened, each image checked once for all its models and resolutions
_sweep_data: dict[tuple, object] | None = None


def check_counts(**values) -> None:
    """Counts (each at least 1) given from Python (the CLI's parser types its flags): a str or float would fail deep
    in torch."""
    for name, value in values.items():
        check_whole(value, 1, f"{name}={value!r}")


def run_model(net: SwinTransformer, images: torch.Tensor, device: torch.device, dtype: torch.dtype | None):
    """Logits (float32) of a batch on `device`, under autocast to `dtype` when given."""
    # in the weights' dtype: a model object made .double() or bfloat16 has conv biases that float32 input mismatches
    weights = next(net.parameters()).dtype
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        return net(images.to(device, weights, non_blocking=True)).float()


# models in eval mode for a call now, by id: (calls inside, each submodule's mode before the first)
_EVAL_HOLDS: dict[int, tuple[int, list[tuple[torch.nn.Module, bool]]]] = {}
_EVAL_LOCK = threading.Lock()


@contextlib.contextmanager
def eval_mode(net: torch.nn.Module):
    """`net` in eval mode for the block, then each submodule back in the mode it had: a caller's model that was
    training (or had parts frozen in eval) is left as it was. Counted: calls overlapping on one model (threads)
    keep it in eval until the last ends, which restores the modes the first found."""
    with _EVAL_LOCK:
        inside, modes = _EVAL_HOLDS.get(id(net), (0, []))
        if not inside:
            modes = [(module, module.training) for module in net.modules()]
            net.eval()
        _EVAL_HOLDS[id(net)] = (inside + 1, modes)
    try:
        yield net
    finally:
        with _EVAL_LOCK:
            inside, modes = _EVAL_HOLDS.pop(id(net))
            if inside > 1:
                _EVAL_HOLDS[id(net)] = (inside - 1, modes)
            else:
                for module, training in modes:
                    module.training = training


@python_api()
def evaluate(model: str | SwinTransformer, data: str | None = None, *, res: int | None = None,
             window: int | None = None, batch_size: int = 100, num_workers: int | None = None,
             test_crop: bool | None = None, device: str | None = None, precision: str | None = None,
             compile: bool = False, from_format: str = "auto", arch: str | None = None, trust_checkpoint: bool = False,
             ema: bool | None = None, console: Console | None = None, data_options: DataOptions | dict | None = None,
             per_class: bool = False) -> dict:
    """{"top1", "top5", "n", ...} of `model` (a model or any source) on the val split of `data` (a folder with val/
    class folders, or a folder of class folders, hf:NAME or shapes; default: the model's built-in training
    dataset), preprocessed as the model's metadata says (`swinzoo.data_config`; official: resize to res/0.875 and
    center crop below 384 px, a plain resize from 384). `test_crop` True/False forces the center crop on/off.
    `device` None: a GPU when one is visible; `precision` fp32, bf16 or fp16 (GPU) autocast (None: as a
    fine-tune's metrics.json says its run validated, else fp32); `compile`: torch.compile the model;
    `num_workers` None: half the CPUs. A fine-tune's output (its folder's run.json, or its model file's
    provenance) also says which data it validated on and how (`DataOptions`: splits, columns, carved rows): that
    data is the default, read the same way, so a carved validation split is the run's held-out rows;
    `data_options` (the options given; a dict holds only those) change some of them. `per_class`: also
    "per_class", a row per class with images (`swinzoo.per_class.ClassTally.rows`). `from_format`, `arch`,
    `trust_checkpoint` and `ema` read a source as `read_checkpoint` does."""
    from torchmetrics.classification import MulticlassAccuracy

    from swinzoo.train.data import default_workers, eval_loader

    console = console or Console(stderr=True)
    check_counts(batch_size=batch_size)
    if num_workers is not None:
        check_whole(num_workers, 0, f"num_workers={num_workers!r}", "data loader processes", max_processes())
    dev, dtype = runtime(device, precision or "fp32")  # a bad device or precision before the model is read
    net, data, dataset, to_model = setup(model, data, res=res, window=window, from_format=from_format, arch=arch,
                                         trust_checkpoint=trust_checkpoint, ema=ema, console=console,
                                         data_options=data_options)
    if precision is None:
        precision, note = run_precision(model, dev, getattr(net, "provenance", None) or {})
        dtype = PRECISIONS[precision]
        if note and f"{model}: {note}" not in (_sweep_said or ()):
            console.print(f"note: {for_caller(note)}", soft_wrap=True, markup=False, highlight=False)
            if _sweep_said is not None:
                _sweep_said.add(f"{model}: {note}")
    cfg = net.config
    top1 = MulticlassAccuracy(cfg.num_classes, top_k=1, average="micro")
    top5 = MulticlassAccuracy(cfg.num_classes, top_k=min(5, cfg.num_classes), average="micro")
    workers = default_workers() if num_workers is None else num_workers
    loader = eval_loader(dataset, cfg, batch_size, workers, test_crop)
    net = net.to(dev)
    # each batch's activations are freed and allocated again: on the CPU glibc would hand them back to the kernel
    # and page-fault them in anew at every batch (~1.1x of a Swin-T batch of 100, docs/performance.md)
    memory = keep_freed_memory() if dev.type == "cpu" else None
    if memory and memory not in (_sweep_said or ()):  # once a sweep, which evaluates many times
        console.print(f"[bold]memory[/bold] {memory}", soft_wrap=True)
        if _sweep_said is not None:
            _sweep_said.add(memory)
    runner = torch.compile(net) if compile else net
    tally = ClassTally(cfg.num_classes) if per_class else None
    with eval_mode(net), torch.inference_mode(), progress_display(console, f"eval {cfg.img_size} px",
                                                                  len(loader)) as advance:
        for images, labels in loader:
            logits = run_model(runner, images, dev, dtype).cpu()
            labels = labels if to_model is None else to_model[labels]
            top1.update(logits, labels)
            top5.update(logits, labels)
            if tally is not None:
                tally.update(logits.argmax(-1), labels)
            advance()
    n = len(dataset)
    # a folder of class folders is the split itself (`open_split(bare=True)`)
    split = None if getattr(dataset, "root", None) == Path(data) else "val"
    result = {"top1": share(top1.compute(), n), "top5": share(top5.compute(), n), "n": n, "data": data,
              "split": split, "img_size": cfg.img_size, "window_size": cfg.window_size, "precision": precision}
    if tally is not None:
        result["per_class"] = tally.rows(cfg.class_names or [str(i) for i in range(cfg.num_classes)])
    return result


def setup(model: str | SwinTransformer, data: str | None, *, res: int | None, window: int | None, from_format: str,
          trust_checkpoint: bool, console: Console, data_options: DataOptions | dict | None,
          open_data: bool = True, arch: str | None = None, ema: bool | None = None) -> tuple:
    """(net, data, dataset, label map) of an evaluation, every check made and every note printed; without
    `open_data` only the model is read and moved (dataset and label map None)."""
    from swinzoo.train.data import BUILTIN, open_split

    net = prepare_model(model, res=res, window=window, from_format=from_format, arch=arch,
                        trust_checkpoint=trust_checkpoint, ema=ema, console=console)
    if net.config.num_classes == 1:  # torchmetrics' accuracy refuses it, and top-1 would be 1 whatever the images
        name = model if isinstance(model, (str, os.PathLike)) else "the model"
        raise SwinzooError(f"{name} has 1 class, so accuracy measures nothing: evaluate a classifier of 2 or more "
                           "classes (swinzoo predict still runs it)")
    provenance = getattr(net, "provenance", None) or {}
    data, options, note = data_of_run(model, data, data_options, provenance)
    if data is None:
        raise SwinzooError("--data is required: a folder with val/ class folders (or of class folders), hf:NAME, "
                           f"or the built-in {', '.join(BUILTIN)}")
    if not open_data:
        return net, data, None, None
    cfg = net.config
    # built-in data is drawn at the model's resolution; folders and hf: datasets are the same at every resolution
    key = (data, cfg.img_size if data in BUILTIN else None, json.dumps(options.to_dict()) if options else None)
    dataset = (_sweep_data or {}).get(key)
    if dataset is None:
        dataset = open_split(data, "val", cfg.img_size, options=options, bare=True)
        if _sweep_data is not None:
            _sweep_data[key] = dataset
    if note and note not in (_sweep_said or ()):
        described = note + (f"; {dataset.description}" if getattr(dataset, "description", None) else "")
        console.print(f"note: {for_caller(described)}", soft_wrap=True, markup=False, highlight=False)
        if _sweep_said is not None:
            _sweep_said.add(note)
    to_model, note = label_order(cfg.num_classes, cfg.class_names, dataset.classes,
                                 model if isinstance(model, str) else "MODEL", data)
    if note:
        console.print(f"note: {for_caller(note)}", soft_wrap=True, markup=False)
    return net, data, dataset, to_model


def data_of_run(model, data: str | None, given: DataOptions | dict | None,
                provenance: dict) -> tuple[str | None, DataOptions | None, str | None]:
    """(data, options, a note saying the run's record was used, or None) for `evaluate`: the run's data and
    options when `data` is None or names the run's data, with the options `given` over them; else `data` (or the
    model's built-in dataset) with `given` alone."""
    from swinzoo.train.data import BUILTIN

    if isinstance(given, DataOptions):
        given = {k: v for k, v in given.to_dict().items() if v != getattr(DataOptions(), k)}
    given = {k: v for k, v in (given or {}).items() if v is not None}
    recorded, where = run_record(model, provenance)
    if recorded is None or (data is not None and not same_data(data, recorded[0])):
        data = data or (provenance.get("dataset") if provenance.get("dataset") in BUILTIN else None)
        return data, DataOptions.from_dict(given, "data options") if given else None, None
    run_data, run_options = recorded
    # which rows were trained on is the run's business, not the validation split's
    options = {k: v for k, v in run_options.items() if k != "train_fraction"}
    for one, other in (("val_split", "val_fraction"), ("val_fraction", "val_split")):
        if one in given:  # either says where validation comes from: the one given replaces the run's
            options.pop(other, None)
    options.update(given)
    if data is None and not run_data.startswith("hf:") and run_data not in BUILTIN and not Path(run_data).exists():
        raise SwinzooError(f"the run's data {run_data} ({where}) is not there from here (a path relative to where "
                           "it trained?); give it with --data")
    shown = ", ".join(f"{FLAGS[k]} {v}" for k, v in options.items())
    return data or run_data, DataOptions.from_dict(options, where), (f"data {data or run_data} read as the run "
                                                                    f"read it ({where}{': ' + shown if shown else ''})")


def run_record(model, provenance: dict) -> tuple[tuple[str, dict] | None, str]:
    """((data, data options) of the fine-tune `model` came from, or None, and where they were read): the run.json
    of a run folder, or of the folder holding a run's last.ckpt or best.ckpt (a run not finished yet)."""
    run_file = None
    if isinstance(model, (str, Path)):
        path = Path(model)
        run_file = path.parent / RUN_FILE if path.name in (CKPT_FILE, BEST_FILE) else path / RUN_FILE
    if run_file is not None and run_file.is_file():
        from swinzoo.train.checks import read_plan

        plan = read_plan(run_file)
        return (plan.data, dict(plan.data_options)), str(run_file)
    recorded = provenance.get("data_options")
    if isinstance(recorded, dict) and isinstance(provenance.get("dataset"), str):
        return (provenance["dataset"], dict(recorded)), "its provenance"
    return None, ""


def same_data(a: str, b: str) -> bool:
    """Whether two `--data` values name the same data (a local folder by any path to it)."""
    if a == b:
        return True
    if a.startswith("hf:") != b.startswith("hf:"):
        return False
    return same_file(*(d.removeprefix("hf:") for d in (a, b)))


PIPED_EVERY = 15.0  # seconds between progress lines when the output is a file or a pipe


@contextlib.contextmanager
def progress_display(console: Console, title: str, total: int, redirect_stdout: bool = True):
    """Yields `advance()`, called once per batch: a rich bar on a terminal (or in a notebook with ipywidgets); piped
    or redirected, where a bar redrawn in place shows nothing, a line every PIPED_EVERY seconds and one at the end."""
    if redraws_in_place(console):
        with Progress(console=console, transient=True, redirect_stdout=redirect_stdout) as progress:
            task = progress.add_task(title, total=total)
            yield lambda: progress.advance(task)
        return
    start = last = time.monotonic()
    done = 0

    def advance() -> None:
        nonlocal done, last
        done += 1
        now = time.monotonic()
        if done == total:
            console.print(f"{title}: {total} batches in {now - start:.1f} s", soft_wrap=True, highlight=False)
        elif now - last >= PIPED_EVERY:
            last = now
            rate = done / max(now - start, 1e-9)
            console.print(f"{title}: batch {done}/{total}, {rate:.2f} batches/s, {(total - done) / rate:.0f} s left",
                          soft_wrap=True, highlight=False)

    yield advance


def share(accuracy, n: int) -> float:
    """A micro accuracy over `n` images as the fraction it is (k / n in float64): torchmetrics computes it in
    float32, which JSON would print as 0.8766666650772095 for 263 / 300."""
    return round(float(accuracy) * n) / n if n else float(accuracy)


def label_order(num_classes: int, model_names, data_names, model: str, data: str) -> tuple[torch.Tensor | None,
                                                                                           str | None]:
    """The model's index of each of the data's labels (None: the same index) and a note on how they were matched.

    By name when every data class is one of the model's (another order, or a subset: predictions still range over
    all the model's classes); by index when no name is shared (ImageNet's synset folders beside a head named in
    words) and the counts agree. Names shared only in part are refused: matching by index would pair wrong
    classes silently."""
    model_names, data_names = list(model_names or ()), list(data_names)
    if model_names == data_names:
        return None, None
    shared = set(model_names) & set(data_names)
    if shared and set(data_names) <= set(model_names):
        order = torch.tensor([model_names.index(name) for name in data_names])
        if len(data_names) == len(model_names):
            return order, "the data has the model's classes in another order; labels are matched by name"
        return order, (f"the data has {len(data_names)} of the model's {len(model_names)} classes; labels are "
                       "matched by name, predictions range over all of them")
    if shared:
        alien = [name for name in data_names if name not in shared]
        more = f" and {len(alien) - 3} more" if len(alien) > 3 else ""
        raise SwinzooError(f"{data}: class folders {', '.join(map(repr, alien[:3]))}{more} are not among the model's "
                           f"classes, which others match; name every folder as the model names its classes "
                           f"(`swinzoo info {model}` lists them), or fine-tune on this data (swinzoo finetune)")
    if num_classes != len(data_names):
        raise SwinzooError(f"the model has {num_classes} classes but {data} has {len(data_names)}; fine-tune it "
                           "on this data first (swinzoo finetune)")
    if not model_names:
        return None, None
    return None, (f"class names differ from the model's ({data_names[:3]}... vs {model_names[:3]}...); labels are "
                  "matched by index")


def sweep(models: list[str], resolutions: list[int], data: str | None = None, **options) -> list[dict]:
    """Zero-shot transfer at a glance: `evaluate` of each model at each resolution, moved there by the transfer
    alone (the official window choice, no fine-tuning). Rows {"model", "res", "window", "top1", "top5", "n"}."""
    global _sweep_said, _sweep_data
    # every model, resolution and data / class match checked before the first evaluation: a bad one late in the
    # list must not cost the others' minutes and results (the data is opened with each model's first resolution:
    # its classes do not depend on the resolution; the evaluations reuse what was opened, see `_sweep_data`)
    quiet = Console(file=io.StringIO())
    check = dict(window=options.get("window"), from_format=options.get("from_format", "auto"),
                 arch=options.get("arch"), trust_checkpoint=options.get("trust_checkpoint", False),
                 ema=options.get("ema"), data_options=options.get("data_options"))
    runtime(options.get("device"), options.get("precision") or "fp32")
    _sweep_data = {}
    try:
        for name in models:
            for i, res in enumerate(resolutions):
                setup(name, data, res=res, console=quiet, open_data=i == 0, **check)
        rows, _sweep_said = [], set()
        results = [(name, evaluate(name, data, res=res, **options)) for name in models for res in resolutions]
    finally:
        _sweep_said = _sweep_data = None
    for name, result in results:
        rows.append({"model": name, "res": result["img_size"], "window": result["window_size"],
                     "top1": result["top1"], "top5": result["top5"], "n": result["n"]})
    return rows
