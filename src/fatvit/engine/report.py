"""What the engine writes about a run, its task's validation metrics formatted from their declarations
(:class:`~fatvit.tasks.base.Metric`): an epoch's ``metrics.csv`` row and log line, and ``summary.json``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence

from ..tasks.base import Metric, Task
from .state import TrainState

if TYPE_CHECKING:
    from .loaders import RunData
    from .setup import Optimization, TrainModels

__all__ = [
    "metric_row", "metric_line", "metric_summary", "best_epoch", "improves", "start_line", "epoch_row", "epoch_line",
    "run_summary", "lr_scaling", "batchnorm_note",
]  # fmt: skip


def metric_row(metrics: Sequence[Metric], result: Dict[str, Any]) -> Dict[str, Any]:
    """The ``val_<name>`` columns of an evaluation's ``result``."""
    return {f"val_{m.name}": result[m.name] for m in metrics}


def metric_line(metrics: Sequence[Metric], result: Dict[str, Any]) -> str:
    """The metrics part of an epoch's log line: ``<title> <value><unit>`` for each metric with a title."""
    return "  ".join(f"{m.title} {result[m.name]:{m.fmt}}{m.unit}" for m in metrics if m.title)


def _number(value: Any) -> Any:
    """NaN (no objects to score, say) as None: JSON has no NaN."""
    return None if isinstance(value, float) and math.isnan(value) else value


def metric_summary(metrics: Sequence[Metric], primary: str, nested: bool, last: Dict[str, Any],
                   best: Optional[float], best_epoch: Optional[int] = None) -> Dict[str, Any]:  # fmt: skip
    """The metrics of ``summary.json``: the last epoch's values (from its ``metrics.csv`` row ``last``) as
    ``final_<name>``, or all under ``final_metrics`` when ``nested``, and the best value of ``primary`` with the
    epoch that reached it. The final values are those of ``last.pth`` and ``model.safetensors`` (what the paper
    reports: the last checkpoint), the best one that of ``best.pth``."""
    final = {m.name: _number(last.get(f"val_{m.name}")) for m in metrics if m.in_summary}
    figures = {"final_metrics": final if last else {}} if nested else {f"final_{n}": v for n, v in final.items()}
    return {**figures, "final_epoch": last.get("epoch"), f"best_{primary}": best, "best_epoch": best_epoch}


def best_epoch(history: Sequence[Dict[str, Any]], primary: str, best: Optional[float]) -> Optional[int]:
    """The first epoch whose ``metrics.csv`` row reached ``best`` of ``primary`` (None: no best yet)."""
    if best is None:
        return None
    return next((int(row["epoch"]) for row in history if row.get(f"val_{primary}") == best), None)


def improves(metric: Metric, value: float, best: float) -> bool:
    """Whether ``value`` of ``metric`` beats ``best`` (infinite: nothing yet); NaN never does."""
    if math.isnan(value):
        return False
    if math.isinf(best):
        return True
    return value > best if metric.higher_is_better else value < best


def start_line(data: RunData, opt: Optimization, num_classes: int, models: TrainModels, output: Path,
               notes: Sequence[str] = ()) -> str:  # fmt: skip
    """The line a run starts with: what it trains on what, where, with which batch, lr (and how it was scaled),
    BatchNorm and length, and the task's ``notes``."""
    cfg, dist = data.cfg, models.dist
    length = f"{cfg.iterations} iterations" if cfg.iterations is not None else f"{cfg.epochs} epochs"
    length += "".join(f" ({note})" for note in cfg.notes)
    return (f"training {cfg.model} on {cfg.data or data.task.embedded_name}: {len(data.train_set)} train / "
            f"{len(data.val_set)} val images, {num_classes} classes, {dist.world_size} process(es) on {dist.device}, "
            f"global batch {opt.global_batch}, lr {opt.lr:.2e}{lr_scaling(cfg, opt.global_batch, dist.world_size)}, "
            f"{batchnorm_note(models)}, {length}; " + "".join(f"{note}; " for note in notes)
            + f"output {output}")  # fmt: skip


def lr_scaling(cfg: Any, global_batch: int, world_size: int) -> str:
    """How the lr was scaled from the recipe's (``lr`` per ``lr_base_batch`` images), and, where the global batch
    is not the recipe's, the ``accum_steps`` that would restore it."""
    if global_batch == cfg.lr_base_batch:
        return f" (the recipe's, for its batch of {cfg.lr_base_batch})"
    note = f" ({cfg.lr:.2e} per {cfg.lr_base_batch} images, scaled linearly to {global_batch}"
    per_step, base = cfg.batch_size * world_size, cfg.lr_base_batch
    if base % per_step == 0:
        return note + f"; accum_steps={base // per_step} restores the recipe's batch of {base})"
    return note + f"; no accum_steps gives the recipe's batch of {base} from {per_step} images per step)"


def batchnorm_note(models: TrainModels) -> str:
    """Whether BatchNorm sees the global batch: SyncBatchNorm under DDP on GPUs only."""
    dist = models.dist
    if models.sync_bn:
        return f"SyncBatchNorm over {dist.world_size} processes"
    if dist.distributed:
        return "BatchNorm per process (no SyncBatchNorm on CPUs; statistics averaged before evaluations)"
    return "BatchNorm over each batch (SyncBatchNorm only under DDP on GPUs)"


def epoch_row(metrics: Sequence[Metric], result: Dict[str, Any], state: TrainState, lr: float) -> Dict[str, Any]:
    """The ``metrics.csv`` row of the epoch ``state`` is ending, evaluated as ``result``."""
    return dict(
        epoch=state.epoch + 1, step=state.global_step, train_loss=state.epoch_loss_sum / max(state.epoch_samples, 1),
        **metric_row(metrics, result), lr=lr, train_seconds=round(state.train_seconds, 2),
        skipped_images=state.skipped_images, val_images=result["images"], val_skipped_images=result["skipped_images"],
    )  # fmt: skip


def epoch_line(metrics: Sequence[Metric], result: Dict[str, Any], row: Dict[str, Any], num_epochs: int) -> str:
    """The log line of the epoch whose ``metrics.csv`` row is ``row``."""
    return (f"epoch {row['epoch']}/{num_epochs}  train loss {row['train_loss']:.4f}  {metric_line(metrics, result)}  "
            f"lr {row['lr']:.2e}")  # fmt: skip


def run_summary(
    task: Task, metrics: Sequence[Metric], state: TrainState, result: Dict[str, Any], classes: Any, *, model: str,
    finished: bool, world_size: int, global_batch: int, lr: float,
) -> Dict[str, Any]:  # fmt: skip
    """The figures of ``summary.json`` (the run folder adds its files), ``result`` the last evaluation."""
    last = state.history[-1] if state.history else {}
    best = state.best_metric if state.history and math.isfinite(state.best_metric) else None
    return dict(
        task=task.name, model=model, finished=finished, epochs=state.epoch, steps=state.global_step,
        **metric_summary(metrics, task.primary_metric, task.nested_summary, last, best,
                         best_epoch(state.history, task.primary_metric, best)),
        **task.summary_extra(result, classes), train_seconds=round(state.train_seconds, 2), world_size=world_size,
        global_batch=global_batch, lr=lr, skipped_images=state.skipped_images,
    )  # fmt: skip
