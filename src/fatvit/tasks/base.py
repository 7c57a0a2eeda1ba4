"""What a task plugs into the shared training engine (:class:`fatvit.engine.Trainer`).

The engine owns everything a run has whatever it learns: the output folder,
atomic checkpoints and exact resume, DDP, AMP, channels-last, gradient
clipping and accumulation, EMA, the schedule, progress bar, CSV, TensorBoard,
curves and ``summary.json``. A :class:`Task` supplies the rest: its data,
model, loss and metrics. The tasks are the packages of :mod:`fatvit.tasks`;
:func:`fatvit.tasks.get_task` picks one by the config's ``task``. This
module imports no task.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..checkpoint import PathLike, load_task_model
from ..config import apply_settings
from ..data import Splits
from ..distributed import all_reduce_sum

__all__ = ["Task", "Metric", "Runner", "amp_autocast", "evaluate_batches", "split_of", "load_trained"]


@dataclass(frozen=True)
class Metric:
    """A validation metric a task reports: the engine logs, plots and summarises it from this declaration.

    ``name`` is its key in :meth:`Task.evaluate`'s result and its column ``val_<name>`` in ``metrics.csv``; the
    epoch's log line shows it as ``<title> <value:fmt><unit>`` (an empty ``title`` keeps it out of the line);
    ``summary.json`` holds its last value unless ``in_summary`` is off.
    """

    name: str
    title: str = ""
    fmt: str = ".3f"
    unit: str = ""
    higher_is_better: bool = True
    in_summary: bool = True


def load_trained(
    path: PathLike, cls: type, what: str, build: Callable[[Dict[str, Any]], nn.Module], setting_keys: Sequence[str],
    use_ema: bool = False, settings: Optional[Dict[str, Any]] = None,
) -> Tuple[nn.Module, Dict[str, Any]]:  # fmt: skip
    """The model a fatvit file of the task of config class ``cls`` records (called ``what`` in errors), built by
    ``build(record)`` with ``settings`` (``--set``) over the record's ``setting_keys``, checked as ``cls`` checks
    them; weights loaded, in eval mode on the CPU. Returns the model and its (changed) record."""

    def adjust(record: Dict[str, Any]) -> Dict[str, Any]:
        return apply_settings(record, settings or {}, cls, setting_keys)

    return load_task_model(path, cls.TASK, what, build, use_ema, adjust)


def amp_autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager[Any]:
    """Autocast to ``dtype`` on ``device``'s type, or nothing when ``dtype`` is None (float32)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def split_of(loader: Any) -> Any:
    """The data set of a split that ``loader`` reads (under the engine's seeded wrapper, if any)."""
    return getattr(loader.dataset, "dataset", loader.dataset)


#: ``run(fn, x)``: ``fn`` applied to the images ``x`` placed for the model (see :func:`evaluate_batches`)
Runner = Callable[[Callable[[Any], Any], Any], Any]


@torch.no_grad()
def evaluate_batches(
    model: nn.Module,
    loader: Iterable[Tuple[Any, Any, int]],
    step: Callable[[Any, Any, Runner], int],
    compute: Callable[[], Dict[str, Any]],
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
    autocast: Optional[Callable[[nn.Module, torch.device, Optional[torch.dtype]], ContextManager[Any]]] = None,
) -> Dict[str, Any]:
    """The evaluation every task runs: ``model`` in eval mode over ``loader``'s ``(inputs, targets, skipped)``
    batches, ``step(inputs, targets, run)`` on each batch that holds an image (it returns the images it scored),
    then ``compute()`` (all processes together), with ``images``, ``skipped_images`` and ``images_per_s`` summed
    over the processes.

    The step runs its model through ``run(fn, x)``: ``fn(x)`` with the images ``x`` (a tensor, or a list of them)
    moved to ``device``, a 4-D tensor in channels-last memory if ``channels_last``, under autocast to ``amp_dtype``
    over the whole model, or under ``autocast(model, device, amp_dtype)`` for a task that autocasts only part of
    its model (the policy its :meth:`Task.autocast` trains with)."""

    def run(fn: Callable[[Any], Any], x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            x = x.to(device)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = [t.to(device) for t in x]
        with amp_autocast(device, amp_dtype) if autocast is None else autocast(model, device, amp_dtype):
            return fn(x)

    model.eval()
    seen, skipped_total, start = 0, 0, time.perf_counter()
    for inputs, targets, skipped in loader:
        skipped_total += skipped
        if len(inputs) == 0:  # every image of the batch was unreadable
            continue
        seen += step(inputs, targets, run)
    seconds = time.perf_counter() - start
    result = dict(compute())
    counts = all_reduce_sum(torch.tensor([float(seen), float(skipped_total)], device=device))
    result.update(images=int(counts[0].item()), skipped_images=int(counts[1].item()),
                  images_per_s=counts[0].item() / max(seconds, 1e-9))  # fmt: skip
    return result


class Task:
    """The task-specific half of a training run. Subclasses set the class attributes and override the methods."""

    #: the config's ``task``
    name: str = ""
    #: the validation metric that picks ``best.pth``, one of :meth:`metrics`
    primary_metric: str = ""
    #: how the primary metric reads in plots
    metric_title: str = ""
    #: ``summary.json`` holds the last values as ``final_metrics: {name: value}`` (else ``final_<name>``)
    nested_summary: bool = False
    #: transforms are called on (image, target), not on the image alone
    joint_transform: bool = False
    #: what the data is when the config names none (in the log line)
    embedded_name: str = ""
    #: some parameters may get no gradient in a step (DDP must then look for them)
    find_unused_parameters: bool = False

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def build_splits(self) -> Splits:
        """The train and val data sets (without transforms) and the class names."""
        raise NotImplementedError

    def build_model(self, classes: Sequence[str], model_kwargs: Dict[str, Any], load_weights: bool = True) -> nn.Module:
        """The model for ``classes``; with ``load_weights``, ``cfg.finetune`` (and backbone weights) loaded."""
        raise NotImplementedError

    def mean_std(self, model: nn.Module) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        """The normalisation the model is trained with (recorded in checkpoints)."""
        raise NotImplementedError

    def transforms(self, mean: Sequence[float], std: Sequence[float]) -> Tuple[Callable, Callable]:
        """The train and val transforms."""
        raise NotImplementedError

    def collate(self, batch: Sequence[Any]) -> Tuple[Any, Any, int]:
        """A batch as ``(inputs, targets, unreadable samples dropped)``."""
        raise NotImplementedError

    def setup_loss(self, classes: Sequence[str]) -> None:
        """Build the loss (and any batch mixing); called once, after the model."""

    def prepare_batch(self, inputs: Any, targets: Any, device: torch.device, channels_last: bool) -> Tuple[Any, Any]:
        """Move a training batch to ``device`` (and mix or reformat it)."""
        raise NotImplementedError

    def batch_size_of(self, targets: Any) -> int:
        return len(targets)

    def loss(self, model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
        """The training loss of one batch (called under :meth:`autocast`)."""
        raise NotImplementedError

    def autocast(self, model: nn.Module, device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager[Any]:
        """What a forward pass of ``model`` runs under with mixed precision ``dtype`` (None: float32):
        autocast over the whole model. A task whose model must keep part of its work in float32 returns
        its own context."""
        return amp_autocast(device, dtype)

    def start_notes(self, starting: bool) -> List[str]:
        """What the run's start line adds for this task (where its weights come from, say); ``starting`` is
        False for a resumed run. May refuse a start (a :class:`~fatvit.errors.FatvitError`). None by default."""
        return []

    def batch_groups(self, train_set: Any) -> Optional[List[int]]:
        """A group per training sample, so that each batch draws from one group (None: no grouping)."""
        return None

    def evaluate(
        self, model: nn.Module, loader: Any, device: torch.device, amp_dtype: Optional[torch.dtype], channels_last: bool
    ) -> Dict[str, Any]:
        """Validation metrics over ``loader`` (all processes together; :func:`evaluate_batches`): a dict with every
        name of :meth:`metrics`, ``images`` and ``skipped_images``."""
        raise NotImplementedError

    def metrics(self) -> Sequence[Metric]:
        """The metrics :meth:`evaluate` reports, in the order of the log's columns."""
        raise NotImplementedError

    def summary_extra(self, result: Dict[str, Any], classes: Sequence[str]) -> Dict[str, Any]:
        """What ``summary.json`` adds besides the metrics, from the last evaluation's ``result`` (none by
        default)."""
        return {}

    def save_model_files(self, model: nn.Module, folder: Path, meta: Dict[str, Any]) -> None:
        """Write the files besides ``model.safetensors`` that make the run folder usable elsewhere (none by
        default)."""

    def meta(self, model_kwargs: Dict[str, Any], splits: Splits, mean: Sequence[float],
             std: Sequence[float], model: nn.Module) -> Dict[str, Any]:  # fmt: skip
        """The record every file of the run carries: how to rebuild and feed the model (trained on ``splits``)."""
        raise NotImplementedError
