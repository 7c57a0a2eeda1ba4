"""The run state: what a checkpoint holds, its saving and restoring (RNG states included), the resume policy.

Everything a run needs to continue exactly is in its checkpoints (model,
optimizer, scheduler, AMP scaler, EMA, epoch and step, RNG states, the
resolved config), so an interrupted run resumes as if it had never stopped.
A resumed run accepts only the changes listed in :data:`RESUME_CHANGEABLE`
(``epochs`` or ``iterations`` re-plan the schedule).
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..checkpoint import CheckpointError, read_file
from ..config import RunConfig, apply_overrides, make_config
from ..errors import FatvitError
from ..tasks import DEFAULT_TASK, config_class
from .setup import Optimization, TrainModels

__all__ = [
    "TrainState",
    "RESUME_CHANGEABLE",
    "ResumeRefusedError",
    "RunOfAnotherTaskError",
    "ResumeMovesFolderError",
    "ResumeChangesKeysError",
    "RunFinishedError",
    "read_training_checkpoint",
    "resume_config",
    "rng_state",
    "set_rng_state",
    "checkpoint_dict",
    "restore_checkpoint",
]

#: Config keys a resumed run may change; any other change would be ignored by the restored state, so it is refused.
RESUME_CHANGEABLE = ("epochs", "iterations", "data", "workers", "device", "log_every", "checkpoint_every",
                     "channels_last", "compile", "deterministic")  # fmt: skip


@dataclass
class TrainState:
    """Where a run stands: its counters, the best validation metric and the rows logged so far."""

    epoch: int = 0
    batches_done: int = 0  # micro-batches of the current epoch already trained on
    global_step: int = 0  # optimizer steps
    best_metric: float = -math.inf  # the task's primary validation metric
    history: List[Dict[str, Any]] = field(default_factory=list)
    epoch_loss_sum: float = 0.0
    epoch_samples: int = 0
    skipped_images: int = 0
    train_seconds: float = 0.0

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_checkpoint(cls, ckpt: Dict[str, Any]) -> TrainState:
        state = cls(**{f.name: ckpt[f.name] for f in dataclasses.fields(cls) if f.name != "best_metric"})
        best = ckpt.get("best_metric", ckpt.get("best_top1"))  # best_top1: checkpoints of fatvit <= 0.1
        state.best_metric = best if best is not None and state.history else -math.inf
        return state

    def add_time(self, start: float) -> float:
        """Add the time since ``start`` (``time.perf_counter()``) to ``train_seconds``; returns now, the next
        start."""
        now = time.perf_counter()
        self.train_seconds += now - start
        return now

    def end_epoch(self) -> None:
        """Count the epoch just ended and reset the per-epoch sums."""
        self.epoch += 1
        self.batches_done = 0
        self.epoch_loss_sum, self.epoch_samples = 0.0, 0


def rng_state() -> Dict[str, Any]:
    """Every RNG state the training loop draws from, in types ``weights_only`` loading accepts."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_training_checkpoint(path: str | Path) -> Dict[str, Any]:
    """A fatvit training checkpoint (``last.pth``/``best.pth``), read with ``weights_only=True``."""
    ckpt = read_file(path)
    if not isinstance(ckpt, dict) or "optimizer" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path} is not a fatvit training checkpoint (use finetune=PATH to start from weights)")
    return ckpt


class ResumeRefusedError(FatvitError):
    """A run cannot be resumed as asked; ``path`` is its checkpoint."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        super().__init__(message)


class RunOfAnotherTaskError(ResumeRefusedError):
    def __init__(self, path: str | Path, task: str) -> None:
        self.task = task
        super().__init__(path, f"{path} is a {task!r} run: resume it as a run of that task")


class ResumeMovesFolderError(ResumeRefusedError):
    def __init__(self, path: str | Path, folder: Path) -> None:
        self.folder = folder
        super().__init__(path, f"a run resumes in its own folder ({folder}); its output cannot be moved (copy the "
                               "folder and resume from the copy)")  # fmt: skip


class ResumeChangesKeysError(ResumeRefusedError):
    def __init__(self, path: str | Path, keys: Sequence[str]) -> None:
        self.keys = list(keys)
        super().__init__(path, f"cannot change {', '.join(keys)} when resuming: the run's model, optimizer, schedule "
                               f"and data order continue as saved (changeable: {', '.join(RESUME_CHANGEABLE)}); start "
                               f"a new run from its weights (finetune={path})")  # fmt: skip


class RunFinishedError(ResumeRefusedError):
    def __init__(self, path: str | Path, folder: Path, planned: int, key: str) -> None:
        self.folder, self.planned, self.key = folder, planned, key
        super().__init__(path, f"the run in {folder} finished its {planned} {key}: raise {key} to train longer, or "
                               f"start a new run from its weights (finetune={path})")  # fmt: skip


def resume_config(
    path: str | Path,
    overrides: Sequence[str] = (),
    typed: Optional[Dict[str, Any]] = None,
    task: Optional[str] = None,
    cls: Optional[type] = None,
) -> Tuple[RunConfig, Dict[str, Any]]:
    """The config and checkpoint of the run whose ``last.pth`` (or ``best.pth``) is ``path``, resumed.

    The run's own recipe is used. ``typed`` values and ``overrides``
    (``key=value``) may change only the keys of :data:`RESUME_CHANGEABLE`:
    ``epochs=400`` trains longer (the cosine schedule is re-planned for the
    new length), ``data=...`` follows a moved data set. ``cls`` is the
    run's config class (default: the registry's, by the checkpoint's task).

    Raises:
        ResumeRefusedError: the run is of another task than ``task`` (if given),
            another key is changed, the output is moved, or the run is
            finished and its length not raised.
        FatvitError: the length is below what the run has trained.
    """
    ckpt = read_training_checkpoint(path)
    folder = Path(path).resolve().parent
    cls = cls or config_class(ckpt["config"].get("task") or DEFAULT_TASK)
    saved = make_config({**cls.BEFORE_KEYS, **ckpt["config"]}, cls)  # a key the run predates keeps what it did
    if task is not None and saved.task != task:
        raise RunOfAnotherTaskError(path, saved.task)
    # typed and checked, then compared
    cfg = make_config(apply_overrides(saved.to_dict(), overrides, typed, cls), cls)
    if cfg.output != saved.output and Path(cfg.output or "").resolve() != folder:
        raise ResumeMovesFolderError(path, folder)
    new, old = cfg.to_dict(), saved.to_dict()
    fixed = sorted(k for k in new if new[k] != old[k] and k != "output" and k not in RESUME_CHANGEABLE)
    if fixed:
        raise ResumeChangesKeysError(path, fixed)
    if cfg.iterations is None:
        done, planned, unit, key = ckpt["epoch"], saved.epochs, "epoch(s)", "epochs"
        mid = cfg.epochs == done and ckpt.get("batches_done", 0)
        wanted = cfg.epochs
    else:
        done, planned, unit, key = ckpt["global_step"], saved.iterations, "iteration(s)", "iterations"
        mid, wanted = False, cfg.iterations
    if wanted < done or mid:
        raise FatvitError(f"the run has trained {done} {unit} already: {key}={wanted} is too few")
    if planned is not None and done >= planned and wanted == planned:
        raise RunFinishedError(path, folder, planned, key)
    cfg.output = str(folder)
    return cfg, ckpt


def checkpoint_dict(state: TrainState, models: TrainModels, opt: Optimization, **record: Any) -> Dict[str, Any]:
    """What a training checkpoint holds: the weights (and EMA), the optimizer, schedule and scaler, ``state``,
    every RNG state, and ``record`` (the task, classes, config and the files' meta)."""
    return {
        "model": models.model.state_dict(),
        "optimizer": opt.optimizer.state_dict(),
        "scheduler": opt.scheduler.state_dict(),
        "scaler": opt.scaler.state_dict() if opt.scaler is not None else None,
        "model_ema": models.ema.module.state_dict() if models.ema is not None else None,
        **state.as_dict(),
        "rng": rng_state(),
        **record,
    }


def restore_checkpoint(ckpt: Dict[str, Any], models: TrainModels, opt: Optimization, cfg: RunConfig,
                       say: bool) -> TrainState:  # fmt: skip
    """Load a training checkpoint into a run's parts; returns its state. A run whose length changed keeps its
    optimizer but re-plans the schedule (said on stderr if ``say``)."""
    try:
        models.model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise CheckpointError(f"the checkpoint does not fit {cfg.model}: {str(err).splitlines()[0]}") from None
    opt.optimizer.load_state_dict(ckpt["optimizer"])
    planned = (ckpt["config"].get("epochs"), ckpt["config"].get("iterations"))
    replanned = (cfg.epochs, cfg.iterations) != planned
    if not replanned:
        opt.scheduler.load_state_dict(ckpt["scheduler"])
    if opt.scaler is not None and ckpt.get("scaler"):
        opt.scaler.load_state_dict(ckpt["scaler"])
    if models.ema is not None and ckpt.get("model_ema"):
        models.ema.module.load_state_dict(ckpt["model_ema"])
    state = TrainState.from_checkpoint(ckpt)
    set_rng_state(ckpt["rng"])
    before = opt.current_lr()
    opt.scheduler.step_update(num_updates=state.global_step)
    if replanned and say:
        old = ("epochs", planned[0]) if planned[0] is not None else ("iterations", planned[1])
        now = ("epochs", cfg.epochs) if cfg.epochs is not None else ("iterations", cfg.iterations)
        new = f"{now[1]} {now[0]}"
        change = f"{now[0]} {old[1]} -> {now[1]}" if old[0] == now[0] else f"{old[1]} {old[0]} -> {new}"
        print(
            f"{change}: the {cfg.sched} schedule is re-planned over {new}; "
            f"at step {state.global_step} the lr goes from {before:.3e} to {opt.current_lr():.3e}",
            file=sys.stderr,
            flush=True,
        )
    return state
