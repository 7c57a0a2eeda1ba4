"""What a training run leaves for people and scripts: CSV metrics, a PNG plot, summary.json.

Whole files (summary.json, the plot, rewritten CSVs) are written through
:func:`fatvit.files.atomic_write`; CSV rows are appended as they come.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

from .files import atomic_write

__all__ = ["append_csv", "keep_csv_rows", "plot_curves", "write_csv", "write_json_atomic"]


def append_csv(path: Path, row: Dict[str, Any]) -> None:
    """Append a row, writing the header when the file is new."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def write_csv(path: Path, rows: Sequence[Dict[str, Any]]) -> None:
    """Write ``rows`` (header from the first) as the whole file, atomically; no rows: no file."""
    if not rows:
        Path(path).unlink(missing_ok=True)
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path, "w") as f:
        f.write(text.getvalue())


def keep_csv_rows(path: Path, keep: Callable[[Dict[str, str]], bool]) -> None:
    """Keep only the rows of an existing CSV for which ``keep(row)`` holds (a resumed run drops its future)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = [row for row in csv.DictReader(f) if keep(row)]
    write_csv(path, rows)


def write_json_atomic(path: Path, data: Any) -> None:
    with atomic_write(path, "w") as f:
        f.write(json.dumps(data, indent=2))


def plot_curves(
    history: Sequence[Dict[str, Any]], path: Path, metric: str = "val_top1", metric_title: str = "val top-1 (%)"
) -> None:
    """Training curves (train and, if logged, val loss; the validation ``metric``; learning rate) per epoch, as a
    PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs: List[int] = [int(h["epoch"]) for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o", ms=3, label="train")
    if all("val_loss" in h for h in history):
        axes[0].plot(epochs, [h["val_loss"] for h in history], marker="o", ms=3, label="val")
    axes[0].set_title("loss")
    axes[0].legend()
    axes[1].plot(epochs, [h[metric] for h in history], marker="o", ms=3, color="tab:green")
    axes[1].set_title(metric_title)
    axes[2].plot(epochs, [h["lr"] for h in history], marker="o", ms=3, color="tab:orange")
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_write(path) as f:
            fig.savefig(f, dpi=100, format="png")
    finally:
        plt.close(fig)
