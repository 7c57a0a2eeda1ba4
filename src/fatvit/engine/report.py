"""What the engine writes about a task's validation metrics, from their declarations
(:class:`~fatvit.tasks.base.Metric`): the ``metrics.csv`` columns, the epoch's log line and ``summary.json``."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

from ..tasks.base import Metric

__all__ = ["metric_row", "metric_line", "metric_summary", "improves"]


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
                   best: Optional[float]) -> Dict[str, Any]:  # fmt: skip
    """The metrics of ``summary.json``: the last epoch's values (from its ``metrics.csv`` row ``last``) as
    ``final_<name>``, or all under ``final_metrics`` when ``nested``, and the best value of ``primary``."""
    final = {m.name: _number(last.get(f"val_{m.name}")) for m in metrics if m.in_summary}
    if nested:
        return {"final_metrics": final if last else {}, f"best_{primary}": best}
    return {**{f"final_{name}": value for name, value in final.items()}, f"best_{primary}": best}


def improves(metric: Metric, value: float, best: float) -> bool:
    """Whether ``value`` of ``metric`` beats ``best`` (infinite: nothing yet); NaN never does."""
    if math.isnan(value):
        return False
    if math.isinf(best):
        return True
    return value > best if metric.higher_is_better else value < best
