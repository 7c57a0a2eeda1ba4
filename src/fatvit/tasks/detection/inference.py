"""A trained detector read back from its file, and its evaluation on a COCO split (drawn predictions: predict.py).

The file's record (written by training: model, arguments, classes, category
ids, image sizes) says how to rebuild the detector; its weights are then
loaded strictly.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from ...checkpoint import PathLike
from ...data import ResumableSampler, SeededDataset, make_loader
from ...engine.setup import resolve_amp
from ...errors import FatvitError
from ..base import load_trained
from .config import SETTINGS, DetectConfig
from .data import CocoDetection, collate_detection, detection_transform
from .models import build_detector
from .task import coco_split, data_root, evaluate_detector

__all__ = ["load_detector", "evaluate_checkpoint"]


def load_detector(
    path: PathLike, use_ema: bool = False, settings: Optional[Dict[str, Any]] = None
) -> Tuple[nn.Module, Dict[str, Any]]:
    """The detector a fatvit detection file records, weights loaded, in eval mode on the CPU; and its record.

    Raises:
        FatvitError: an unreadable file, or one that holds no fatvit detector.
    """
    return load_trained(path, DetectConfig, "detector", _build_recorded, SETTINGS, use_ema, settings)


def _build_recorded(meta: Dict[str, Any]) -> nn.Module:
    return build_detector(
        meta["model"], num_classes=int(meta["num_classes"]), min_size=int(meta["min_size"]),
        max_size=int(meta["max_size"]), detections_per_img=int(meta.get("detections_per_img", 100)),
        score_thresh=float(meta.get("score_thresh", 0.05)),
        # files from before fatvit followed mmdet record neither: torchvision's RoIAlign and P7, as trained
        aligned_roi=bool(meta.get("aligned_roi", False)), p7_relu=bool(meta.get("p7_relu", True)),
        **dict(meta.get("model_kwargs", {})),
    )  # fmt: skip


def evaluate_checkpoint(
    path: PathLike,
    data: Optional[str] = None,
    split: str = "val",
    batch_size: int = 2,
    workers: int = 0,
    device: str = "cpu",
    use_ema: bool = False,
    amp: str = "none",
    settings: Optional[Dict[str, Any]] = None,
    padded_batches: bool = False,
) -> Tuple[Dict[str, Any], str]:
    """COCO AP of the detector in ``path`` on a split of ``data`` (default: the embedded scenes), and
    COCOeval's tables as text. ``amp`` as a training config's (none: float32): the backbone and neck run in
    its dtype, the rest in float32, as in training. Each image is scored as alone, whatever ``batch_size``,
    unless ``padded_batches`` (see :func:`fatvit.tasks.detection.task.evaluate_detector`). The metrics' ``epoch``
    and ``step`` say how far the file's weights were trained (None for a file from before fatvit recorded it).

    Raises:
        FatvitError: the data's categories (ids or names) are not the ones the detector was trained on.
    """
    model, meta = load_detector(path, use_ema, settings)
    images, annotations = coco_split(data_root(data), split)
    dataset = CocoDetection(images, annotations, train=False)  # COCOeval reads the masks from the file
    if [int(c) for c in meta.get("category_ids", dataset.cat_ids)] != dataset.cat_ids:
        raise FatvitError(
            f"{annotations} lists other categories than {path} detects ({len(dataset.cat_ids)} against "
            f"{len(meta.get('category_ids', []))})"
        )
    trained = [str(c) for c in meta.get("classes") or dataset.classes]
    if trained != dataset.classes:
        pairs = list(zip(trained, dataset.classes))
        differ = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
        which = (
            f"category {dataset.cat_ids[differ]}: {dataset.classes[differ]!r} in the data, {trained[differ]!r} in "
            "the checkpoint"
            if differ is not None
            else f"{len(dataset.classes)} against {len(trained)}"
        )
        raise FatvitError(f"{annotations} names other categories than {path} detects ({which})")
    dev = torch.device(device)
    model.to(dev)
    loader = make_loader(
        SeededDataset(dataset, detection_transform(False), 0, joint=True),
        ResumableSampler(len(dataset), shuffle=False, pad=False), batch_size, workers, drop_last=False,
        collate_fn=collate_detection,
    )  # fmt: skip
    metrics, text = evaluate_detector(
        model, loader, dataset.coco, dataset.cat_ids, dev, resolve_amp(amp, dev), padded_batches
    )
    metrics.update(epoch=meta.get("epoch"), step=meta.get("step"))
    return metrics, text
