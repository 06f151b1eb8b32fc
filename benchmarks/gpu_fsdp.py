"""`swinzoo finetune / pretrain --strategy fsdp` on CUDA: the checks tests/test_fsdp.py makes on CPU processes
(through a test-only CPU strategy, since Lightning refuses FSDP without a GPU), run with Lightning's own
FSDPStrategy, its accelerator check, NCCL, the CUDA device id, FSDP's mixed precision (16-mixed with the sharded
grad scaler, which the gradient clipping must follow; bf16-mixed, which casts the parameters) and the gathers on
the GPU. Each check runs the nano model on the built-in shapes data for a few steps, through the CLI.

    python benchmarks/gpu_fsdp.py --out fsdp_check.json        # every visible GPU; one is enough to run
    python benchmarks/gpu_fsdp.py --devices 2 --keep runs/fsdp  # two GPUs shard for real; keep the run folders
    python benchmarks/gpu_fsdp.py --accelerator cpu --strategy fsdp_cpu --runner tests.fsdp_cpu --devices 2 \\
        --only export keep_best                                 # on the CPU, through the tests' CPU strategy

On one GPU FSDP wraps the model but does not shard it (world size 1: NO_SHARD), so the parameters keep their
shapes: the weight-decay groups and the export's gather of shards are then tested by tests/test_fsdp.py only; two
GPUs run them here too. Baseline runs use DDP (one device: the default strategy) with the same total batch.
Prints one line per check; exits 1 when one fails.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
NANO = ["--from", "swin_n_64", "--data", "shapes", "--batch-size", "8", "--num-workers", "2",
        "--trainer.limit_val_batches", "2"]
# the tests' recipe: clipping always on, a weight decay that shows, and AdamW's eps at 1 so that its step follows
# the gradient's size (at 1e-8 it turns float noise in gradients that are 0 in exact arithmetic into whole steps)
SENSITIVE = ["--recipe.clip_grad=0.05", "--recipe.weight_decay=0.05", "--recipe.eps=1.0",
             "--recipe.grad_checkpointing=true", "--lr", "1"]
CHECKS = ("export", "matches", "precision", "keep_best", "resume", "pretrain", "ema_refused")


class SpoilHeadAt(L.Callback):
    """After optimizer step `step`, the head's logits negated (each rank its shard): the validation at that step
    scores worst, so `--keep best` keeps an earlier one."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in pl_module.model.head.parameters():
                    p.neg_()


class Runner:
    def __init__(self, args, work: Path) -> None:
        self.args, self.work = args, work
        path = [str(ROOT), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}

    def hardware(self, strategy: str | None = None) -> list[str]:
        a = self.args
        return ["--devices", str(a.devices), "--accelerator", a.accelerator, "--strategy", strategy or a.strategy]

    @property
    def baseline(self) -> str:
        return "ddp" if self.args.devices > 1 else "auto"

    def run(self, *argv, strategy: str | None = None) -> subprocess.CompletedProcess:
        runner = self.args.runner if strategy is None else "swinzoo"
        cmd = [sys.executable, "-m", runner, *map(str, argv), *self.hardware(strategy)]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=self.args.timeout,
                              cwd=self.work)


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}


def max_diff(a: dict, b: dict) -> float:
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return float("inf")
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def check_export(r: Runner) -> dict:
    out = r.work / "export"
    proc = r.run("finetune", *NANO, "--max-steps", "3", "--precision", "32-true", "--keep", "last", "--out", out)
    if proc.returncode:
        return {"ok": False, "detail": proc.stderr[-400:]}
    import swinzoo

    swinzoo.load_model(out / "model.safetensors")
    diff = max_diff(weights(out / "model.safetensors"), checkpoint_weights(out / "last.ckpt"))
    return {"ok": diff == 0.0, "export_vs_last_ckpt": diff}


def check_matches(r: Runner) -> dict:
    """FSDP against the baseline strategy, fp32, same seed and total batch; then both resumed for one more step."""
    runs = {}
    for name, strategy in (("fsdp", None), ("base", r.baseline)):
        proc = r.run("finetune", *NANO, *SENSITIVE, "--max-steps", "3", "--precision", "32-true", "--out",
                     r.work / f"matches_{name}", strategy=strategy)
        if proc.returncode:
            return {"ok": False, "detail": f"{name}: {proc.stderr[-400:]}"}
        runs[name] = weights(r.work / f"matches_{name}" / "model.safetensors")
    diff = max_diff(runs["fsdp"], runs["base"])
    return {"ok": diff <= r.args.atol, "fsdp_vs_" + r.baseline: diff}


def check_resume(r: Runner) -> dict:
    """The `matches` runs, moved and resumed for one more step each."""
    got = {}
    for name, strategy in (("fsdp", None), ("base", r.baseline)):
        src, moved = r.work / f"matches_{name}", r.work / f"resumed_{name}"
        if not (src / "last.ckpt").is_file():
            return {"ok": False, "detail": "run the matches check first"}
        shutil.copytree(src, moved)
        proc = r.run("finetune", "--resume", moved, "--max-steps", "4", strategy=strategy)
        if proc.returncode:
            return {"ok": False, "detail": f"{name}: {proc.stderr[-400:]}"}
        if name == "fsdp" and "dirpath has changed" in proc.stderr:
            return {"ok": False, "detail": "the moved run forgot its best validation"}
        got[name] = weights(moved / "model.safetensors")
    diff = max_diff(got["fsdp"], got["base"])
    return {"ok": diff <= r.args.atol, "fsdp_vs_" + r.baseline: diff}


def check_precision(r: Runner) -> dict:
    """16-mixed (the default on CUDA) and bf16-mixed with the recipe's clipping: the runs finish, the weights are
    finite and the accuracy is the baseline's within a few images (FSDP computes in the low precision's parameters,
    AMP in fp32 ones with low-precision products)."""
    result = {"ok": True}
    for precision in ("16-mixed", "bf16-mixed"):
        top1 = {}
        for name, strategy in (("fsdp", None), ("base", r.baseline)):
            out = r.work / f"{precision}_{name}"
            proc = r.run("finetune", *NANO, "--max-steps", "5", "--precision", precision, "--out", out,
                         strategy=strategy)
            if proc.returncode:
                return {"ok": False, "detail": f"{precision} {name}: {proc.stderr[-400:]}"}
            w = weights(out / "model.safetensors")
            if not all(bool(t.isfinite().all()) for t in w.values()):
                return {"ok": False, "detail": f"{precision} {name}: weights not finite"}
            top1[name] = json.loads((out / "metrics.json").read_text())["top1"]
        result[precision] = top1
        result["ok"] &= abs(top1["fsdp"] - top1["base"]) <= 0.15
    return result


def check_keep_best(r: Runner) -> dict:
    out = r.work / "keep_best"
    proc = r.run("finetune", *NANO, "--max-steps", "2", "--precision", "32-true", "--out", out,
                 "--trainer.val_check_interval", "1", "--trainer.callbacks+=gpu_fsdp.SpoilHeadAt",
                 "--trainer.callbacks.step=2")
    if proc.returncode:
        return {"ok": False, "detail": proc.stderr[-400:]}
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "logs" / "metrics.csv") as f:
        logged = {int(row["step"]): float(row["val/top1"]) for row in csv.DictReader(f) if row["val/top1"]}
    diff = max_diff(weights(out / "model.safetensors"), checkpoint_weights(out / "best.ckpt"))
    ok = (metrics["weights"], metrics["weights_step"]) == ("best", 1) and diff == 0.0
    ok &= abs(metrics["top1"] - logged.get(0, -1)) <= 1e-6  # validated again with the loaded weights
    return {"ok": ok, "kept": [metrics["weights"], metrics["weights_step"]], "export_vs_best_ckpt": diff,
            "top1": metrics["top1"], "logged_top1_step1": logged.get(0)}


def check_pretrain(r: Runner) -> dict:
    out = r.work / "pretrain"
    proc = r.run("pretrain", "--from", "swin_n_64", "--data", "shapes", "--batch-size", "8", "--num-workers", "2",
                 "--max-steps", "3", "--trainer.limit_val_batches", "1", "--out", out)
    if proc.returncode:
        return {"ok": False, "detail": proc.stderr[-400:]}
    import swinzoo

    swinzoo.load_simmim(out)
    diff = max_diff(weights(out / "model.safetensors"), checkpoint_weights(out / "last.ckpt"))
    return {"ok": diff == 0.0, "export_vs_last_ckpt": diff}


def check_ema_refused(r: Runner) -> dict:
    out = r.work / "ema"
    proc = r.run("finetune", *NANO, "--recipe.ema_decay", "0.99", "--max-steps", "2", "--out", out)
    lines = proc.stderr.strip().splitlines()
    ok = proc.returncode == 2 and len(lines) == 1 and "EMA" in lines[0] and not out.exists()
    return {"ok": ok, "detail": proc.stderr[-400:]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--devices", type=int, default=max(1, torch.cuda.device_count()))
    p.add_argument("--accelerator", default="gpu")
    p.add_argument("--strategy", default="fsdp", help="the strategy under test (fsdp, fsdp_cpu_offload, ...)")
    p.add_argument("--runner", default="swinzoo", help="module run as `python -m RUNNER finetune ...`")
    p.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    p.add_argument("--atol", type=float, default=1e-5, help="weights of FSDP against the baseline, fp32")
    p.add_argument("--timeout", type=int, default=300, help="seconds per run")
    p.add_argument("--keep", type=Path, help="keep the run folders here (default: a temporary folder)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="gpu_fsdp_"))
    work.mkdir(parents=True, exist_ok=True)
    runner = Runner(args, work)
    checks = [c for c in CHECKS if c in args.only]
    if "resume" in checks and "matches" not in checks:
        checks.insert(checks.index("resume"), "matches")
    results = {"devices": args.devices, "strategy": args.strategy, "torch": torch.__version__,
               "lightning": L.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    failed = 0
    for name in checks:
        try:
            result = globals()[f"check_{name}"](runner)
        except Exception as e:  # one check's surprise must not hide the others' results
            result = {"ok": False, "detail": f"{type(e).__name__}: {e}"[:400]}
        results[name] = result
        failed += not result["ok"]
        print(f"{'ok  ' if result['ok'] else 'FAIL'} {name}: "
              + json.dumps({k: v for k, v in result.items() if k != "ok"}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
