"""Semantic segmentation metrics as mmseg computes them, and whole-image and sliding-window inference.

:class:`SegmentationMetrics` accumulates one confusion matrix over the data
set with torchmetrics' ``MulticlassJaccardIndex`` (ignore index 255; synced
over processes under DDP), then: per-class IoU, mIoU (the mean over the
classes whose union is not empty), per-class accuracy and mAcc (over the
classes present in the labels), and aAcc (all labelled pixels).
"""

from __future__ import annotations

import math
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassJaccardIndex

from .data import IGNORE_INDEX

__all__ = ["SegmentationMetrics", "predict_logits", "sliding_window_count"]


class SegmentationMetrics:
    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.metric = MulticlassJaccardIndex(num_classes, average="none", ignore_index=IGNORE_INDEX).to(device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """``pred``: class indices; ``target``: classes and 255 (ignored); same shape."""
        self.metric.update(pred.reshape(-1), target.reshape(-1).to(pred.device))

    def compute(self) -> Dict[str, object]:
        """``mIoU``, ``mAcc``, ``aAcc`` (fractions) and ``per_class_iou`` (NaN where a class has an empty union)."""
        with self.metric.sync_context():
            cm = self.metric.confmat.double().cpu()  # rows: true class, columns: predicted
        hits = cm.diag()
        truth, predicted = cm.sum(1), cm.sum(0)
        union = truth + predicted - hits
        iou = torch.where(union > 0, hits / union.clamp(min=1), torch.full_like(hits, math.nan))
        acc = torch.where(truth > 0, hits / truth.clamp(min=1), torch.full_like(hits, math.nan))
        total = truth.sum().item()
        return dict(
            mIoU=_nanmean(iou),
            mAcc=_nanmean(acc),
            aAcc=hits.sum().item() / total if total else math.nan,
            per_class_iou=[float(v) for v in iou],
            per_class_acc=[float(v) for v in acc],
        )


def _nanmean(values: torch.Tensor) -> float:
    kept = values[~values.isnan()]
    return float(kept.mean()) if len(kept) else math.nan


def sliding_window_count(size: int, crop: int, stride: int) -> int:
    """How many windows of ``crop`` at ``stride`` cover ``size`` pixels (mmseg's count)."""
    return max(math.ceil((size - crop) / stride), 0) + 1


def predict_logits(
    model: nn.Module, image: torch.Tensor, num_classes: int, mode: str = "whole", crop: int = 512, stride: int = 341
) -> torch.Tensor:
    """Class scores ``(N, K, H, W)`` of ``image`` ``(N, 3, H, W)``: in one pass, or averaged over sliding windows
    of ``crop`` pixels at ``stride`` (mmseg's ``slide`` mode; the windows of the last row and column end at the
    image's edge)."""
    if mode == "whole":
        return model(image)
    n, _, h, w = image.shape
    logits = image.new_zeros((n, num_classes, h, w))
    counts = image.new_zeros((1, 1, h, w))
    for i in range(sliding_window_count(h, crop, stride)):
        for j in range(sliding_window_count(w, crop, stride)):
            y2, x2 = min(i * stride + crop, h), min(j * stride + crop, w)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            logits[:, :, y1:y2, x1:x2] += model(image[:, :, y1:y2, x1:x2])
            counts[:, :, y1:y2, x1:x2] += 1
    return logits / counts


def upsample_to(logits: torch.Tensor, size: List[int]) -> torch.Tensor:
    """Scores resized to a label map's size (bilinear), as mmseg scores the original resolution."""
    if list(logits.shape[-2:]) == list(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
