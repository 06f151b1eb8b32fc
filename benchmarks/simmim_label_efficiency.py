"""SimMIM vs training from scratch at 1%, 10% and 100% of the labels (docs/simmim.md): run it, then tabulate and plot.

    python benchmarks/simmim_label_efficiency.py run --root runs/le     # ~30 min on 2 CPU cores (AMD Zen 5)
    python benchmarks/simmim_label_efficiency.py plot --root runs/le --png docs/simmim_label_efficiency.png

`run` pretrains `swin_n_64` from fresh weights with SimMIM on the unlabelled `shapes` images, then fine-tunes three
arms on each label budget with the same recipe, steps and seeds: the SimMIM encoder, the same with the official
SimMIM layer decay (0.9), and the same architecture from scratch. Every run's last weights are validated on the
same 1000 images. `plot` prints the markdown table (mean and range over seeds, wall time) and draws the PNG.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from PIL import Image, ImageDraw

from swinzoo.hardware import describe_cpu
from swinzoo.plot import PALETTE, legend_entry, save_png
from swinzoo.train.recipes import load_recipe

FRACTIONS = (0.01, 0.1, 1.0)
ARMS = {  # name -> (--from and recipe arguments, legend)
    "simmim": ("--from {pre} --recipe nano_finetune", "SimMIM-pretrained"),
    "simmim_ld": ("--from {pre} --recipe {ld_recipe}", "SimMIM-pretrained, layer decay 0.9"),
    "scratch": ("--from swin_n_64 --scratch --recipe nano_finetune", "from scratch"),
}
PRETRAIN = ("swinzoo pretrain --from swin_n_64 --scratch --data shapes --mask-patch-size 16 --max-steps {steps} "
            "--batch-size 32 --lr 1e-3 --num-workers 1 --out {out}")
FINETUNE = ("swinzoo finetune {arm} --data shapes --train-fraction {frac} --max-steps {steps} --keep last "
            "--num-workers 1 --seed {seed} --split-seed {seed} --trainer.check_val_every_n_epoch 100000 --out {out}")


def layer_decay_recipe(root: Path) -> Path:
    """nano_finetune with the official V1 SimMIM fine-tune's layer decay."""
    recipe = load_recipe("nano_finetune").replace(layer_decay=0.9, name="nano_finetune_ld09", finetune_recipe=None)
    path = root / "nano_finetune_ld09.yaml"
    path.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    return path


def timed(command: str, log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as f:
        subprocess.run(command.split(), stdout=f, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def run(root: Path, pretrain_steps: int, finetune_steps: int, seeds: list[int]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    times_path = root / "wall_times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    pre = root / "pre"
    if not (pre / "model.safetensors").exists():
        times["pre"] = timed(PRETRAIN.format(steps=pretrain_steps, out=pre), root / "pre.log")
        times_path.write_text(json.dumps(times, indent=1))
    ld_recipe = layer_decay_recipe(root)
    for seed in seeds:
        for frac in FRACTIONS:
            for arm, (args, _) in ARMS.items():
                name = f"s{seed}-{arm}-{frac}"
                if (root / name / "metrics.json").exists():
                    continue
                command = FINETUNE.format(arm=args.format(pre=pre / "model.safetensors", ld_recipe=ld_recipe),
                                          frac=frac, steps=finetune_steps, seed=seed, out=root / name)
                times[name] = timed(command, root / f"{name}.log")
                times_path.write_text(json.dumps(times, indent=1))
                print(f"{name}: {json.loads((root / name / 'metrics.json').read_text())['top1']:.3f}", flush=True)


def collect(root: Path) -> dict:
    """{arm: {fraction: [(top1, top5, wall s) per seed]}} from the run folders."""
    times = json.loads((root / "wall_times.json").read_text())
    table: dict = {arm: {f: [] for f in FRACTIONS} for arm in ARMS}
    for metrics in sorted(root.glob("s*-*-*/metrics.json")):
        name = metrics.parent.name
        _, arm, frac = name.split("-", 2)
        m = json.loads(metrics.read_text())
        table[arm][float(frac)].append((m["top1"], m["top5"], times.get(name, float("nan"))))
    return table


def markdown(table: dict) -> str:
    seeds = max(len(v) for arm in table.values() for v in arm.values())
    lines = [f"| labels | {' | '.join(ARMS[a][1] + ' top-1' for a in ARMS)} | wall time per run |",
             "|---|" + "---:|" * (len(ARMS) + 1)]
    for frac in FRACTIONS:
        cells = []
        for arm in ARMS:
            top1 = [r[0] for r in table[arm][frac]]
            cells.append(f"**{statistics.mean(top1):.3f}** ({min(top1):.3f}-{max(top1):.3f})" if top1 else "-")
        walls = [r[2] for arm in ARMS for r in table[arm][frac]]
        lines.append(f"| {frac:.0%} ({round(20000 * frac)} images) | {' | '.join(cells)} | "
                     f"{min(walls):.0f}-{max(walls):.0f} s |")
    return "\n".join(lines) + f"\n\nmean over {seeds} seeds (range in brackets)"


def plot(table: dict, png: Path, subtitle: str) -> None:
    w, h, left, top, right, bottom = 860, 460, 70, 40, 330, 60
    img = Image.new("RGB", (w, h), "white")
    pen = ImageDraw.Draw(img)
    x_of = {f: left + i * (w - left - right) / (len(FRACTIONS) - 1) for i, f in enumerate(FRACTIONS)}

    def y_of(v: float) -> float:
        return top + (1 - v) * (h - top - bottom)

    pen.line([left, top, left, h - bottom, w - right, h - bottom], fill="black")
    for v in (0, 0.2, 0.4, 0.6, 0.8, 1.0):
        pen.line([left - 4, y_of(v), left, y_of(v)], fill="black")
        pen.text((left - 30, y_of(v) - 6), f"{v:.1f}", fill="black")
    for f, x in x_of.items():
        pen.text((x - 10, h - bottom + 6), f"{f:.0%}", fill="black")
    pen.text((8, 12), "top-1", fill="black")
    pen.text((left + 80, 12), subtitle, fill="black")
    pen.text((left + 90, h - 24), "labelled training images used (of 20000); each point: mean, bar: range over seeds",
             fill="black")
    for i, (arm, (_, label)) in enumerate(ARMS.items()):
        color = PALETTE[i]
        points = []
        for f in FRACTIONS:
            top1 = [r[0] for r in table[arm][f]]
            if not top1:
                continue
            x = x_of[f] + (i - 1) * 6
            pen.line([x, y_of(min(top1)), x, y_of(max(top1))], fill=color, width=2)
            points.append((x, y_of(statistics.mean(top1))))
        pen.line(points, fill=color, width=3)
        for x, y in points:
            pen.ellipse([x - 4, y - 4, x + 4, y + 4], fill=color)
        legend_entry(pen, w - right + 20, top + 20 * i, color, label)
    save_png(img, png)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("run", "plot"))
    p.add_argument("--root", type=Path, default=Path("runs/label-efficiency"))
    p.add_argument("--pretrain-steps", type=int, default=3000)
    p.add_argument("--finetune-steps", type=int, default=600)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--png", type=Path, help="plot: where to draw (default ROOT/label_efficiency.png)")
    args = p.parse_args(argv)
    if args.action == "run":
        run(args.root, args.pretrain_steps, args.finetune_steps, args.seeds)
    table = collect(args.root)
    print(markdown(table))
    subtitle = f"shapes, swin_n_64 architecture: SimMIM vs scratch ({describe_cpu()})"
    plot(table, args.png or args.root / "label_efficiency.png", subtitle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
