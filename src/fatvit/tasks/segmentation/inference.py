"""A trained segmenter read back from its file: evaluation on a split, and drawn class maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2.functional import pil_to_tensor
from torchvision.utils import draw_segmentation_masks

from ... import drawing
from ...checkpoint import PathLike, load_task_model
from ...config import apply_settings
from ...data import ResumableSampler, SeededDataset, load_rgb, make_loader
from ...engine.setup import resolve_amp
from ...errors import FatvitError
from .config import SETTINGS, SegmentConfig
from .data import ADE20KSegmentation, SegmentationEvalTransform, collate_segmentation
from .metrics import predict_logits, upsample_to
from .models import build_segmenter
from .task import data_root, evaluate_segmenter, resolve_classes

__all__ = ["load_segmenter", "evaluate_checkpoint", "segment_image", "draw_classes"]


def load_segmenter(
    path: PathLike, use_ema: bool = False, settings: Optional[Dict[str, Any]] = None
) -> Tuple[nn.Module, Dict[str, Any]]:
    """The segmenter a fatvit segmentation file records, weights loaded, in eval mode on the CPU; and its record.

    Raises:
        FatvitError: an unreadable file, or one that holds no fatvit segmenter.
    """

    def build(meta: Dict[str, Any]) -> nn.Module:
        return build_segmenter(
            meta["model"], num_classes=int(meta["num_classes"]), **dict(meta.get("model_kwargs", {}))
        )

    def adjust(meta: Dict[str, Any]) -> Dict[str, Any]:
        return apply_settings(meta, settings or {}, SegmentConfig, SETTINGS)

    return load_task_model(path, "segment", "segmenter", build, use_ema, adjust)


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
    ``amp`` as a training config's (none: float32).

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
    result["classes"] = classes
    return result


@torch.no_grad()
def segment_image(model: nn.Module, meta: Dict[str, Any], image: Path | Image.Image, device: str = "cpu") -> Any:
    """The image (uint8, 3xHxW; a file, or an RGB PIL image) and its predicted class map (HxW) at its own size."""
    image = load_rgb(str(image)) if isinstance(image, (str, Path)) else image
    transform = SegmentationEvalTransform(meta["scale"], meta["mean"], meta["std"])
    x, _ = transform(image, None)
    dev = torch.device(device)
    model.to(dev).eval()
    logits = predict_logits(model, x[None].to(dev), int(meta["num_classes"]), meta.get("test_mode", "whole"),
                            int(meta.get("crop_size", 512)), int(meta.get("test_stride", 341)))  # fmt: skip
    pixels = pil_to_tensor(image)
    return pixels, upsample_to(logits.float(), list(pixels.shape[-2:])).argmax(1)[0].cpu()


def draw_classes(
    image: torch.Tensor, classes_map: torch.Tensor, classes: Sequence[str], skip: Sequence[int] = (),
    min_side: int = drawing.MIN_SIDE,
) -> torch.Tensor:  # fmt: skip
    """``image`` (uint8, 3xHxW) with each predicted class overlaid in its own colour (torchvision's
    draw_segmentation_masks), enlarged to at least ``min_side`` pixels on its shorter side, and a legend of
    the classes present with their share of the pixels, largest first. Classes in ``skip`` (the background)
    are left undrawn and named as such in the legend."""
    ids, counts = torch.unique(classes_map, return_counts=True)
    share = {int(c): int(n) / classes_map.numel() for c, n in zip(ids, counts)}
    present = sorted(share, key=lambda c: -share[c])
    drawn = [c for c in present if c not in skip]
    colours = drawing.palette(len(classes))
    canvas, factor = drawing.upscale(image, min_side)
    if drawn:
        masks = drawing.scale_masks(torch.stack([classes_map == c for c in drawn]), factor)
        canvas = draw_segmentation_masks(canvas, masks, alpha=0.5, colors=[colours[c] for c in drawn])
    picture = drawing.to_pil(canvas)

    def pct(c: int) -> str:
        return f"{100 * share[c]:.1f}%" if share[c] >= 0.001 else "<0.1%"

    rows = [
        ((255, 255, 255), f"{classes[c]}: {pct(c)} (not drawn)")
        if c in skip
        else (colours[c], f"{classes[c]}: {pct(c)}")
        for c in present
    ]
    picture = drawing.add_legend(picture, rows, drawing.label_font(picture.height), title="pixels")
    return drawing.to_tensor(picture)
