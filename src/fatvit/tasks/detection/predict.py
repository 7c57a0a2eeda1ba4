"""Detections for image files: a detector's raw outputs, and the image drawn with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch
from PIL import Image
from torch import nn
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ... import drawing
from ...data import load_rgb
from .data import detection_transform

__all__ = ["detect_images", "draw_detections"]


@torch.no_grad()
def detect_images(model: nn.Module, images: Sequence[Path | Image.Image], device: str = "cpu") -> List[Dict[str, Any]]:
    """The detector's raw outputs for each image (a file, or an RGB PIL image): boxes, labels with the model's
    offset, scores, masks."""
    dev = torch.device(device)
    model.to(dev).eval()
    to_tensor = detection_transform(False)
    outputs = []
    for item in images:
        image = to_tensor(load_rgb(str(item)) if isinstance(item, (str, Path)) else item, {})[0]
        (out,) = model([image.to(dev)])
        outputs.append({k: v.cpu() for k, v in out.items()})
    return outputs


def draw_detections(
    image: torch.Tensor, output: Dict[str, torch.Tensor], classes: Sequence[str], label_offset: int,
    score_threshold: float = 0.5, min_side: int = drawing.MIN_SIDE,
) -> torch.Tensor:  # fmt: skip
    """``image`` (uint8, 3xHxW) with the detections scoring at least ``score_threshold`` drawn, enlarged to at
    least ``min_side`` pixels on its shorter side: masks and boxes in their class's colour (torchvision's
    drawing utilities), "class score" tags that do not overlap (highest scores first; see
    :func:`fatvit.drawing.place_labels`), and a legend of the classes found with their counts."""
    keep = output["scores"] >= score_threshold
    order = torch.argsort(output["scores"][keep], descending=True)
    boxes, scores = output["boxes"][keep][order], output["scores"][keep][order]
    found = [int(lab) - label_offset for lab in output["labels"][keep][order]]
    colours = drawing.palette(len(classes))
    canvas, factor = drawing.upscale(image, min_side)
    if "masks" in output and found:
        masks = drawing.scale_masks(output["masks"][keep][order][:, 0] >= 0.5, factor)
        canvas = draw_segmentation_masks(canvas, masks, alpha=0.45, colors=[colours[c] for c in found])
    boxes = drawing.scale_boxes(boxes, factor)
    if found:
        width = max(2, round(min(canvas.shape[-2:]) / 200))
        canvas = draw_bounding_boxes(canvas, boxes, colors=[colours[c] for c in found], width=width)
    picture = drawing.to_pil(canvas)
    font = drawing.label_font(picture.height)
    drawing.place_labels(picture, boxes.tolist(), [f"{classes[c]} {s:.2f}" for c, s in zip(found, scores)],
                         [colours[c] for c in found], font)  # fmt: skip
    counts = {c: found.count(c) for c in sorted(set(found))}
    rows = [(colours[c], f"{classes[c]}: {n} found") for c, n in counts.items()] or [((200, 200, 200), "none")]
    picture = drawing.add_legend(picture, rows, font, title=f"score >= {score_threshold:g}")
    return drawing.to_tensor(picture)
