"""Evaluation: top-1, top-5, loss and throughput on a validation set."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict

import torch
import torch.nn.functional as F
from timm.data import create_transform, resolve_data_config
from timm.utils import accuracy
from torch import nn
from torch.utils.data import DataLoader

from ...distributed import all_reduce_sum
from ..base import Metric, Runner, evaluate_batches

__all__ = ["EvalResult", "METRICS", "evaluate", "eval_transform"]


@dataclass(frozen=True)
class EvalResult:
    top1: float
    top5: float
    loss: float
    images: int
    images_per_s: float
    skipped_images: int = 0  # unreadable images, left out of the metrics

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def eval_transform(model: nn.Module, **overrides: Any):  # noqa: ANN201 - a torchvision transform
    """The evaluation transform from the model's pretrained_cfg (resize to size/crop_pct, center crop).

    ``overrides`` (``input_size``, ``crop_pct``, ``interpolation``, ...) win over the config.
    """
    args = {k: v for k, v in overrides.items() if v is not None}
    cfg = resolve_data_config(args, model=model)
    return create_transform(**cfg, is_training=False)


#: What classification reports: the loss (not summarised) and top-1/top-5 accuracy in percent.
METRICS = (
    Metric("loss", "val loss", ".4f", higher_is_better=False, in_summary=False),
    Metric("top1", "top-1", ".2f", "%"),
    Metric("top5", "top-5", ".2f", "%"),
)


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> EvalResult:
    """Top-1/top-5 accuracy (%) and mean cross-entropy over ``loader``, summed over all ranks.

    Under DDP each rank must see its own share of the images, each image once
    (``ResumableSampler(pad=False)``), so the figures are exact.
    """
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # images, loss sum, top-1 hits, top-5 hits

    def step(images: torch.Tensor, targets: torch.Tensor, run: Runner) -> int:
        logits = run(model, images).float()
        targets = targets.to(device)
        n = len(targets)
        top1, top5 = accuracy(logits, targets, topk=(1, min(5, logits.shape[1])))  # percentages of the batch
        batch = torch.stack(
            [torch.tensor(float(n), device=device), F.cross_entropy(logits, targets, reduction="sum"),
             (top1 * n / 100).round(), (top5 * n / 100).round()]
        )  # fmt: skip
        totals.add_(batch.to(torch.float64))  # stays on the device: no sync per batch
        return n

    def compute() -> Dict[str, Any]:
        summed = all_reduce_sum(totals)
        n = max(int(summed[0].item()), 1)
        return dict(top1=100.0 * summed[2].item() / n, top5=100.0 * summed[3].item() / n, loss=summed[1].item() / n)

    result = evaluate_batches(model, loader, step, compute, device, amp_dtype, channels_last)
    return EvalResult(**result)
