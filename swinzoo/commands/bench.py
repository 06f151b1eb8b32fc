"""`swinzoo bench`: a thin wrapper over `swinzoo.bench` (`plan`, then `run`: throughput, latency, peak memory and
matmul-peak share, optionally against timm), printed as a table, JSON or a plot."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from swinzoo.commands import examples, non_negative_int, positive_int, print_json, table_console

EPILOG = examples(
        "swinzoo bench swin_t_224 swinv2_t_256_w8 --vs-timm --eval-and-train",
        "swinzoo bench swin_t_224 --res 224 448 672 --vs-timm --plot sweep.png",
        "swinzoo bench swin_b_384 --precision bf16 --memory --json",
        "swinzoo bench swin_t_224 --train --precision bf16 --vs-timm --malloc keep",
        "swinzoo bench swin_t_224 --runtime onnxruntime")


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark zoo models (images/s, latency, memory), optionally vs timm",
                              epilog=EPILOG)
    p.add_argument("names", nargs="*", metavar="NAME", default=["swin_t_224"], help="zoo names (default: swin_t_224)")
    p.add_argument("--res", type=positive_int, nargs="+",
                   help="resolutions (default: each model's own); several = a sweep")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per step")
    # the spelling of earlier versions, unlisted: eval, predict, finetune and timm's benchmark say --batch-size
    p.add_argument("--batch", dest="batch_size", type=positive_int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--train", action="store_true", help="time a training step (forward, backward, SGD step)")
    p.add_argument("--eval-and-train", action="store_true", help="time both inference and a training step")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16 = autocast to bfloat16")
    p.add_argument("--compile", action="store_true", help="torch.compile every model (timm's too)")
    p.add_argument("--grad-ckpt", action="store_true", help="activation checkpointing for the swinzoo models")
    p.add_argument("--vs-timm", action="store_true", help="also run timm's build of each model, interleaved")
    p.add_argument("--runtime", choices=("onnxruntime",), help="also time the model's ONNX export (swinzoo export "
                   "--to onnx) run by onnxruntime, interleaved with eager PyTorch (fp32 inference, CPU)")
    p.add_argument("--memory", action="store_true", help="measure peak memory of one step (subprocess per model)")
    p.add_argument("--malloc", choices=("default", "keep"), default="default",
                   help="keep: glibc keeps freed memory for reuse, as `swinzoo finetune` sets on the CPU; it applies "
                   "to the whole process, timm's models too (default: glibc as it is)")
    p.add_argument("--cpu-gemm", choices=("auto", "onednn", "aten"),
                   help="library for swinzoo's fp32 products on the CPU: oneDNN, or aten's BLAS (MKL); auto: oneDNN "
                   "on AMD CPUs with AVX-512, where MKL runs AVX2 kernels, but for Zen 4's weight gradients, and "
                   "for eval-mode products on packed weights on Intel CPUs with AVX-512 (default: SWINZOO_CPU_GEMM, "
                   "else auto; timm always runs aten's)")
    p.add_argument("--reps", type=positive_int, default=10, help="timed rounds per model")
    p.add_argument("--warmup", type=non_negative_int, default=2, help="untimed rounds first")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when a GPU is visible, else cpu)")
    p.add_argument("--plot", metavar="FILE.png", help="draw ms/image against resolution (use several --res)")
    p.add_argument("--json", action="store_true", help="print JSON: the machine, the settings and "
                   "results, one per model and implementation (keys: docs/scripting.md)")
    p.set_defaults(func=run)


def run(args) -> int:
    from swinzoo.hardware import keep_freed_memory
    from swinzoo.models import cpu_gemm, fast_path

    if args.malloc == "keep" and keep_freed_memory() is None:
        args.malloc = "default"  # not glibc, or SWINZOO_MALLOC=default: the title and JSON say what ran
    with cpu_gemm.using(args.cpu_gemm or cpu_gemm.requested()):
        args.cpu_gemm = cpu_gemm.backend()  # what "auto" chose, for the title and the JSON
        args.weight_packing = cpu_gemm.weight_packing()  # SWINZOO_PACK_WEIGHTS: eval-mode packed weights or not
        args.cpu_attention = fast_path.cpu_attention()  # SWINZOO_CPU_ATTENTION: auto, eager products or SDPA
        args.cpu_attention_line = fast_path.describe_cpu_attention()  # what auto takes here, for the title
        return measure_and_report(args)


def measure_and_report(args) -> int:
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from swinzoo import bench
    from swinzoo.bench_plot import draw_sweep
    from swinzoo.hardware import cpu_class, cpu_model, native_bf16_matmul, resolve_device
    from swinzoo.plot import check_png_output, naming_the_plot

    args.device = str(resolve_device(args.device))  # the default and the checks `bench.plan` applies
    if args.plot:  # before the measurements, not after them
        check_png_output(args.plot, "sweep.png")
    specs = bench.plan(args.names, res=args.res, batch=args.batch_size, train=args.train,
                       eval_and_train=args.eval_and_train, precision=args.precision, compile=args.compile,
                       grad_ckpt=args.grad_ckpt, vs_timm=args.vs_timm, reps=args.reps, device=args.device,
                       runtime=args.runtime)
    console = Console(stderr=True)
    if args.compile and args.warmup == 0:
        console.print("warning: --compile with --warmup 0 times the compilation in the first round (seconds to "
                      "minutes); give --warmup 1 or more to time the compiled model alone", soft_wrap=True)
    with Progress(TextColumn("bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  disable=args.json) as progress:
        task = progress.add_task("bench", total=bench.rounds(specs, args.reps))
        try:
            results = bench.run(specs, args.reps, args.warmup, args.memory, lambda: progress.advance(task))
        except BaseException:  # the error's one line alone, not under a bar stopped part-way
            progress.update(task, visible=False)
            raise
    # the results first: a plot that cannot be drawn must not cost the measurements
    if args.json:
        print_json({"threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": cpu_model(),
                          "cpu_class": cpu_class(), "native_bf16_matmul": native_bf16_matmul(),
                          "device": machine_name(args.device), "malloc": args.malloc, "cpu_gemm": args.cpu_gemm,
                          "cpu_attention": args.cpu_attention, "weight_packing": args.weight_packing,
                          "reps": args.reps, "warmup": args.warmup, "compile": args.compile,
                          "grad_ckpt": args.grad_ckpt, "results": [asdict(r) for r in results]}, indent=1)
    else:
        print_table(results, args)
    if args.plot:
        title = f"{args.device} {args.precision} batch {args.batch_size}, {torch.get_num_threads()} threads"
        with naming_the_plot(args.plot):
            draw_sweep(results, args.plot, title)
        if not args.json:  # said once written: a failed write is the error line alone
            print(f"plot written to {args.plot}")
    return 0


def machine_name(device: str) -> str:
    """What ran the models: the CPU with its bf16 matmul support, or the GPU's name."""
    import torch

    from swinzoo.hardware import describe_cpu

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return describe_cpu()


def print_table(results, args) -> None:
    import torch
    from rich.table import Table

    from swinzoo.bench import device_type

    console = table_console(160)
    peak = max((r.matmul_peak_gflops for r in results), default=0.0)
    library = results[0].extra.get("matmul_library", "") if results else ""
    # a bf16 run is measured against a bf16 matmul: its share is of the bf16 peak
    cpu_settings = ""
    if device_type(args.device) == "cpu":
        cpu_settings = (f"{torch.get_num_threads()} threads, malloc {args.malloc}, fp32 products {args.cpu_gemm}, "
                        f"weight packing {'on' if args.weight_packing else 'off'}, "
                        f"inference attention {args.cpu_attention_line}; ")
    options = "".join((", torch.compile" if args.compile else "",
                       ", swinzoo checkpointed (timm not)" if args.grad_ckpt and args.vs_timm
                       else ", checkpointed" if args.grad_ckpt else ""))
    table = Table(title=f"swinzoo bench: {machine_name(args.device)}, {args.precision}, batch {args.batch_size}"
                        f"{options}, {args.reps} rounds after {args.warmup} warm-up, {cpu_settings}"
                        f"measured {args.precision} matmul peak {peak:.0f} GFLOP/s ({library})")
    cols = ["model", "impl", "res", "mode", "params M", "GMACs", "img/s", "p50 ms", "p95 ms",
            f"% {args.precision} peak"]
    if args.memory:
        cols.append("peak MiB")
    if args.vs_timm:
        speed = "speed vs timm (quartiles)"
        cols += [speed, "mem vs timm"] if args.memory else [speed]
    if args.runtime:
        cols.append("speed vs eager (quartiles)")
    for c in cols:
        table.add_column(c, justify="left" if c in ("model", "impl", "mode") else "right")
    for r in results:
        row = [r.name, r.impl, str(r.res), r.mode, f"{r.params / 1e6:.1f}", f"{r.gmacs:.2f}",
               f"{r.images_per_s:.2f}", f"{r.latency_ms_p50:.0f}", f"{r.latency_ms_p95:.0f}",
               f"{100 * r.peak_share:.0f}%"]
        if args.memory:
            row.append("-" if r.peak_mem_mb is None else f"{r.peak_mem_mb:.0f}")
        if args.vs_timm:
            s, q = r.extra.get("speedup_vs_timm"), r.extra.get("speedup_vs_timm_quartiles")
            row.append(f"{s:.2f}x ({q[0]:.2f}-{q[1]:.2f})" if s else "")
            if args.memory:
                m = r.extra.get("mem_ratio_vs_timm")
                row.append(f"{100 * m:.0f}%" if m else "")
        if args.runtime:
            s, q = r.extra.get("speedup_vs_eager"), r.extra.get("speedup_vs_eager_quartiles")
            row.append(f"{s:.2f}x ({q[0]:.2f}-{q[1]:.2f})" if s else "")
        table.add_row(*row)
    console.print(table)
    if args.memory and results:
        console.print(f"peak memory: {results[0].mem_method}")
