"""The resolution-sweep plot of `swinzoo bench --plot`, drawn with Pillow (already a torchvision dependency).

x: pixels per image (R^2, so window attention, linear in the token count, is a straight line); y: milliseconds
per image, load-corrected (each round's time rescaled by how much slower than its best the interleaved matmul
of that round ran), so other processes on a shared machine bend the curves less.
The reference is the same model with global attention in every stage (window = the stage's whole
grid), its analytic MACs scaled to seconds by the first measured point of the first swinzoo curve: quadratic
in the token count.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from swinzoo.bench import Result
from swinzoo.models import count_macs
from swinzoo.plot import PALETTE, legend_entry, save_png
from swinzoo.zoo import zoo_config

REF_COLOR = (120, 120, 120)


def global_attention_macs(name: str, res: int) -> int:
    """MACs of `name` at `res` with one window per stage (global attention): window = the patch grid."""
    cfg = zoo_config(name)
    return count_macs(cfg.replace(img_size=res, window_size=max(1, res // cfg.patch_size)))


def sweep_series(results: list[Result]) -> dict[str, list[tuple[int, float]]]:
    """{label: [(res, ms per image)]} for every (name, impl, mode), plus the global-attention reference."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        series.setdefault(f"{r.impl} / {r.name} ({r.mode})", []).append((r.res, ms_per_image(r)))
    ours = [r for r in results if r.impl == "swinzoo"] or results
    if ours:
        first = min((r for r in ours if r.name == ours[0].name), key=lambda r: r.res)
        ms_per_mac = ms_per_image(first) / (first.gmacs * 1e9)
        resolutions = sorted({r.res for r in results})
        series[f"global attention / {first.name} (analytic)"] = [
            (res, ms_per_mac * global_attention_macs(first.name, res)) for res in resolutions]
    return {k: sorted(v) for k, v in series.items()}


def ms_per_image(r: Result) -> float:
    return (r.load_corrected_ms or 1e3 * r.batch / r.images_per_s) / r.batch


def _inside(pts: list[tuple[int, float]], y_max: float) -> list[tuple[float, float]]:
    """The points up to where the curve leaves the top of the frame, ending on the crossing (x linear in R^2)."""
    out: list[tuple[float, float]] = []
    for (r0, m0), (r1, m1) in zip([(0, 0.0)] + pts[:-1], pts):
        if m1 <= y_max:
            out.append((r1, m1))
            continue
        if out:
            f = (y_max - m0) / (m1 - m0)
            out.append(((r0**2 + f * (r1**2 - r0**2)) ** 0.5, y_max))
        break
    return out


def _nice_max(v: float) -> float:
    for exp in range(-2, 9):
        for step in (1, 2, 5):
            if step * 10**exp >= v:
                return step * 10**exp
    return v


def draw_sweep(results: list[Result], path: str | Path, title: str = "") -> Path:
    """Write a PNG of ms/image against resolution; returns the path."""
    series = sweep_series(results)
    w, h, left, right, top, bottom = 900, 560, 80, 250, 40, 60
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    resolutions = sorted({res for pts in series.values() for res, _ in pts})
    x_max = max(resolutions) ** 2
    measured = [ms for k, pts in series.items() if not k.startswith("global") for _, ms in pts]
    y_max = _nice_max(max(measured) * 1.5)  # the quadratic reference leaves the frame: clipped at the top

    def xy(res: int, ms: float) -> tuple[float, float]:
        x = left + (w - left - right) * res**2 / x_max
        y = h - bottom - (h - top - bottom) * min(ms, y_max) / y_max
        return x, y

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for i in range(6):
        ms = y_max * i / 5
        _, y = xy(0, ms)
        d.line([left - 4, y, left, y], fill="black")
        d.text((8, y - 6), f"{ms:g}", fill="black")
    for res in resolutions:
        x, _ = xy(res, 0)
        d.line([x, h - bottom, x, h - bottom + 4], fill="black")
        d.text((x - 12, h - bottom + 8), str(res), fill="black")
    d.text((left + 120, h - 24), "input resolution R (px; x axis is linear in R^2 = tokens)", fill="black")
    d.text((8, top - 28), "ms / image (load-corrected)", fill="black")
    d.text((left + 220, 10), title, fill="black")
    for i, (label, pts) in enumerate(series.items()):
        color = REF_COLOR if label.startswith("global") else PALETTE[i % len(PALETTE)]
        coords = [xy(res, ms) for res, ms in _inside(pts, y_max)]
        if len(coords) > 1:
            d.line(coords, fill=color, width=3 if not label.startswith("global") else 2)
        for x, y in (xy(res, ms) for res, ms in pts if ms <= y_max):  # measured points; not the frame crossing
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        legend_entry(d, w - right + 10, top + 10 + 22 * i, color, label[:48])
    return save_png(img, path)
