"""Per-class figures of an evaluation (`swinzoo eval --per-class`): each class's top-1 (the share of its images
predicted as it, its recall), its image count, and the class its images are most often mistaken for. Mistakes are
counted as pairs, not a full confusion matrix, so a 21841-class head costs memory in proportion to its errors."""

from __future__ import annotations

from collections import Counter

import torch

from swinzoo.errors import printable


class ClassTally:
    """Counts over batches of (top-1 predictions, labels), both model class indices."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.total = torch.zeros(num_classes, dtype=torch.int64)
        self.correct = torch.zeros(num_classes, dtype=torch.int64)
        self.mistakes: Counter[int] = Counter()  # label * num_classes + prediction

    def update(self, predicted: torch.Tensor, labels: torch.Tensor) -> None:
        predicted, labels = predicted.flatten().long(), labels.flatten().long()
        right = predicted == labels
        self.total += torch.bincount(labels, minlength=self.num_classes)
        self.correct += torch.bincount(labels[right], minlength=self.num_classes)
        self.mistakes.update((labels[~right] * self.num_classes + predicted[~right]).tolist())

    def rows(self, names: list[str]) -> list[dict]:
        """{"class", "top1", "n", "mistaken_for", "mistaken_share"} of each class with images, in the model's class
        order; "mistaken_for" is None for a class never mistaken."""
        worst: dict[int, tuple[int, int]] = {}  # label -> (count, prediction): the most frequent, lowest index on ties
        for pair, count in self.mistakes.items():
            label, prediction = divmod(pair, self.num_classes)
            if label not in worst or (count, -prediction) > (worst[label][0], -worst[label][1]):
                worst[label] = (count, prediction)
        rows = []
        for k in torch.nonzero(self.total).flatten().tolist():
            n = int(self.total[k])
            count, prediction = worst.get(k, (0, None))
            rows.append({"class": names[k], "top1": int(self.correct[k]) / n, "n": n,
                         "mistaken_for": None if prediction is None else names[prediction],
                         "mistaken_share": count / n})
        return rows


def table(rows: list[dict]) -> str:
    """The rows as text, worst top-1 first (then by name): class, top-1, images, most often mistaken for. Names are
    `printable` and padded by the columns a terminal gives them (two for CJK and emoji)."""
    from rich.cells import cell_len, set_cell_size

    width = min(32, max([len("class"), *(cell_len(printable(r["class"])) for r in rows)]))
    lines = [f"{'class':<{width}}   top1      n  most often mistaken for"]
    for r in sorted(rows, key=lambda r: (r["top1"], r["class"])):
        name = printable(r["class"])
        name = set_cell_size(name, width) if cell_len(name) <= width else set_cell_size(name, width - 1) + "…"
        mistaken = (f"{printable(r['mistaken_for'])} ({r['mistaken_share']:.2f})" if r["mistaken_for"] is not None
                    else "-")
        lines.append(f"{name} {r['top1']:>6.4f} {r['n']:>6}  {mistaken}")
    return "\n".join(lines) + "\n"
