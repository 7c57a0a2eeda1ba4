"""A run's folder and its logs: which folders a run may write to, its files, CSV, TensorBoard, curves, summary.

A new run's folder must be new or empty (``overwrite`` replaces the files of
a run there), or hold only what a run stopped before its first checkpoint
left (its logs, a ``.tmp`` of a killed write: removed, and said); a new run
that fails before its first checkpoint removes what it wrote. A resumed run
continues in its own folder, removes stale ``.tmp`` files and drops whatever
it had logged after its checkpoint.
"""

from __future__ import annotations

import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..errors import FatvitError
from ..files import check_output_dir, prepare_output_dir
from ..reporting import append_csv, keep_csv_rows, plot_curves, write_csv, write_json_atomic

__all__ = ["RunFolder", "OutputNotEmptyError", "RUN_FILES", "CHECKPOINT_FILES", "LOG_FILES"]

#: What a run writes in its folder (``overwrite`` replaces exactly these).
RUN_FILES = ("last.pth", "best.pth", "model.safetensors", "config.json", "metrics.csv", "steps.csv", "summary.json",
             "training_curves.png", "tensorboard")  # fmt: skip

#: The files a run holds that can resume or use it; a folder without any of them holds no work to keep.
CHECKPOINT_FILES = ("last.pth", "best.pth", "model.safetensors")

#: What a run writes before its first checkpoint: its logs (``summary.json`` comes only after a checkpoint).
LOG_FILES = tuple(n for n in RUN_FILES if n not in CHECKPOINT_FILES and n not in ("summary.json", "config.json"))


class OutputNotEmptyError(FatvitError):
    """A new run's output folder holds files of another run (or others): nothing is written there."""

    def __init__(self, path: Path, held: Sequence[str]) -> None:
        self.path = Path(path)
        self.held = list(held)
        #: the folder's run can be resumed from this file
        self.resumable = self.path / "last.pth" if "last.pth" in self.held else None
        hint = f"resume that run (from {self.resumable}), " if self.resumable else ""
        super().__init__(f"output folder {self.path} is not empty ({self.listing}): {hint}choose another output "
                         "folder, or overwrite its run files")  # fmt: skip

    @property
    def listing(self) -> str:
        """The first names the folder holds."""
        return f"{', '.join(self.held[:4])}{' ...' if len(self.held) > 4 else ''}"


def _is_leftover(name: str) -> bool:
    """A name in a run folder that only a run stopped before its first checkpoint leaves: its logs, or a
    temporary file of an interrupted write."""
    return name in LOG_FILES or (name.endswith(".tmp") and name[: -len(".tmp")] in RUN_FILES)


def default_output(model: str) -> str:
    """``runs/<model>-<time>``, numbered if taken."""
    base = Path("runs") / f"{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return str(out)


class RunFolder:
    """The folder of one run, checked when made (before any work) and written by the main process only.

    Args:
        output: the folder.
        overwrite: replace the run files of a non-empty folder (a new run).
        resuming: the run continues from a checkpoint in this folder.
        is_main: this process writes (rank 0); the others check nothing and write nothing.

    Raises:
        OutputNotEmptyError: a new run's folder holds other files, and ``overwrite`` is not set.
    """

    def __init__(self, output: str | Path, overwrite: bool, resuming: bool, is_main: bool) -> None:
        self.path = check_output_dir(output)
        self.overwrite, self.resuming, self.is_main = overwrite, resuming, is_main
        self.made = not self.path.exists()
        self.leftovers: List[str] = []  # what a run stopped before its first checkpoint left in the folder
        self.writer: Any = None
        if not resuming and is_main and self.path.is_dir() and not overwrite:
            held = sorted(p.name for p in self.path.iterdir())
            if held and all(_is_leftover(name) for name in held):
                self.leftovers = held  # no checkpoint, only logs or a temporary file: nothing to resume or keep
            elif held:
                raise OutputNotEmptyError(self.path, held)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def open(self, global_step: int, history: List[Dict[str, Any]]) -> None:
        """Make the folder (once everything before worked: a failed start leaves nothing behind), clear what
        must go, and open the TensorBoard log; a resumed run forgets what it logged after its checkpoint."""
        if not self.is_main:
            return
        prepare_output_dir(self.path)
        if self.leftovers:
            print(
                f"fatvit: {self.path} holds only what a run stopped before its first checkpoint left "
                f"({', '.join(self.leftovers)}): removed",
                file=sys.stderr,
                flush=True,
            )
        if (self.overwrite or self.leftovers) and not self.resuming:
            self._remove_run_files()
        else:
            self._remove_stale_tmp()
        if self.resuming:
            keep_csv_rows(self.path / "steps.csv", lambda row: int(row["step"]) <= global_step)
            write_csv(self.path / "metrics.csv", history)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            str(self.path / "tensorboard"), purge_step=global_step + 1 if self.resuming else None
        )

    def _remove_run_files(self) -> None:
        for name in RUN_FILES:
            path = self.path / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        self._remove_stale_tmp()

    def _remove_stale_tmp(self) -> None:
        """Remove the ``*.tmp`` files of the run's own files that a killed write left (an atomic write leaves
        none unless the process dies inside it)."""
        for name in RUN_FILES:
            (self.path / f"{name}.tmp").unlink(missing_ok=True)

    def remove_unfinished_start(self) -> None:
        """After a failure before the first checkpoint of a new run: remove what it wrote (and the folder, if the
        run made it), so that nothing blocks the same output the next time."""
        self.close()
        self._remove_run_files()
        if self.made and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def log_step(self, step: int, epoch: int, loss: float, lr: float, log_every: int) -> None:
        """A row of ``steps.csv``; every ``log_every`` steps, the loss and lr in TensorBoard."""
        if not self.is_main:
            return
        append_csv(self.path / "steps.csv", dict(step=step, epoch=epoch, loss=loss, lr=lr))
        if self.writer is not None and step % log_every == 0:
            self.writer.add_scalar("step/loss", loss, step)
            self.writer.add_scalar("step/lr", lr, step)

    def log_epoch(self, row: Dict[str, Any], history: List[Dict[str, Any]], curve: str, title: str, line: str) -> None:
        """An epoch's row in ``metrics.csv`` and TensorBoard, the curves redrawn, ``line`` printed."""
        if not self.is_main:
            return
        append_csv(self.path / "metrics.csv", row)
        for key, value in row.items():  # per epoch, at the epoch's last step
            if key == "train_loss" or (key.startswith("val_") and key not in ("val_images", "val_skipped_images")):
                self.writer.add_scalar(f"epoch/{key}", value, row["step"])
        self.writer.flush()
        plot_curves(history, self.path / "training_curves.png", curve, title)
        print(line, file=sys.stderr, flush=True)

    def existing(self, name: str) -> Optional[str]:
        """The path of the run's file ``name`` if it exists."""
        return str(self.path / name) if (self.path / name).exists() else None

    def write_summary(self, **figures: Any) -> Dict[str, Any]:
        """``summary.json``: the run's ``figures`` and the files it holds (only those that exist: ``best.pth``,
        ``metrics.csv`` and ``training_curves.png`` come with the first evaluation); returns it."""
        summary = dict(
            **figures,
            output=str(self.path),
            checkpoints=dict(last=self.existing("last.pth"), best=self.existing("best.pth"),
                             safetensors=self.existing("model.safetensors"), timm_config=self.existing("config.json")),
            metrics_csv=self.existing("metrics.csv"),
            steps_csv=self.existing("steps.csv"),
            plot=self.existing("training_curves.png"),
        )  # fmt: skip
        if self.is_main:
            write_json_atomic(self.path / "summary.json", summary)
        return summary

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
