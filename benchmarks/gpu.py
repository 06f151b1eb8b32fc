"""GPU benchmark: swinzoo against timm in bf16 autocast at 224 and 384 px, eval and a training step, plus a check
that swinzoo's inference path on CUDA is not slower than running each block over the whole batch, and the training
attention core (swinzoo's eager node) against SDPA with a bias gradient (CUDA's memory-efficient kernel has one).

    python benchmarks/gpu.py --out gpu_bench.json              # on a machine with a CUDA GPU (needs timm)
    python benchmarks/gpu.py --device cpu --smoke              # a few seconds on the CPU: the script still works

On CPU the fast path walks each block in cache-sized runs of windows (`fast_path.CPU_CHUNK_BYTES`); on other
devices it runs one run over the whole batch, and the check here is what keeps that choice honest: it times the
default path against (a) the same fast path forced into the CPU's runs of windows and (b) the reference blocks
(`set_fast_path(False)`: roll, partition, whole-batch attention), interleaved, and exits 1 if the default is
more than 5% slower than either.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

from swinzoo import bench
from swinzoo.commands import positive_int
from swinzoo.config import SwinConfig
from swinzoo.converters.timm import to_canonical
from swinzoo.hardware import describe_cpu
from swinzoo.io import atomic_path
from swinzoo.models import SwinTransformer, attention, fast_path
from swinzoo.models.attention import SoftmaxAttention
from swinzoo.models.layers import Mlp
from swinzoo.zoo import zoo_config

# (zoo name, resolution): Swin-T and SwinV2-T at their own size, and the 384 px class
FULL = [("swin_t_224", 224), ("swinv2_t_256_w8", 256), ("swin_t_224", 384), ("swin_b_384", 384)]
SMOKE = [("swin_n_64", 64)]
TOLERANCE = 1.05
FIGURES = ("train_logits_", "grads_", "eval_logits_")
PARITY_RTOL = 1e-6  # float64: the largest difference relative to the largest value
# the attention of a Swin-T training step at batch 8, stage by stage: (B*nW windows, heads, shift-mask groups)
ATTENTION = [(512, 3, 64), (128, 6, 16), (32, 12, 4), (8, 24, 1)]
ATTENTION_SMOKE = [(8, 2, 4)]


def compare_vs_timm(cases, batch: int, reps: int, device: str, vs_timm: bool) -> list[dict]:
    rows = []
    for name, res in cases:
        specs = bench.plan([name], res=[res], batch=batch, eval_and_train=True, precision="bf16", vs_timm=vs_timm,
                           reps=reps, device=device)
        for r in bench.run(specs, reps=reps, warmup=2):
            rows.append({"name": r.name, "impl": r.impl, "res": r.res, "mode": r.mode, "images_per_s": r.images_per_s,
                         "p50_ms": r.latency_ms_p50, "peak_share": r.peak_share, **r.extra})
    return rows


@contextlib.contextmanager
def cpu_runs_everywhere():
    """The fast path with the CPU's runs of windows on any device."""
    def cpu_rule(src, hidden_per_window):
        return max(1, fast_path.CPU_CHUNK_BYTES // (src.element_size() * hidden_per_window))
    with mock.patch.object(fast_path, "_max_windows", cpu_rule):
        yield


def check_whole_batch(cases, batch: int, reps: int, device: str) -> list[dict]:
    """Default inference vs runs-of-windows and vs the reference blocks, interleaved per round, bf16 autocast."""
    out = []
    for name, res in cases:
        model = SwinTransformer(zoo_config(name)).to(device).eval()
        x = torch.randn(batch, 3, res, res, device=device)

        def forward(fast: bool = True, runs: bool = False, model=model, x=x):
            def step():
                model.set_fast_path(fast)
                with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16), \
                        (cpu_runs_everywhere() if runs else contextlib.nullcontext()):
                    model(x)
            return step

        steps = [forward(), forward(runs=True), forward(fast=False)]
        times = bench.time_interleaved(steps, device, reps, warmup=2)
        model.set_fast_path(True)
        default, runs, reference = (statistics.median(t) for t in times)
        ok = default <= TOLERANCE * min(runs, reference)
        out.append({"name": name, "res": res, "default_ms": 1e3 * default, "runs_of_windows_ms": 1e3 * runs,
                    "reference_ms": 1e3 * reference, "ok": ok})
    return out


def attention_steps(windows: int, heads: int, groups: int, device: str) -> list:
    """[swinzoo's node, SDPA], each one forward + backward on the same bf16 q, k, v and fp32 term."""
    q, k, v = (torch.randn(windows, heads, 49, 32, device=device, dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    term = torch.randn(groups, heads, 49, 49, device=device, requires_grad=True)
    grad = torch.randn(windows, heads, 49, 32, device=device, dtype=torch.bfloat16)

    def node():
        SoftmaxAttention.apply(q, k, v, term, 32**-0.5).backward(grad)

    def sdpa():
        sdpa_windows(q, k, v, term, 32**-0.5).backward(grad)

    return [node, sdpa]


def compare_training_attention(shapes, reps: int, device: str) -> list[dict]:
    """Forward + backward of softmax(q k^T / sqrt(d) + term) v with the term's gradient, bf16, 7x7 windows:
    swinzoo's node (`SoftmaxAttention`: eager products, fp32 softmax) against SDPA (`sdpa_windows`), interleaved.
    The attention alone: `compare_training_choices` says what the whole step makes of it."""
    out = []
    for windows, heads, groups in shapes:
        steps = attention_steps(windows, heads, groups, device)
        node_s, sdpa_s = (statistics.median(t) for t in bench.time_interleaved(steps, device, reps, 2))
        out.append({"windows": windows, "heads": heads, "groups": groups, "node_ms": 1e3 * node_s,
                    "sdpa_ms": 1e3 * sdpa_s, "sdpa_speedup": node_s / sdpa_s})
    return out


def sdpa_windows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, term: torch.Tensor, scale: float) -> torch.Tensor:
    """The alternative to `SoftmaxAttention` measured here: the same softmax(scale * q k^T + term) v through SDPA,
    each image's G windows folded into the head dim so that the (G, heads, N, N) term is one mask broadcast over
    images (the fused kernels broadcast over the batch dim only), cast to the query's dtype as SDPA requires."""
    bw, heads, n, d = q.shape
    groups = term.shape[0]

    def fold(t):
        return t.reshape(bw // groups, groups * heads, n, t.shape[-1])

    mask = term.to(q.dtype).reshape(1, groups * heads, n, n)
    out = F.scaled_dot_product_attention(fold(q), fold(k), fold(v), attn_mask=mask, scale=scale)
    return out.reshape(bw, heads, n, d)


ALTERNATIVES = ("SDPA attention", "recomputed GELU")


@contextlib.contextmanager
def alternative(choice: str):
    """Training with one alternative to what ships: 'SDPA attention' (`sdpa_windows` instead of the eager node) or
    'recomputed GELU' (the CPU's MLP node, which recomputes the GELU in backward, on any device)."""
    if choice == "SDPA attention":
        with mock.patch.object(attention.SoftmaxAttention, "apply", sdpa_windows):
            yield
    elif choice == "recomputed GELU":
        def anywhere(self, x):
            return self.recompute_gelu and torch.is_grad_enabled() and not (self.training and self.drop.p > 0)
        with mock.patch.object(Mlp, "recompute_applies", anywhere):
            yield
    else:
        yield


def compare_training_choices(cases, batches, reps: int, device: str) -> list[dict]:
    """A bf16 training step (forward, backward, SGD) as shipped against the same step with each alternative,
    interleaved per round: an alternative's time over the default's, above 1 where the default is faster."""
    out = []
    for name, res in cases:
        for batch in batches:
            spec = bench.Spec(name, res=res, batch=batch, train=True, precision="bf16", device=device)
            model, res, _ = bench.build(spec)
            step = bench.make_step(model, spec, res)

            def run(choice, step=step):
                def go():
                    with alternative(choice):
                        step()
                return go

            default, *others = (statistics.median(t) for t in bench.time_interleaved(
                [run("default")] + [run(c) for c in ALTERNATIVES], device, reps, warmup=2))
            out.append({"name": name, "res": res, "batch": batch, "default_ms": 1e3 * default,
                        **{c: t / default for c, t in zip(ALTERNATIVES, others)}})
    return out


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random, so that no mapping or path hides behind a zero init; V2 logit scales stay below the
    log(100) clamp, norm weights near 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if name.endswith("logit_scale"):
                noise = math.log(10.0) + 0.3 * noise
            elif "norm" in name and name.endswith("weight") and p.dim() == 1:
                noise = 1.0 + 0.2 * noise
            else:
                noise = 0.2 * noise
            p.copy_(noise.to(p.dtype))
    return model


def _relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-30)).item()


def check_parity(device: str, smoke: bool) -> list[dict]:
    """float64 on the device, batch 2, training mode without dropout: logits and every parameter's gradient of
    swinzoo's fast path against its reference blocks and against timm with the same random weights, as the largest
    difference relative to the largest value. Swin-T and SwinV2-T geometry at their own resolution with two blocks
    per stage: the device's kernels are what is checked, not depth. Without timm only the two paths are compared."""
    try:
        import timm
    except ImportError:
        timm = None
        print("  timm is not installed: parity against timm skipped", flush=True)
    cases = [(1, 64, 4, "swin_tiny_patch4_window7_224")] if smoke else [
        (1, 224, 7, "swin_tiny_patch4_window7_224"), (2, 256, 8, "swinv2_tiny_window8_256")]
    small = dict(embed_dim=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
    out = []
    for version, res, window, arch in cases:
        cfg = SwinConfig(version=version, img_size=res, window_size=window, num_classes=5, drop_path_rate=0.0,
                         **small)
        ours = randomized(SwinTransformer(cfg)).double()
        theirs = None
        if timm is not None:
            theirs = randomized(timm.create_model(arch, img_size=res, window_size=window, num_classes=5,
                                                  drop_path_rate=0.0, **small))
            theirs = theirs.double().to(device)
            ours.load_state_dict(to_canonical(theirs.state_dict()), strict=True)
        ours = ours.to(device)
        x = torch.randn(2, 3, res, res, dtype=torch.float64, device=device)

        def step(model, x=x):
            """Training step's logits and gradients, then inference logits (eval mode, no autograd)."""
            model.train().zero_grad()
            logits = model(x)
            logits.square().sum().backward()
            with torch.no_grad():
                inference = model.eval()(x)
            return {"logits": logits.detach(), "inference": inference,
                    **{n: p.grad.clone() for n, p in model.named_parameters()}}

        def differences(a, b, versus):
            grads = max(_relative(a[n], g) for n, g in b.items() if n not in ("logits", "inference"))
            return {f"train_logits_{versus}": _relative(a["logits"], b["logits"]), f"grads_{versus}": grads,
                    f"eval_logits_{versus}": _relative(a["inference"], b["inference"])}

        fast = step(ours)
        ours.set_fast_path(False)
        ref = step(ours)
        ours.set_fast_path(True)
        row = {"version": version, "res": res, "window": window, **differences(fast, ref, "fast_vs_reference")}
        if theirs is not None:
            got = step(theirs)
            got = {**to_canonical({k: v for k, v in got.items() if k not in ("logits", "inference")}),
                   "logits": got["logits"], "inference": got["inference"]}
            row.update(differences(fast, got, "vs_timm"))
        row["ok"] = all(v <= PARITY_RTOL for k, v in row.items() if k.startswith(FIGURES))
        out.append(row)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--reps", type=positive_int, default=20)
    p.add_argument("--smoke", action="store_true", help="nano model, 2 rounds, no timm: checks the script runs")
    p.add_argument("--out", type=Path, help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA GPU is visible; run this on a GPU machine (or --device cpu --smoke)", file=sys.stderr)
        return 2
    cases, reps = (SMOKE, 2) if args.smoke else (FULL, args.reps)
    machine = (torch.cuda.get_device_name() if args.device.startswith("cuda") else describe_cpu())
    print(f"{machine}, torch {torch.__version__}, batch {args.batch}, bf16 autocast", flush=True)
    report = {"device": machine, "torch": torch.__version__, "batch": args.batch, "precision": "bf16 autocast"}
    sections = {  # each printed as it ends; one that fails is recorded and the others still run
        "parity": (lambda: check_parity(args.device, args.smoke), print_parity),
        "vs_timm": (lambda: compare_vs_timm(cases, args.batch, reps, args.device, vs_timm=not args.smoke),
                    print_vs_timm),
        "whole_batch_check": (lambda: check_whole_batch(cases, args.batch, reps, args.device), print_whole_batch),
        "training_choices": (lambda: compare_training_choices(cases[:2], (args.batch, 64) if not args.smoke else
                                                              (args.batch,), reps, args.device),
                             print_training_choices),
        "training_attention": (lambda: compare_training_attention(ATTENTION_SMOKE if args.smoke else ATTENTION, reps,
                                                                  args.device), print_attention)}
    for key, (measure, show) in sections.items():
        try:
            report[key] = measure()
        except Exception as e:  # noqa: BLE001 - a GPU loan is short: keep the other sections' figures
            report[key] = {"error": f"{type(e).__name__}: {e}"}
            print(f"  {key} failed: {report[key]['error']}", flush=True)
            continue
        show(report[key])
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(report, indent=1))
    failed = [k for k in sections if isinstance(report[k], dict)]
    checks = [c["ok"] for k in ("parity", "whole_batch_check") if k not in failed for c in report[k]]
    return 1 if failed or not all(checks) and not args.smoke else 0


def print_parity(rows) -> None:
    for r in rows:
        figures = ", ".join(f"{k} {v:.1e}" for k, v in r.items() if k.startswith(FIGURES))
        print(f"  parity V{r['version']} {r['res']} px float64: {figures}: "
              + ("ok" if r["ok"] else f"ABOVE {PARITY_RTOL:.0e}"), flush=True)


def print_vs_timm(rows) -> None:
    for r in rows:
        vs = f"  {r['speedup_vs_timm']:.2f}x timm" if "speedup_vs_timm" in r else ""
        print(f"  {r['name']:<16} {r['res']:>4} {r['mode']:<5} {r['impl']:<8} {r['images_per_s']:8.1f} img/s{vs}",
              flush=True)


def print_whole_batch(rows) -> None:
    for c in rows:
        print(f"  {c['name']} {c['res']} px inference: default {c['default_ms']:.2f} ms, runs of windows "
              f"{c['runs_of_windows_ms']:.2f} ms, reference blocks {c['reference_ms']:.2f} ms: "
              + ("ok" if c["ok"] else f"SLOWER than {TOLERANCE:.2f}x the best alternative"), flush=True)


def print_training_choices(rows) -> None:
    for r in rows:
        others = ", ".join(f"{c} {r[c]:.2f}x" for c in ALTERNATIVES)
        print(f"  training step {r['name']} {r['res']} px batch {r['batch']}: default {r['default_ms']:.2f} ms; "
              f"{others} its time (above 1: the default is faster)", flush=True)


def print_attention(rows) -> None:
    for a in rows:
        print(f"  training attention {a['windows']} windows x {a['heads']} heads: swinzoo node {a['node_ms']:.2f} ms, "
              f"SDPA with bias gradient {a['sdpa_ms']:.2f} ms ({a['sdpa_speedup']:.2f}x)", flush=True)

if __name__ == "__main__":
    sys.exit(main())
