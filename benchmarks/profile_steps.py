"""Where the time goes: swinzoo's inference pass and training step profiled next to timm's in the same process, each
op's self time summed into kinds (Linear products and the patch convolution, attention products, softmax, layer
norms, GELU, copies, row gathers, other elementwise), in ms per pass; then the fast path's inference attention as two
products and one softmax against SDPA per mask group, interleaved.

    python benchmarks/profile_steps.py --precision bf16 --out prof.json   # Swin-T and SwinV2-T, batch 8
    python benchmarks/profile_steps.py --smoke                            # nano model, no timm: seconds

The performance issue asks, for each missed target, where the time goes: this is that table, on any CPU class or a
GPU (`--device cuda`: device self time). Figures for docs/performance.md go with the date, the commit and the CPU
model (all in the JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch
from torch.profiler import ProfilerActivity, profile

from swinzoo import bench
from swinzoo.commands import positive_int, table_console
from swinzoo.hardware import cpu_model, describe_cpu, resolve_device
from swinzoo.io import atomic_path
from swinzoo.models import fast_path

MODELS = ("swin_t_224", "swinv2_t_256_w8")
SMOKE_MODELS = ("swin_n_64",)
# op name fragments -> kind, first match wins (aten's names; oneDNN's Linear is mkldnn::_linear_pointwise)
KINDS = (
    ("Linear products, patch conv", ("linear", "addmm", "aten::mm", "mkldnn_matmul", "convolution")),
    ("attention products", ("bmm", "baddbmm", "scaled_dot_product", "flash_attention", "efficient_attention")),
    ("softmax", ("softmax",)),
    ("layer norms", ("layer_norm",)),
    ("GELU", ("gelu",)),
    ("copies", ("copy_", "_to_copy", "clone", "contiguous", "cat", "stack")),
    ("row gathers", ("index_select", "index_add", "aten::index", "gather", "scatter", "roll")),
    ("elementwise", ("add", "mul", "div", "sub", "sum", "norm", "sigmoid", "exp", "clamp", "fill", "where",
                     "masked", "neg", "reciprocal", "lerp", "sqrt", "rsqrt", "mean", "pow")),
)


def kind_of(op: str) -> str:
    for kind, fragments in KINDS:
        if any(f in op for f in fragments):
            return kind
    return "other"


def profiled(step, passes: int, device: str) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """(ms per pass by kind, the top ops by self time) of `passes` calls of `step`, after two warm-up calls."""
    for _ in range(2):
        step()
    bench._sync(device)
    cuda = bench.device_type(device) == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(passes):
            step()
        bench._sync(device)
    kinds: dict[str, float] = {}
    ops = []
    for event in prof.key_averages():
        us = event.self_device_time_total if cuda else event.self_cpu_time_total
        if us <= 0:
            continue
        ms = us / 1e3 / passes
        kinds[kind_of(event.key)] = kinds.get(kind_of(event.key), 0.0) + ms
        ops.append((event.key, ms))
    return kinds, sorted(ops, key=lambda o: -o[1])[:12]


@contextlib.contextmanager
def sdpa_attention():
    """The fast path's inference attention through SDPA per mask group on every device and dtype."""
    with mock.patch.object(fast_path, "eager_attention", lambda q: False):
        yield


def attention_choice(name: str, batch: int, precision: str, device: str, reps: int) -> dict:
    """Inference with the fast path's products + softmax against SDPA per mask group, interleaved, median ms."""
    spec = bench.Spec(name, batch=batch, precision=precision, device=device)
    model, res, _ = bench.build(spec)
    step = bench.make_step(model, spec, res)
    times: dict[str, list[float]] = {"products and softmax": [], "SDPA per mask group": []}
    for i in range(reps + 1):
        for choice in times:
            with sdpa_attention() if choice.startswith("SDPA") else contextlib.nullcontext():
                bench._sync(device)
                start = time.perf_counter()
                step()
                bench._sync(device)
            if i:  # the first round warms both up
                times[choice].append(1e3 * (time.perf_counter() - start))
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratios = [s / e for e, s in zip(times["products and softmax"], times["SDPA per mask group"])]
    return {"name": name, "precision": precision, "ms": medians, "sdpa_over_products": statistics.median(ratios)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--passes", type=positive_int, default=3, help="profiled calls per step (default 3)")
    p.add_argument("--reps", type=positive_int, default=8, help="interleaved rounds of the attention choice")
    p.add_argument("--device", default=None, help="cpu (default without a GPU) or cuda")
    p.add_argument("--smoke", action="store_true", help="nano model, no timm, one pass: checks the script runs")
    p.add_argument("--out", type=Path, help="also write the tables as JSON")
    args = p.parse_args(argv)
    device = str(resolve_device(args.device))
    models = SMOKE_MODELS if args.smoke else MODELS
    passes, reps = (1, 1) if args.smoke else (args.passes, args.reps)
    impls = ("swinzoo",) if args.smoke else ("swinzoo", "timm")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    cases = [(n, impl, train) for n in models for train in (False, True) for impl in impls]
    profiles, choices = [], []
    with Progress(TextColumn("profile: {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True)) as progress:
        task = progress.add_task("", total=len(cases) + len(models))
        for name, impl, train in cases:
            mode = "train" if train else "eval"
            progress.update(task, description=f"{name} {impl} {mode}")
            spec = bench.Spec(name, impl=impl, batch=args.batch, train=train, precision=args.precision, device=device)
            model, res, _ = bench.build(spec)
            kinds, top = profiled(bench.make_step(model, spec, res), passes, device)
            profiles.append({"name": name, "impl": impl, "mode": mode, "ms_per_pass": kinds, "top_ops": top})
            del model
            progress.advance(task)
        for name in models:
            progress.update(task, description=f"{name} attention choice")
            choices.append(attention_choice(name, args.batch, args.precision, device, reps))
            progress.advance(task)
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
              "cpu": cpu_model(), "device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "precision": args.precision, "batch": args.batch, "passes": passes}
    console = table_console(160)
    for name in models:
        rows = [r for r in profiles if r["name"] == name]
        table = Table(title=f"{name}, {args.precision}, batch {args.batch}, ms per pass (self time), "
                            f"{describe_cpu() if device == 'cpu' else device}, {record['threads']} threads")
        table.add_column("kind")
        for r in rows:
            table.add_column(f"{r['impl']} {r['mode']}", justify="right")
        for kind in [k for k, _ in KINDS] + ["other"]:
            table.add_row(kind, *(f"{r['ms_per_pass'].get(kind, 0.0):.1f}" for r in rows))
        table.add_row("total", *(f"{sum(r['ms_per_pass'].values()):.1f}" for r in rows))
        console.print(table)
    for c in choices:
        ms = ", ".join(f"{k} {v:.1f} ms" for k, v in c["ms"].items())
        console.print(f"{c['name']} inference attention, {c['precision']}: {ms}; SDPA takes "
                      f"{c['sdpa_over_products']:.2f}x the products' time (median of per-round ratios)")
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps({**record, "profiles": profiles, "attention_choice": choices}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
