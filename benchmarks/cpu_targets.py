"""The CPU targets of the performance work, measured in one run and judged: swinzoo against timm in the same process
(fp32 and bf16 autocast, inference and a training step, Swin-T 224 and SwinV2-T 256, batch 8), the share of the
matmul peak, SwinV2-T's bf16 step per GMAC against Swin-T's, and with --memory the peak memory of a checkpointed
Swin-B 384 step. Each target gets the measured figure, its quartiles and met / not met (by how much); a target for
a CPU class this machine is not (AMX) says so instead.

    python benchmarks/cpu_targets.py --memory --out targets.json   # ~4 min on 2 cores of a Zen 5, ~7.5 on a Zen 4
    python benchmarks/cpu_targets.py --smoke                       # nano models, no timm: checks the script runs

Figures for docs/performance.md: note the date, the commit and the CPU model (all in the JSON) next to them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

import torch

from swinzoo import bench
from swinzoo.commands import positive_int, table_console
from swinzoo.hardware import cpu_class, cpu_model, describe_cpu, native_bf16_matmul
from swinzoo.io import atomic_path

MODELS = ("swin_t_224", "swinv2_t_256_w8")  # V1 first: the per-GMAC target divides V2 by V1
SMOKE_MODELS = ("swin_n_64", "swinv2_n_64_w4")
MEMORY_MODEL, MEMORY_BATCH = "swin_b_384", 4
# (precision, mode, least speed-up vs timm, needs AMX); the fp32 training goal depends on how fast timm runs
SPEED_TARGETS = (("fp32", "eval", 1.5, False), ("bf16", "eval", 2.0, True), ("bf16", "train", 1.5, True))
TRAIN_FP32_GOAL, TRAIN_FP32_GOAL_FAST_TIMM, FAST_TIMM_SHARE = 1.25, 1.10, 0.60
EVAL_PEAK_SHARE = 0.75
V2_PER_GMAC_LIMIT = 1.3
MEMORY_LIMIT = 0.5


def measure(models, batch: int, reps: int, vs_timm: bool, precision: str) -> list[bench.Result]:
    """`swinzoo bench MODELS --eval-and-train --precision P [--vs-timm] --json` in a fresh process: the figures it
    prints. One process per precision, because a process's heap remembers what ran before: timm's bf16 inference
    timed after fp32 runs in the same process took 181 against 244 ms a batch (Swin-T, Zen 5), its big buffers no
    longer page-faulted afresh, as they are in a process that only serves bf16."""
    cmd = [sys.executable, "-m", "swinzoo", "bench", *models, "--eval-and-train", "--precision", precision,
           "--batch-size", str(batch), "--reps", str(reps), "--json", *(["--vs-timm"] if vs_timm else [])]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[1:])} failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return [bench.Result(**r) for r in json.loads(out.stdout)["results"]]


def measure_memory(name: str, batch: int, vs_timm: bool = True) -> dict:
    """{model, batch, mib: {impl: peak MiB}} of one training step, each in a fresh process: swinzoo with
    activation checkpointing, timm as its users run it (without; `bench.plan` checkpoints swinzoo only)."""
    specs = bench.plan([name], batch=batch, train=True, grad_ckpt=True, vs_timm=vs_timm)
    return {"model": name, "batch": batch, "mib": {s.impl: bench.measure_memory(s)[0] for s in specs}}


def _find(results: list[bench.Result], name: str, mode: str, impl: str = "swinzoo") -> bench.Result | None:
    return next((r for r in results if (r.name, r.mode, r.impl) == (name, mode, impl)), None)


def _verdict(value: float, goal: float, at_least: bool = True, unit: str = "x") -> str:
    """'met', or by how much not: in the figure's own unit ('x' for ratios, '%' for shares, in points)."""
    if (value >= goal) if at_least else (value <= goal):
        return "met"
    gap = f"{abs(value - goal):.2f}x" if unit == "x" else f"{100 * abs(value - goal):.1f} points"
    return f"not met: {gap} {'short' if at_least else 'over'}"


def _row(target: str, model: str, measured: str, verdict: str) -> dict[str, str]:
    return {"target": target, "model": model, "measured": measured, "verdict": verdict}


def judge(results: dict[str, list[bench.Result]], native_bf16: str | None, models=MODELS,
          memory: dict | None = None) -> list[dict[str, str]]:
    """One row per target and model: what it asks, the measured figure with its quartiles, and the verdict."""
    rows = []
    for name in models:
        train = _find(results.get("fp32", []), name, "train")
        timm_train = _find(results.get("fp32", []), name, "train", "timm")
        if train is None or timm_train is None or "speedup_vs_timm" not in train.extra:
            rows.append(_row("training step >= 1.25x timm, fp32", name, "-", "not measured (needs timm)"))
        else:
            fast_timm = timm_train.peak_share >= FAST_TIMM_SHARE
            goal = TRAIN_FP32_GOAL_FAST_TIMM if fast_timm else TRAIN_FP32_GOAL
            s, (q1, q3) = train.extra["speedup_vs_timm"], train.extra["speedup_vs_timm_quartiles"]
            rows.append(_row(f"training step >= {goal:.2f}x timm, fp32 (timm at {timm_train.peak_share:.0%} of "
                             f"peak: {'>=' if fast_timm else '<'} {FAST_TIMM_SHARE:.0%})", name,
                             f"{s:.2f}x ({q1:.2f}-{q3:.2f})", _verdict(s, goal)))
        for precision, mode, goal, needs_amx in SPEED_TARGETS:
            what = f"{'inference' if mode == 'eval' else 'training step'} >= {goal:.1f}x timm, {precision}"
            what += " (AMX CPUs)" if needs_amx else ""
            r = _find(results.get(precision, []), name, mode)
            if r is None or "speedup_vs_timm" not in r.extra:
                rows.append(_row(what, name, "-", "not measured (needs timm)"))
                continue
            s, (q1, q3) = r.extra["speedup_vs_timm"], r.extra["speedup_vs_timm_quartiles"]
            verdict = _verdict(s, goal)
            if needs_amx and native_bf16 != "AMX":
                verdict = f"n/a: this CPU has {native_bf16 or 'no native bf16'}, not AMX"
            rows.append(_row(what, name, f"{s:.2f}x ({q1:.2f}-{q3:.2f})", verdict))
        r = _find(results.get("fp32", []), name, "eval")
        if r is not None:
            q1, q3 = r.extra["peak_share_quartiles"]
            rows.append(_row(f"inference >= {EVAL_PEAK_SHARE:.0%} of the fp32 matmul peak", name,
                             f"{r.peak_share:.1%} ({q1:.1%}-{q3:.1%}) of {r.matmul_peak_gflops:.0f} GFLOP/s",
                             _verdict(r.peak_share, EVAL_PEAK_SHARE, unit="%")))
    v1, v2 = (_find(results.get("bf16", []), name, "train") for name in models[:2])
    if v1 is not None and v2 is not None:
        ratio = (v2.latency_ms_p50 / v2.gmacs) / (v1.latency_ms_p50 / v1.gmacs)
        rows.append(_row(f"V2 bf16 training step: time per GMAC <= {V2_PER_GMAC_LIMIT}x V1's", f"{v2.name} / {v1.name}",
                         f"{ratio:.2f}x ({v2.latency_ms_p50:.0f} / {v1.latency_ms_p50:.0f} ms per step, "
                         f"{v2.gmacs:.2f} / {v1.gmacs:.2f} GMACs)", _verdict(ratio, V2_PER_GMAC_LIMIT, at_least=False)))
    if memory:
        what = f"checkpointed training step memory <= {MEMORY_LIMIT:.0%} of timm's (batch {memory['batch']})"
        mib = memory["mib"]
        if "timm" not in mib:
            rows.append(_row(what, memory["model"], f"{mib['swinzoo']:.0f} MiB", "not measured (needs timm)"))
        else:
            ratio = mib["swinzoo"] / mib["timm"]
            rows.append(_row(what, memory["model"], f"{ratio:.0%} ({mib['swinzoo']:.0f} / {mib['timm']:.0f} MiB)",
                             _verdict(ratio, MEMORY_LIMIT, at_least=False, unit="%")))
    return rows


def commit() -> str:
    """The checkout's commit, for the figures' record ('unknown' outside a git checkout)."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def print_rows(rows: list[dict[str, str]], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for column in ("target", "model", "measured", "verdict"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["target"], r["model"], r["measured"], r["verdict"])
    table_console(150).print(table)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--reps", type=positive_int, default=16, help="timed rounds per group (default 16)")
    p.add_argument("--memory", action="store_true", help=f"also the {MEMORY_MODEL} checkpointed step's peak memory")
    p.add_argument("--smoke", action="store_true", help="nano models, 2 rounds, no timm: checks the script runs")
    p.add_argument("--out", type=Path, help="also write the figures and verdicts as JSON")
    args = p.parse_args(argv)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    models, reps = (SMOKE_MODELS, 2) if args.smoke else (MODELS, args.reps)
    phases = ["fp32", "bf16"] + (["memory"] if args.memory else [])
    results: dict[str, list[bench.Result]] = {}
    memory = None
    with Progress(TextColumn("targets: {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True)) as progress:
        task = progress.add_task(phases[0], total=len(phases))
        for phase in phases:
            progress.update(task, description=phase)
            if phase == "memory":
                memory = (measure_memory(SMOKE_MODELS[0], 2, vs_timm=False) if args.smoke
                          else measure_memory(MEMORY_MODEL, MEMORY_BATCH))
            else:
                results[phase] = measure(models, args.batch, reps, not args.smoke, phase)
            progress.advance(task)
    native = native_bf16_matmul()
    rows = judge(results, native, models, memory)
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
              "commit": commit(), "cpu": cpu_model(), "cpu_class": cpu_class(), "native_bf16_matmul": native,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "batch": args.batch, "reps": reps}
    print_rows(rows, f"performance targets: {describe_cpu()}, {record['threads']} threads, batch {args.batch}, "
                     f"{reps} rounds, commit {record['commit']}")
    if args.out:
        report = {**record, "targets": rows, "memory": memory,
                  "results": {k: [vars(r) for r in v] for k, v in results.items()}}
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
