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

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..data import Splits

__all__ = ["Task"]


class Task:
    """The task-specific half of a training run. Subclasses set the class attributes and override the methods."""

    #: the config's ``task``
    name: str = ""
    #: the validation metric that picks ``best.pth`` (higher is better), a key of :meth:`evaluate`'s result
    primary_metric: str = ""
    #: how the primary metric reads in logs and plots
    metric_title: str = ""
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
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

    def batch_groups(self, train_set: Any) -> Optional[List[int]]:
        """A group per training sample, so that each batch draws from one group (None: no grouping)."""
        return None

    def evaluate(
        self, model: nn.Module, loader: Any, device: torch.device, amp_dtype: Optional[torch.dtype], channels_last: bool
    ) -> Dict[str, Any]:
        """Validation metrics over ``loader`` (all processes together): a flat dict of numbers, with
        :attr:`primary_metric`, ``images`` and ``skipped_images``."""
        raise NotImplementedError

    def row(self, metrics: Dict[str, Any]) -> Dict[str, Any]:
        """The columns ``metrics.csv`` gets from an evaluation (``val_...``)."""
        raise NotImplementedError

    def epoch_line(self, metrics: Dict[str, Any]) -> str:
        """The part of the epoch's log line that shows the metrics."""
        raise NotImplementedError

    def summary(self, last: Dict[str, Any], best: Optional[float]) -> Dict[str, Any]:
        """What ``summary.json`` adds for this task, from the last epoch's row and the best primary metric."""
        raise NotImplementedError

    def save_model_files(self, model: nn.Module, folder: Path, meta: Dict[str, Any]) -> None:
        """Write the files besides ``model.safetensors`` that make the run folder usable elsewhere (none by
        default)."""

    def meta(self, model_kwargs: Dict[str, Any], classes: List[str], mean: Sequence[float],
             std: Sequence[float], model: nn.Module) -> Dict[str, Any]:  # fmt: skip
        """The record every file of the run carries: how to rebuild and feed the model."""
        raise NotImplementedError
