"""What a training run leaves for people and scripts: CSV metrics, TensorBoard, a PNG plot, summary.json."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence

__all__ = ["append_csv", "plot_curves", "write_json_atomic"]


def append_csv(path: Path, row: Dict[str, Any]) -> None:
    """Append a row, writing the header when the file is new."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def plot_curves(history: Sequence[Dict[str, Any]], path: Path) -> None:
    """Training curves (train/val loss, val top-1, learning rate) per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs: List[int] = [int(h["epoch"]) for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o", ms=3, label="train")
    axes[0].plot(epochs, [h["val_loss"] for h in history], marker="o", ms=3, label="val")
    axes[0].set_title("loss")
    axes[0].legend()
    axes[1].plot(epochs, [h["val_top1"] for h in history], marker="o", ms=3, color="tab:green")
    axes[1].set_title("val top-1 (%)")
    axes[2].plot(epochs, [h["lr"] for h in history], marker="o", ms=3, color="tab:orange")
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
