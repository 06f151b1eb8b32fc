"""fp32 products on this CPU: torch's BLAS (MKL on x86 wheels) against oneDNN, at the Linear shapes of a Swin-T
training step, forward and both backward products, as `swinzoo.models.cpu_gemm` runs them.

`cpu_gemm`'s "auto" takes oneDNN on AMD CPUs with AVX-512, where it was measured faster (MKL runs its AVX2 kernels
there): every product on Zen 5, all but the weight gradients on Zen 4; on Intel CPUs with AVX-512 only the eval-mode
products on packed weights (the forward column's third figure). On any other CPU this script says whether oneDNN
would pay: `SWINZOO_CPU_GEMM=onednn` then switches it on (and with it the packed fp32 weights of eval mode).

    python benchmarks/cpu_gemm.py [--batch 8] [--reps 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch
from rich.table import Table

from swinzoo import bench
from swinzoo.commands import positive_int, table_console
from swinzoo.hardware import describe_cpu
from swinzoo.io import atomic_path
from swinzoo.models import cpu_gemm

# Swin-T at 224: (tokens per image, channels) per stage, and the stage's Linear layers as (name, in, out)
STAGES = ((3136, 96), (784, 192), (196, 384), (49, 768))


def shapes(batch: int) -> list[tuple[str, int, int, int]]:
    """(name, M tokens, K in, N out) of every distinct Linear of a Swin-T step at `batch` images."""
    rows = []
    for i, (tokens, c) in enumerate(STAGES, 1):
        m = batch * tokens
        rows += [(f"stage {i} qkv", m, c, 3 * c), (f"stage {i} proj", m, c, c), (f"stage {i} fc1", m, c, 4 * c),
                 (f"stage {i} fc2", m, 4 * c, c)]
        if i < len(STAGES):
            rows.append((f"stage {i} merge", m // 4, 4 * c, 2 * c))
    return rows


def measure(m: int, k: int, n: int, reps: int) -> dict[str, float]:
    """GFLOP/s of x W^T, g W and g^T x by aten and by `cpu_gemm` with oneDNN on (which keeps MKL for a narrow square
    weight gradient and below `cpu_gemm.MIN_MACS`, and takes the faster order for the others); x W^T also by oneDNN
    on a packed weight, the eval-mode product."""
    x, w, g = torch.randn(m, k), torch.randn(n, k), torch.randn(m, n)
    packed = torch.ops.mkldnn._reorder_linear_weight(w, m)  # as an eval-mode `cpu_gemm.Linear` keeps it
    flops = 2 * m * k * n / 1e9
    steps = {"forward": (lambda: torch.mm(x, w.t()), lambda: cpu_gemm.mm(x, w.t()),
                         lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")),
             "input grad": (lambda: torch.mm(g, w), lambda: cpu_gemm.mm(g, w)),
             "weight grad": (lambda: torch.mm(g.t(), x), lambda: cpu_gemm.weight_grad(g, x))}
    out = {}
    with cpu_gemm.using("onednn"):
        for product, calls in steps.items():
            timed = bench.time_interleaved(list(calls), "cpu", reps, 1)
            for library, times in zip(("aten", "onednn", "packed"), timed):
                out[f"{product} {library}"] = flops / statistics.median(times)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=positive_int, default=8, help="images of a Swin-T step (default 8)")
    p.add_argument("--reps", type=positive_int, default=10, help="timed calls per product (median)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)
    if not cpu_gemm.onednn_available():
        print("error: this torch build has no oneDNN; nothing to compare", file=sys.stderr)
        return 2
    rows = [("2048^3", 2048, 2048, 2048), *shapes(args.batch)]
    table = Table(title=f"fp32 GFLOP/s, aten (MKL) / cpu_gemm with oneDNN on (/ oneDNN on a packed weight): "
                        f"{describe_cpu()}, {torch.get_num_threads()} threads, batch {args.batch}; "
                        f"auto: {cpu_gemm.backend()}, weight gradients {cpu_gemm.weight_grad_backend()}")
    for col in ("product", "M x K -> N", "forward (eval: packed)", "input grad", "weight grad"):
        table.add_column(col, justify="left" if col == "product" else "right")
    report = []
    for name, m, k, n in rows:
        r = measure(m, k, n, args.reps)
        report.append({"name": name, "m": m, "k": k, "n": n, **r})
        cells = [f"{r[f'{p} aten']:.0f} / {r[f'{p} onednn']:.0f}" for p in ("forward", "input grad", "weight grad")]
        cells[0] += f" / {r['forward packed']:.0f}"
        table.add_row(name, f"{m} x {k} -> {n}", *cells)
    table_console(140).print(table)  # piped: wide enough that no row wraps
    if args.json:
        with atomic_path(args.json) as tmp, open(tmp, "w") as f:
            json.dump({"cpu": describe_cpu(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                       "auto": cpu_gemm.backend(),
                       "auto_weight_grad": cpu_gemm.weight_grad_backend(), "products": report}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
