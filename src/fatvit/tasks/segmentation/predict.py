"""Class maps for image files: a segmenter's prediction at the image's own size, and the image drawn with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence

import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2.functional import pil_to_tensor
from torchvision.utils import draw_segmentation_masks

from ... import drawing
from ...data import load_rgb
from .data import SegmentationEvalTransform
from .metrics import predict_logits, upsample_to

__all__ = ["segment_image", "draw_classes"]


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
