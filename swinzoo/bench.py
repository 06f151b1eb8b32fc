"""Benchmarks: throughput, latency, peak memory and matmul-peak share of zoo models, optionally against timm.

Everything is measured in one process with the competitors interleaved (ours, timm, ours, timm, ...), so a
machine that is busy with other work slows both alike and the printed ratios stay meaningful. Peak memory is
measured per model in a fresh subprocess (CPU: growth of the peak resident set size during one step, since
tracemalloc does not see torch's allocations; GPU: `torch.cuda.max_memory_allocated`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from swinzoo.errors import SwinzooError
from swinzoo.hardware import peak_rss_bytes, reset_peak_rss, resolve_device, rss_bytes
from swinzoo.models import SwinTransformer, count_macs, cpu_gemm
from swinzoo.zoo import get_entry, zoo_config


@dataclass
class Spec:
    """One thing to measure: a zoo model (ours or timm's build of the same architecture) at a resolution."""

    name: str
    impl: str = "swinzoo"  # swinzoo | timm | onnxruntime (our ONNX export of the same model)
    res: int | None = None  # None: the model's configured resolution
    batch: int = 8
    train: bool = False
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    compile: bool = False
    grad_ckpt: bool = False  # activation checkpointing per block (both implementations support it)
    device: str = "cpu"


@dataclass
class Result:
    name: str
    impl: str
    res: int
    batch: int
    mode: str
    precision: str
    params: int
    gmacs: float  # per image, analytic (official flops() counting; padding not counted)
    images_per_s: float
    latency_ms_p50: float  # per batch
    latency_ms_p95: float
    matmul_peak_gflops: float
    peak_share: float  # model FLOP/s (2 * MACs, x3 for a training step) / measured matmul peak
    load_corrected_ms: float = 0.0  # median per-batch time, each round rescaled by its matmul's slowdown
    peak_mem_mb: float | None = None
    mem_method: str | None = None
    extra: dict = field(default_factory=dict)


def timm_arch(name: str) -> str:
    """The timm model name of a zoo entry's architecture, e.g. swin_t_224 -> swin_tiny_patch4_window7_224."""
    entry, _ = get_entry(name)
    archs = [w.timm_arch for w in entry.weights if w.timm_arch]
    if not archs:
        raise SwinzooError(f"{name} has no timm counterpart to compare with; drop --vs-timm for it")
    return archs[0]


def build(spec: Spec) -> tuple[torch.nn.Module, int, int]:
    """(model on spec.device in train/eval mode, resolution, params)."""
    cfg = zoo_config(spec.name)
    res = spec.res or cfg.img_size
    if spec.impl == "swinzoo":
        model = SwinTransformer(cfg)  # configured geometry; another res runs through the any-size path
    elif spec.impl == "onnxruntime":
        return onnx_session(cfg), res, sum(p.numel() for p in SwinTransformer(cfg).parameters())
    else:
        try:
            import timm
        except ImportError as e:
            raise SwinzooError("--vs-timm needs timm: pip install 'swinzoo[bench]' (or pip install timm)") from e
        kwargs = dict(pretrained=False, num_classes=cfg.num_classes, img_size=res, window_size=cfg.window_size)
        if cfg.version == 2:
            kwargs["pretrained_window_sizes"] = cfg.pretrained_window_sizes
        model = timm.create_model(timm_arch(spec.name), **kwargs)
    if spec.grad_ckpt:
        model.set_grad_checkpointing(True)
    model = model.to(spec.device).train(spec.train)
    params = sum(p.numel() for p in model.parameters())
    if spec.compile:
        model = torch.compile(model)
    return model, res, params


def macs_at(name: str, res: int) -> int:
    return count_macs(zoo_config(name).replace(img_size=res))


def _autocast(spec: Spec):
    return torch.autocast(device_type(spec.device), dtype=torch.bfloat16, enabled=spec.precision == "bf16")


def onnx_session(cfg):
    """An onnxruntime session of `cfg`'s classifier (fresh weights) exported by `swinzoo export --to onnx`, with
    as many threads as torch uses: the same graph a user ships, timed against eager on equal terms."""
    import tempfile

    try:
        import onnxruntime
    except ImportError as e:
        raise SwinzooError("--runtime onnxruntime needs onnxruntime: pip install 'swinzoo[onnx]'") from e
    from swinzoo.converters import Checkpoint, graph

    model = SwinTransformer(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/model.onnx"
        graph.write(Checkpoint(model.state_dict(), cfg, {}), "onnx", path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def make_step(model: torch.nn.Module, spec: Spec, res: int):
    """A closure running one batch: inference (eval, inference_mode) or a training step (fwd, bwd, SGD step)."""
    x = torch.randn(spec.batch, 3, res, res, device=spec.device)
    if spec.impl == "onnxruntime":
        feed = {model.get_inputs()[0].name: x.numpy()}
        return lambda: model.run(None, feed)
    if not spec.train:
        def step():
            with torch.inference_mode(), _autocast(spec):
                model(x)
        return step
    y = torch.randint(0, zoo_config(spec.name).num_classes, (spec.batch,), device=spec.device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)  # stateless: the same work for every implementation

    def step():
        with _autocast(spec):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def device_type(device: str) -> str:
    """'cpu', 'cuda', ... of a device string such as 'cuda:1' or 'cpu:0'."""
    return torch.device(device).type


def _sync(device: str) -> None:
    if device_type(device) == "cuda":
        torch.cuda.synchronize()


def matmul_step(device: str = "cpu", dtype: torch.dtype = torch.float32, n: int | None = None):
    """(step, FLOPs, library): an n x n x n product, the reference for this machine's practical peak (n 2048 on
    the CPU, 8192 on a GPU, where a 2048 product is over in ~20 us and times the launch: 79 of ~790 TFLOP/s on an
    H200 in bf16).

    On the CPU, the faster of torch's two libraries: `torch.mm` (MKL for fp32, which runs AVX2 kernels on AMD
    CPUs) and oneDNN (`cpu_gemm`'s; AVX-512 wherever the CPU has it), so a share of the peak is of what the
    machine can do, not of what one library does on it.
    """
    on_cpu = device_type(device) == "cpu"
    n = n or (2048 if on_cpu else 8192)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def aten():
        torch.mm(a, b)
    if not on_cpu or not cpu_gemm.onednn_available():
        return aten, 2 * n**3, "aten"

    def onednn():
        cpu_gemm.onednn_mm(a, b)
    aten_s, onednn_s = time_interleaved([aten, onednn], device, reps=3, warmup=0)
    return (aten, 2 * n**3, "aten") if min(aten_s) <= min(onednn_s) else (onednn, 2 * n**3, "onednn")


def time_interleaved(steps: list, device: str, reps: int, warmup: int, progress=None) -> list[list[float]]:
    """Run each step `warmup` times, then `reps` rounds of one call of each step; seconds per call, per step."""
    for _ in range(warmup):
        for step in steps:
            step()
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(reps):
        for i, step in enumerate(steps):
            _sync(device)
            t = time.perf_counter()
            step()
            _sync(device)
            times[i].append(time.perf_counter() - t)
        if progress is not None:
            progress()
    return times


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def summarize(spec: Spec, res: int, params: int, times: list[float], mm_times: list[float], mm_flops: int) -> Result:
    """Peak share is taken round by round (model FLOP/s over the matmul FLOP/s of the same round), so load from
    other processes that comes and goes affects both sides of each ratio alike; the median round is reported."""
    p50 = statistics.median(times)
    macs = macs_at(spec.name, res)
    flops = 2 * macs * spec.batch * (3 if spec.train else 1)  # backward ~ 2x forward
    shares = [flops / t / (mm_flops / m) for t, m in zip(times, mm_times)]
    peak = max(mm_flops / m for m in mm_times) / 1e9
    best_mm = min(mm_times)
    corrected = statistics.median(t * best_mm / m for t, m in zip(times, mm_times))
    return Result(spec.name, spec.impl, res, spec.batch, "train" if spec.train else "eval", spec.precision, params,
                  macs / 1e9, spec.batch / p50, 1e3 * p50, 1e3 * percentile(times, 0.95), peak,
                  statistics.median(shares), 1e3 * corrected,
                  extra={"peak_share_quartiles": [percentile(shares, 0.25), percentile(shares, 0.75)]})


# ---------------------------------------------------------------- peak memory, one step in a fresh process
def memory_probe(spec: Spec) -> tuple[float, str]:
    """Peak memory (MiB) of one step of `spec`, measured in this process (call it in a fresh one)."""
    torch.manual_seed(0)
    model, res, _ = build(spec)
    step = make_step(model, spec, res)
    if device_type(spec.device) == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20, "cuda max_memory_allocated growth"
    base = rss_bytes()
    reset_peak_rss()
    step()
    peak = peak_rss_bytes()
    return max(0, peak - base) / 2**20, "peak RSS growth during one step (fresh process, glibc mmap threshold 64 KiB)"


def measure_memory(spec: Spec) -> tuple[float, str]:
    """Run `memory_probe` in a subprocess (the peak RSS of this process is polluted by everything before)."""
    code = "import json,sys; from swinzoo.bench import _probe_main; _probe_main(sys.argv[1])"
    env = dict(os.environ)
    # glibc raises its mmap threshold after frees, so freed activations would stay in the RSS; a fixed threshold
    # keeps every large tensor in its own mapping, returned on free: the RSS peak then tracks the live peak
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(1 << 16))
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), env.get("PYTHONPATH", "")] if p)
    out = subprocess.run([sys.executable, "-c", code, json.dumps(asdict(spec))], capture_output=True, text=True,
                         env=env)
    if out.returncode != 0:
        raise SwinzooError(f"memory probe for {spec.impl} {spec.name} failed: {out.stderr.strip().splitlines()[-1:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return data["mb"], data["method"]


def _probe_main(spec_json: str) -> None:
    mb, method = memory_probe(Spec(**json.loads(spec_json)))
    print(json.dumps({"mb": mb, "method": method}))


# ---------------------------------------------------------------- a whole run
def benchmark(names: list[str], *, res: list[int] | None = None, batch: int = 8, train: bool = False,
              eval_and_train: bool = False, precision: str = "fp32", compile: bool = False, grad_ckpt: bool = False,
              vs_timm: bool = False, memory: bool = False, reps: int = 10, warmup: int = 2,
              device: str | None = None, runtime: str | None = None, progress=None) -> list[Result]:
    """`swinzoo bench`: time zoo models (inference, a training step, or both), optionally against timm's build of
    each, interleaved. `res` several resolutions = a sweep; `progress()` is called once per timed round."""
    specs = plan(names, res=res, batch=batch, train=train, eval_and_train=eval_and_train, precision=precision,
                 compile=compile, grad_ckpt=grad_ckpt, vs_timm=vs_timm, reps=reps, device=device, runtime=runtime)
    return run(specs, reps, warmup, memory, progress)


def plan(names: list[str], *, res: list[int] | None = None, batch: int = 8, train: bool = False,
         eval_and_train: bool = False, precision: str = "fp32", compile: bool = False, grad_ckpt: bool = False,
         vs_timm: bool = False, reps: int = 10, device: str | None = None, runtime: str | None = None) -> list[Spec]:
    """The specs `benchmark` measures; every bad argument fails here, before anything runs. `runtime`
    "onnxruntime" adds the model's ONNX export, run by onnxruntime, to every inference group."""
    device = str(resolve_device(device))
    for name in names:
        get_entry(name)
    if batch < 1 or reps < 1:
        raise SwinzooError("--batch and --reps must be at least 1")
    if precision not in ("fp32", "bf16"):
        raise SwinzooError(f"precision {precision!r}: use fp32 or bf16")
    modes = [False, True] if eval_and_train else [train]
    if grad_ckpt and modes == [False]:
        raise SwinzooError("--grad-ckpt applies to a training step: add --train or --eval-and-train")
    for name in names:
        cfg = zoo_config(name)
        smallest = cfg.patch_size * 2 ** (cfg.num_stages - 1)  # one token in the last stage
        too_small = [r for r in res or [] if r < smallest]
        if too_small:
            raise SwinzooError(f"--res {too_small[0]} is below {smallest} px, the smallest input {name} takes (one "
                               f"token in its last stage); use --res {smallest} or more")
        if True in modes and cfg.num_classes == 0:
            raise SwinzooError(f"{name} has no classifier head, and a training step needs one: time its inference "
                               "(drop --train / --eval-and-train)")
    impls = ["swinzoo", "timm"] if vs_timm else ["swinzoo"]
    if vs_timm:
        for name in names:
            timm_arch(name)
    if runtime not in (None, "eager", "onnxruntime"):
        raise SwinzooError(f"runtime {runtime!r}: use onnxruntime (eager PyTorch is always timed)")
    if runtime == "onnxruntime":
        if modes == [True] or precision != "fp32" or device_type(device) != "cpu":
            raise SwinzooError("--runtime onnxruntime times fp32 inference on the CPU: drop --train, --precision "
                               "bf16 and --device cuda")
        impls.append("onnxruntime")
    return [Spec(name, impl, r, batch, t, precision, compile and impl != "onnxruntime",
                 grad_ckpt and impl == "swinzoo", device)
            for name in names for r in (res or [None]) for t in modes for impl in impls
            if not (t and impl == "onnxruntime")]


def rounds(specs: list[Spec], reps: int) -> int:
    """How many timed rounds `run` makes (for a progress bar): `reps` per group of (name, res, mode)."""
    return len({(s.name, s.res, s.train) for s in specs}) * reps


def run(specs: list[Spec], reps: int = 10, warmup: int = 2, memory: bool = False, progress=None) -> list[Result]:
    """Measure `specs` in groups of the same (name, res): each group is timed interleaved."""
    if not specs:
        return []
    device = specs[0].device
    dtype = torch.bfloat16 if specs[0].precision == "bf16" else torch.float32
    mm_step, mm_flops, mm_library = matmul_step(device, dtype)
    groups: dict[tuple, list[Spec]] = {}
    for s in specs:
        groups.setdefault((s.name, s.res, s.train), []).append(s)
    results: list[Result] = []
    # inference groups first: a training step leaves a large heap behind in this process, and a model timed
    # after it no longer pays the page faults its big allocations cost in a process that only does inference
    for _, group in sorted(groups.items(), key=lambda kv: kv[0][2]):
        built = [build(s) for s in group]
        steps = [make_step(m, s, res) for (m, res, _), s in zip(built, group)]
        times = time_interleaved([*steps, mm_step], device, reps, warmup, progress)
        for s, (_, res, params), t in zip(group, built, times):
            results.append(summarize(s, res, params, t, times[-1], mm_flops))
            results[-1].extra["matmul_library"] = mm_library
        del built, steps
        rows = results[-len(group):]
        if memory:
            for s, r in zip(group, rows):
                if s.impl != "onnxruntime":  # its probe would export the model again in the subprocess
                    r.peak_mem_mb, r.mem_method = measure_memory(s)
        add_ratios(rows, times)
    return results


def add_ratios(rows: list[Result], times: list[list[float]]) -> None:
    """Ours vs timm within one interleaved group (`times`: seconds per round, per row): speedup as the median
    per-round time ratio (both ran back to back, so load that comes and goes cancels in each ratio) with its
    quartiles, and the peak-memory ratio."""
    eager = next((t for r, t in zip(rows, times) if r.impl == "swinzoo"), None)
    for r, t in zip(rows, times):
        if r.impl == "onnxruntime" and eager is not None:
            ratios = [a / b for a, b in zip(eager, t)]  # > 1: the exported graph is faster than eager swinzoo
            r.extra["speedup_vs_eager"] = statistics.median(ratios)
            r.extra["speedup_vs_eager_quartiles"] = [percentile(ratios, 0.25), percentile(ratios, 0.75)]
    timm = next(((r, t) for r, t in zip(rows, times) if r.impl == "timm"), None)
    if timm is None:
        return
    other, other_times = timm
    for r, t in zip(rows, times):
        if r.impl == "swinzoo":
            ratios = [b / a for a, b in zip(t, other_times)]
            r.extra["speedup_vs_timm"] = statistics.median(ratios)
            # the spread of the per-round ratios says how much one run on a shared machine can be trusted
            r.extra["speedup_vs_timm_quartiles"] = [percentile(ratios, 0.25), percentile(ratios, 0.75)]
            if r.peak_mem_mb and other.peak_mem_mb:
                r.extra["mem_ratio_vs_timm"] = r.peak_mem_mb / other.peak_mem_mb
