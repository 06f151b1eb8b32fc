"""The zero-shot transfer plot of `swinzoo eval --res R1 R2 ... --plot FILE.png`: top-1 against the resolution a
model is moved to without fine-tuning, one line per model (the V2 paper's Table 1 question, drawn). Pillow only."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from swinzoo.plot import PALETTE, legend_entry, save_png


def draw_accuracy(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """`rows` as `evaluation.sweep` returns them -> a PNG of top-1 (0-1) against resolution; returns the path."""
    width, height, margin_l, margin_r, margin_t, margin_b = 820, 500, 70, 220, 40, 60
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        series.setdefault(row["model"], []).append((row["res"], row["top1"]))
    xs = sorted({row["res"] for row in rows})
    lo, hi = xs[0], xs[-1] if xs[-1] > xs[0] else xs[0] + 1
    img = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(img)

    def at(res: float, top1: float) -> tuple[float, float]:
        return (margin_l + (width - margin_l - margin_r) * (res - lo) / (hi - lo),
                height - margin_b - (height - margin_t - margin_b) * top1)

    pen.rectangle([margin_l, margin_t, width - margin_r, height - margin_b], outline="black")
    for tick in range(0, 11, 2):
        _, y = at(lo, tick / 10)
        pen.line([margin_l - 4, y, margin_l, y], fill="black")
        pen.text((margin_l - 34, y - 6), f"{tick / 10:.1f}", fill="black")
    for res in xs:
        x, _ = at(res, 0)
        pen.line([x, height - margin_b, x, height - margin_b + 4], fill="black")
        pen.text((x - 10, height - margin_b + 8), str(res), fill="black")
    pen.text((margin_l + 150, height - 26), "evaluation resolution (px), weights moved by the transfer only",
             fill="black")
    pen.text((8, margin_t - 28), "top-1", fill="black")
    pen.text((margin_l + 160, 10), title, fill="black")
    for i, (label, points) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        coords = [at(res, top1) for res, top1 in sorted(points)]
        if len(coords) > 1:
            pen.line(coords, fill=color, width=3)
        for x, y in coords:
            pen.ellipse([x - 4, y - 4, x + 4, y + 4], fill=color)
        legend_entry(pen, width - margin_r + 12, margin_t + 10 + 22 * i, color, tail_label(label, 28))
    return save_png(img, path)


def tail_label(text: str, width: int) -> str:
    """`text` cut to `width` characters from its end: model paths differ in their run folders, not their roots."""
    return text if len(text) <= width else "…" + text[-(width - 1):]
