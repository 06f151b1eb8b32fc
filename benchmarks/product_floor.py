"""What a speed target leaves for everything but the products: each library's step timed, the matrix products of
one step recorded (shapes, strides, dtypes) and replayed alone, and the rest of the step set against what the
target allows.

    python benchmarks/product_floor.py --precision bf16 --mode train --goal 1.5 --out floor.json
    python benchmarks/product_floor.py --smoke   # nano model, no timm: checks the script runs

The products are the Linear products (aten's mm / addmm, oneDNN's `_linear_pointwise` on a packed weight), the
attention products (bmm / baddbmm) and CPU SDPA's fused kernel, each replayed on fresh random inputs laid out as the
step had them, the median of `--reps` calls. Alone, a product reads warm inputs and makes no denormals, so the
replayed sum is about the least the step's products can take. A target of `goal` x timm's step then leaves
`timm step / goal - swinzoo's products alone` for everything else: layer norms, GELU, softmax, residual adds,
casts, copies and gathers, and the products' own slowdown inside the step (cache-cold operands), which the line
below the table sets against what they take now. Both libraries run in one process, their steps interleaved, under
glibc's default malloc as `swinzoo bench` and benchmarks/cpu_targets.py judge the targets (`--malloc keep`: as
`swinzoo finetune` and `eval` run). Figures for docs/performance.md go with the date, the commit and the CPU model
(all in the JSON).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from swinzoo import bench
from swinzoo.commands import positive_int, table_console
from swinzoo.hardware import cpu_model, describe_cpu, keep_freed_memory
from swinzoo.io import atomic_path

MODELS = ("swin_t_224", "swinv2_t_256_w8")
SMOKE_MODELS = ("swin_n_64",)
SDPA = "aten::_scaled_dot_product_flash_attention_for_cpu"
PRODUCTS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::baddbmm_",
            "mkldnn::_linear_pointwise", SDPA)
ATTENTION = ("aten::bmm", "aten::baddbmm", "aten::baddbmm_", SDPA)


def recorded_products(step) -> tuple[list[dict], float]:
    """(the product calls of one `step` as {name, shapes, strides, dtypes, scalars}, their time in ms in the step).
    None of these ops calls another of them (checked on both libraries' steps), so each is counted once."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    calls, in_step_us = [], 0.0
    for event in prof.events():
        if event.name in PRODUCTS:
            calls.append({"name": event.name, "shapes": event.structured_input_shapes,
                          "strides": event.structured_input_strides, "dtypes": event.input_dtypes,
                          "scalars": event.concrete_inputs})
            in_step_us += event.cpu_time_total
    return calls, in_step_us / 1e3


_DTYPES = {"float": torch.float32, "double": torch.float64, "c10::BFloat16": torch.bfloat16,
           "c10::Half": torch.float16}


def _tensor(shape, stride, dtype: str) -> torch.Tensor:
    """Random values in a fresh buffer, laid out with `stride` (a broadcast dim's stride 0 kept)."""
    size = 1 + sum((n - 1) * s for n, s in zip(shape, stride)) if all(shape) else 0
    return torch.randn(size, dtype=_DTYPES[dtype]).as_strided(shape, stride)


def replay(call: dict):
    """A closure making `call`'s product again on fresh inputs of the same shapes, strides and dtypes."""
    name, shapes, strides, dtypes = call["name"], call["shapes"], call["strides"], call["dtypes"]
    if name == "mkldnn::_linear_pointwise":  # (x, packed weight (opaque: no strides), bias, attr, scalars, algo)
        x = _tensor(shapes[0], strides[0], dtypes[0])
        rows = max(1, x.numel() // x.shape[-1])
        weight = torch.ops.mkldnn._reorder_linear_weight(torch.randn(shapes[1], dtype=_DTYPES[dtypes[1]]), rows)
        bias = _tensor(shapes[2], strides[2], dtypes[2]) if shapes[2] else None
        return lambda: torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    if name == SDPA:  # (q, k, v, dropout_p, is_causal, attn_mask, scale)
        q, k, v = (_tensor(shapes[i], strides[i], dtypes[i]) for i in range(3))
        mask = _tensor(shapes[5], strides[5], dtypes[5]) if shapes[5] else None
        return lambda: torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=mask)
    tensors = [_tensor(s, st, d) for s, st, d in zip(shapes, strides, dtypes) if s or d in _DTYPES]
    op = getattr(torch.ops.aten, name.split("::")[1]).default
    if name in ("aten::addmm", "aten::addmm_", "aten::baddbmm", "aten::baddbmm_"):
        beta, alpha = (s if isinstance(s, (int, float)) else 1 for s in call["scalars"][3:5])
        return lambda: op(*tensors[:3], beta=beta, alpha=alpha)
    return lambda: op(*tensors[:2])


def products_alone(calls: list[dict], reps: int) -> dict[str, float]:
    """ms the recorded products take replayed one by one, each the median of `reps` calls after one warm-up, summed
    by kind: Linear products, attention products (with SDPA's fused kernel)."""
    total = {"linear": 0.0, "attention": 0.0}
    for call in calls:
        (seconds,) = bench.time_interleaved([replay(call)], "cpu", reps, warmup=1)
        total["attention" if call["name"] in ATTENTION else "linear"] += statistics.median(seconds) * 1e3
    return total


def measure(name: str, precision: str, mode: str, batch: int, reps: int, impls) -> list[dict]:
    specs = {impl: bench.Spec(name, impl=impl, batch=batch, train=mode == "train", precision=precision)
             for impl in impls}
    steps = {}
    for impl, spec in specs.items():
        model, res, _ = bench.build(spec)
        steps[impl] = bench.make_step(model, spec, res)
    # the steps interleaved round by round, as `swinzoo bench` times them
    seconds = bench.time_interleaved(list(steps.values()), "cpu", reps, warmup=2)
    rows = []
    for (impl, step), per_round in zip(steps.items(), seconds):
        times = [t * 1e3 for t in per_round]
        calls, in_step = recorded_products(step)
        ms = statistics.median(times)
        alone = products_alone(calls, reps)
        total = sum(alone.values())
        rows.append({"model": name, "impl": impl, "precision": precision, "mode": mode, "step_ms": ms,
                     "step_quartiles": [bench.percentile(times, 0.25), bench.percentile(times, 0.75)],
                     "products": len(calls), "products_in_step_ms": in_step,
                     "linear_alone_ms": alone["linear"], "attention_alone_ms": alone["attention"],
                     "products_alone_ms": total, "rest_ms": ms - total})
    return rows


def budget(rows: list[dict], goal: float) -> dict | None:
    """What `goal` x timm leaves swinzoo's rest of the step, and the cut that needs (None without timm)."""
    ours = next(r for r in rows if r["impl"] == "swinzoo")
    theirs = next((r for r in rows if r["impl"] == "timm"), None)
    if theirs is None:
        return None
    allowed_step = theirs["step_ms"] / goal
    allowed_rest = allowed_step - ours["products_alone_ms"]
    return {"model": ours["model"], "goal": goal, "ratio_now": theirs["step_ms"] / ours["step_ms"],
            "allowed_step_ms": allowed_step, "allowed_rest_ms": allowed_rest, "rest_ms": ours["rest_ms"],
            "rest_cut": 1 - allowed_rest / ours["rest_ms"] if ours["rest_ms"] > 0 else 0.0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--mode", choices=("eval", "train"), default="train")
    p.add_argument("--goal", type=float, default=1.5, help="the target, x timm's step (default 1.5)")
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--reps", type=positive_int, default=8, help="timed rounds of the steps, and calls per product")
    p.add_argument("--smoke", action="store_true", help="nano model, no timm, one round: checks the script runs")
    p.add_argument("--malloc", choices=("default", "keep"), default="default",
                   help="glibc as it is (as `swinzoo bench` and benchmarks/cpu_targets.py judge the targets), or "
                   "keeping freed memory, as `swinzoo finetune` and `eval` run: no page faults for either library")
    p.add_argument("--out", type=Path, help="also write the tables as JSON")
    args = p.parse_args(argv)
    if args.malloc == "keep" and keep_freed_memory() is None:
        args.malloc = "default"
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    models, impls = (SMOKE_MODELS, ("swinzoo",)) if args.smoke else (MODELS, ("swinzoo", "timm"))
    reps = 2 if args.smoke else args.reps
    rows, budgets = [], []
    with Progress(TextColumn("product floor: {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True)) as progress:
        task = progress.add_task("", total=len(models))
        for name in models:
            progress.update(task, description=f"{name} {args.precision} {args.mode}")
            model_rows = measure(name, args.precision, args.mode, args.batch, reps, impls)
            rows += model_rows
            if (b := budget(model_rows, args.goal)) is not None:
                budgets.append(b)
            progress.advance(task)
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
              "cpu": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "precision": args.precision, "mode": args.mode, "batch": args.batch, "goal": args.goal,
              "malloc": args.malloc}
    console = table_console(140)
    table = Table(title=f"{args.precision} {args.mode}, batch {args.batch}, ms a step (medians), {describe_cpu()}, "
                        f"{record['threads']} threads, malloc {args.malloc}")
    for col in ("model", "impl", "step", "products", "products in the step", "Linear alone", "attention alone",
                "rest"):
        table.add_column(col, justify="left" if col in ("model", "impl") else "right")
    for r in rows:
        table.add_row(r["model"], r["impl"], f"{r['step_ms']:.1f}", str(r["products"]),
                      f"{r['products_in_step_ms']:.1f}", f"{r['linear_alone_ms']:.1f}",
                      f"{r['attention_alone_ms']:.1f}", f"{r['rest_ms']:.1f}")
    console.print(table)
    for b in budgets:
        console.print(f"{b['model']}: {b['ratio_now']:.2f}x timm now; {b['goal']}x allows a {b['allowed_step_ms']:.0f} "
                      f"ms step, so {b['allowed_rest_ms']:.0f} ms beside the products alone, where the rest takes "
                      f"{b['rest_ms']:.0f}: {b['rest_cut']:.0%} of it to go")
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps({**record, "rows": rows, "budgets": budgets}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
