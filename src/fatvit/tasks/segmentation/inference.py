"""A trained segmenter read back from its file, and its evaluation on a split (drawn class maps: predict.py)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from ...checkpoint import PathLike
from ...data import ResumableSampler, SeededDataset, make_loader
from ...engine.setup import resolve_amp
from ...errors import FatvitError
from ..base import load_trained
from .config import SETTINGS, SegmentConfig
from .data import ADE20KSegmentation, SegmentationEvalTransform, collate_segmentation
from .models import build_segmenter
from .task import data_root, evaluate_segmenter, resolve_classes

__all__ = ["load_segmenter", "evaluate_checkpoint"]


def load_segmenter(
    path: PathLike, use_ema: bool = False, settings: Optional[Dict[str, Any]] = None
) -> Tuple[nn.Module, Dict[str, Any]]:
    """The segmenter a fatvit segmentation file records, weights loaded, in eval mode on the CPU; and its record.

    Raises:
        FatvitError: an unreadable file, or one that holds no fatvit segmenter.
    """
    return load_trained(path, SegmentConfig, "segmenter", _build_recorded, SETTINGS, use_ema, settings)


def _build_recorded(meta: Dict[str, Any]) -> nn.Module:
    return build_segmenter(meta["model"], num_classes=int(meta["num_classes"]), **dict(meta.get("model_kwargs", {})))


def evaluate_checkpoint(
    path: PathLike,
    data: Optional[str] = None,
    split: str = "val",
    workers: int = 0,
    device: str = "cpu",
    use_ema: bool = False,
    mode: Optional[str] = None,
    amp: str = "none",
    settings: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """mIoU, mAcc, aAcc and per-class IoU of the segmenter in ``path`` on a split of ``data`` (default: the
    embedded scenes), preprocessed as the file records; ``mode`` (whole or slide) overrides the recorded one;
    ``amp`` as a training config's (none: float32). ``epoch`` and ``step`` say how far the file's weights were
    trained (None for a file from before fatvit recorded it).

    Raises:
        FatvitError: the data set's classes are not the ones the segmenter was trained on.
    """
    model, meta = load_segmenter(path, use_ema, settings)
    root = data_root(data)
    classes = resolve_classes(root, int(meta["num_classes"]))
    if meta.get("classes") and root.joinpath("classes.txt").is_file() and classes != list(meta["classes"]):
        raise FatvitError(f"{root} names other classes than {path} segments")
    dataset = ADE20KSegmentation(root, split, len(classes), bool(meta.get("reduce_zero_label", True)))
    transform = SegmentationEvalTransform(meta["scale"], meta["mean"], meta["std"])
    loader = make_loader(SeededDataset(dataset, transform, 0, joint=True),
                         ResumableSampler(len(dataset), shuffle=False, pad=False), 1, workers, drop_last=False,
                         collate_fn=collate_segmentation)  # fmt: skip
    dev = torch.device(device)
    result = evaluate_segmenter(
        model.to(dev), loader, len(classes), dev, resolve_amp(amp, dev), False, mode or meta.get("test_mode", "whole"),
        int(meta.get("crop_size", 512)), int(meta.get("test_stride", 341)),
    )  # fmt: skip
    result.update(classes=classes, epoch=meta.get("epoch"), step=meta.get("step"))
    return result
