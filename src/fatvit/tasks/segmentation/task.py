"""Semantic segmentation as a task of the training engine: ADE20K-layout data, Semantic FPN, mIoU."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from ...checkpoint import fat_interaction, load_finetune
from ...data import Splits
from ...errors import FatvitError, unknown_choice
from ..base import Metric, Runner, Task, evaluate_batches
from ..scenes import embedded_scenes
from .data import (
    IGNORE_INDEX,
    ADE20KSegmentation,
    SegmentationEvalTransform,
    SegmentationTrainTransform,
    collate_segmentation,
    read_class_names,
)
from .metrics import SegmentationMetrics, predict_logits, upsample_to
from .models import SEGMENTERS, build_segmenter

__all__ = [
    "SegmentationTask",
    "data_root",
    "resolve_classes",
    "evaluate_segmenter",
    "pixel_cross_entropy",
    "CLASS_LAYERS",
]

#: The layer whose shape depends on the classes (replaced when fine-tuning).
CLASS_LAYERS = ("decode_head.classifier.",)

#: What segmentation reports: mean IoU, mean class accuracy and pixel accuracy.
METRICS = (Metric("mIoU", "mIoU"), Metric("mAcc", "mAcc"), Metric("aAcc", "aAcc"))

#: ADE20K's class count, used when the data set names no classes.
ADE20K_CLASSES = 150


def data_root(data: Optional[str]) -> Path:
    """The root of a config's ``data``: the folder itself, or the embedded scenes' ``ade/``."""
    root = Path(data) if data is not None else embedded_scenes() / "ade"
    if not root.is_dir():
        raise FatvitError(f"data folder not found: {root}")
    return root


def resolve_classes(root: Path, num_classes: Optional[int]) -> List[str]:
    """The class names of a data set: its ``classes.txt`` (or ``objectInfo150.txt``), else ``num_classes``
    (default 150, ADE20K's) numbered names; a given ``num_classes`` must match the file's."""
    names = read_class_names(root)
    if names is not None:
        if num_classes is not None and num_classes != len(names):
            raise FatvitError(f"num_classes={num_classes}, but {root} names {len(names)} classes")
        return names
    return [f"class_{i}" for i in range(num_classes or ADE20K_CLASSES)]


@torch.no_grad()
def evaluate_segmenter(
    model: nn.Module,
    loader: Any,
    num_classes: int,
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
    mode: str = "whole",
    crop: int = 512,
    stride: int = 341,
) -> Dict[str, Any]:
    """mIoU, mAcc, aAcc and per-class IoU of ``model`` over ``loader`` (all processes together), each image
    scored at its label map's own resolution."""
    metrics = SegmentationMetrics(num_classes, device)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return predict_logits(model, x, num_classes, mode, crop, stride)

    def step(images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], run: Runner) -> int:
        for image, label in zip(images, labels):
            logits = run(predict, image[None])
            pred = upsample_to(logits.float(), list(label.shape[-2:])).argmax(1)[0]
            metrics.update(pred, label.to(device))
        return len(images)

    return evaluate_batches(model, loader, step, metrics.compute, device, amp_dtype, channels_last)


def pixel_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, avg_non_ignore: bool = False) -> torch.Tensor:
    """mmseg's ``CrossEntropyLoss``: the pixels' losses summed (ignored pixels count 0) and divided by every
    pixel of the batch, the ignored and padded ones included (``avg_non_ignore=False``, mmseg's default and the
    authors' setting), or by the pixels not ignored (``avg_non_ignore=True``: PyTorch's mean)."""
    losses = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")
    if avg_non_ignore:
        return losses.sum() / (labels != IGNORE_INDEX).sum().clamp(min=1)
    return losses.mean()


class SegmentationTask(Task):
    name = "segment"
    primary_metric = "mIoU"
    metric_title = "val mIoU"
    joint_transform = True
    embedded_name = "the embedded digit scenes (ADE20K layout)"
    nested_summary = True

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        if cfg.model not in SEGMENTERS:
            raise unknown_choice("segmenter", cfg.model, SEGMENTERS)

    def build_splits(self) -> Splits:
        cfg = self.cfg
        root = data_root(cfg.data)
        classes = resolve_classes(root, cfg.num_classes)
        train = ADE20KSegmentation(root, "train", len(classes), cfg.reduce_zero_label)
        val = ADE20KSegmentation(root, "val", len(classes), cfg.reduce_zero_label)
        return Splits(train, val, classes)

    def build_model(self, classes: Sequence[str], model_kwargs: Dict[str, Any], load_weights: bool = True) -> nn.Module:
        cfg = self.cfg
        model = build_segmenter(
            cfg.model, num_classes=len(classes), backbone_weights=cfg.backbone_file if load_weights else None,
            fpn_init=cfg.fpn_init, **model_kwargs,
        )  # fmt: skip
        if cfg.finetune and load_weights:
            load_finetune(model, cfg.finetune, cfg.model, CLASS_LAYERS)
        return model

    def start_notes(self, starting: bool) -> List[str]:
        return [self.cfg.weights_origin(starting)]

    def mean_std(self, model: nn.Module) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)

    def transforms(self, mean: Sequence[float], std: Sequence[float]) -> Tuple[Callable, Callable]:
        cfg = self.cfg
        train = SegmentationTrainTransform(
            cfg.scale, cfg.ratio_range, cfg.crop_size, cfg.cat_max_ratio, cfg.hflip, cfg.photometric, mean, std
        )
        return train, SegmentationEvalTransform(cfg.scale, mean, std)

    def collate(self, batch: Sequence[Any]) -> Tuple[Any, Any, int]:
        return collate_segmentation(batch)

    def prepare_batch(self, inputs: Any, targets: Any, device: torch.device, channels_last: bool) -> Tuple[Any, Any]:
        if isinstance(inputs, list):  # only if every crop was unreadable: an empty batch
            return torch.empty(0), torch.empty(0)
        inputs = inputs.to(device, non_blocking=True)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs, targets.to(device, non_blocking=True)

    def loss(self, model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
        return pixel_cross_entropy(model(inputs).float(), targets, self.cfg.avg_non_ignore)

    def evaluate(
        self, model: nn.Module, loader: Any, device: torch.device, amp_dtype: Optional[torch.dtype], channels_last: bool
    ) -> Dict[str, Any]:
        cfg = self.cfg
        return evaluate_segmenter(
            model, loader, model.num_classes, device, amp_dtype, channels_last, cfg.test_mode, cfg.crop_size,
            cfg.test_stride,
        )  # fmt: skip

    def metrics(self) -> Sequence[Metric]:
        return METRICS

    def summary_extra(self, result: Dict[str, Any], classes: Sequence[str]) -> Dict[str, Any]:
        """Each class's IoU in the last evaluation (None for a class absent from the labels and predictions)."""
        per_class = result.get("per_class_iou", [])
        return dict(per_class_iou={name: (None if v != v else v) for name, v in zip(classes, per_class)})

    def meta(self, model_kwargs: Dict[str, Any], splits: Splits, mean: Sequence[float],
             std: Sequence[float], model: nn.Module) -> Dict[str, Any]:  # fmt: skip
        cfg, classes = self.cfg, splits.classes
        record = dict(
            task="segment", model=cfg.model, model_kwargs=dict(model_kwargs), num_classes=len(classes),
            classes=list(classes), reduce_zero_label=cfg.reduce_zero_label, scale=list(cfg.scale),
            crop_size=cfg.crop_size, test_mode=cfg.test_mode, test_stride=cfg.test_stride,
            mean=[float(m) for m in mean], std=[float(s) for s in std],
        )  # fmt: skip
        if fat_interaction(model):
            record["interaction"] = fat_interaction(model)
        return record
