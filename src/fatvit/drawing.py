"""Predictions drawn to be read: at a readable size, one colour per class, labels that do not overlap, a legend.

Detections and class maps of small inputs (the digit scenes are 64 to 128 px)
would be unreadable as drawn at the input's size. :func:`upscale` enlarges the
image (and :func:`scale_boxes`/:func:`scale_masks` its predictions) to at
least :data:`MIN_SIDE` pixels on its shorter side; text is set in Pillow's
scalable default font at a size that follows the drawing's; :func:`add_legend`
puts one row per class (its colour, name and what was found) in a band at the
right. torchvision's ``draw_bounding_boxes`` and ``draw_segmentation_masks``
draw the boxes and masks.
"""

from __future__ import annotations

import colorsys
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["MIN_SIDE", "palette", "upscale", "scale_boxes", "scale_masks", "label_font", "place_labels", "add_legend",
           "to_pil", "to_tensor"]  # fmt: skip

#: The shorter side of a drawing, in pixels, at least (larger images are drawn at their own size).
MIN_SIDE = 512

Colour = Tuple[int, int, int]
Box = Tuple[float, float, float, float]


def palette(n: int) -> List[Colour]:
    """``n`` distinct colours: evenly spaced hues, alternating in brightness so neighbours differ."""
    return [
        tuple(int(255 * v) for v in colorsys.hsv_to_rgb(i / max(n, 1), 0.75, 1.0 if i % 2 == 0 else 0.7))
        for i in range(n)
    ]


def upscale(image: torch.Tensor, min_side: int = MIN_SIDE) -> Tuple[torch.Tensor, int]:
    """``image`` (uint8, 3xHxW) enlarged by the smallest whole factor that makes its shorter side at least
    ``min_side`` (nearest neighbour: pixels stay sharp squares), and that factor (1: unchanged)."""
    factor = max(1, math.ceil(min_side / max(1, min(image.shape[-2:]))))
    if factor == 1:
        return image, 1
    return image.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1), factor


def scale_boxes(boxes: torch.Tensor, factor: int) -> torch.Tensor:
    """(x0, y0, x1, y1) boxes of an image enlarged ``factor`` times."""
    return boxes.float() * factor


def scale_masks(masks: torch.Tensor, factor: int) -> torch.Tensor:
    """Boolean NxHxW masks enlarged ``factor`` times (each pixel a factor x factor square)."""
    if factor == 1:
        return masks
    return masks.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def label_font(image_height: int) -> ImageFont.FreeTypeFont:
    """Pillow's scalable default font, sized for a drawing ``image_height`` pixels high."""
    return ImageFont.load_default(size=max(12, round(image_height / 32)))


def _text_colour(background: Colour) -> Colour:
    """Black or white, whichever reads better on ``background``."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(
    image: Image.Image, boxes: Sequence[Box], texts: Sequence[str], colours: Sequence[Colour],
    font: ImageFont.FreeTypeFont,
) -> List[Optional[Box]]:  # fmt: skip
    """Write each box's text on a tag of its colour, in the first of these places that no earlier tag covers:
    above the box, inside its top, below it, inside its bottom (each kept within the image). Boxes come in
    order of importance (highest score first); a text with no free place is left out (its box and the legend
    still show the class). Returns, per box, where its tag went (None: left out)."""
    draw = ImageDraw.Draw(image)
    width, height = image.size
    pad = max(1, round(font.size / 6))
    placed: List[Box] = []
    written: List[Optional[Box]] = []
    for (x0, y0, _, y1), text, colour in zip(boxes, texts, colours):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        w, h = right - left + 2 * pad, bottom - top + 2 * pad
        x = min(max(0.0, x0), max(0.0, width - w))
        spots = [y0 - h, y0, y1, y1 - h]
        spot = next(
            (
                (x, y, x + w, y + h)
                for y in spots
                if 0 <= y <= height - h and not any(_overlap((x, y, x + w, y + h), p) for p in placed)
            ),
            None,
        )
        written.append(spot)
        if spot is None:
            continue
        placed.append(spot)
        draw.rectangle(spot, fill=colour)
        draw.text((spot[0] + pad - left, spot[1] + pad - top), text, fill=_text_colour(colour), font=font)
    return written


def add_legend(
    image: Image.Image, rows: Sequence[Tuple[Colour, str]], font: ImageFont.FreeTypeFont, title: str = ""
) -> Image.Image:
    """``image`` with a white band at its right listing ``rows`` (a colour swatch and its text each), under
    ``title``; the canvas grows downwards if the rows need more height than the image has."""
    probe = ImageDraw.Draw(image)
    line = font.size + max(4, font.size // 2)
    lines = ([title] if title else []) + [text for _, text in rows]
    text_w = max((probe.textlength(t, font=font) for t in lines), default=0)
    swatch = font.size
    margin = max(6, font.size // 2)
    band = int(margin * 3 + swatch + text_w)
    height = max(image.height, margin * 2 + line * len(lines))
    canvas = Image.new("RGB", (image.width + band, height), (255, 255, 255))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x, y = image.width + margin, margin
    if title:
        draw.text((x, y), title, fill=(0, 0, 0), font=font)
        y += line
    for colour, text in rows:
        draw.rectangle((x, y, x + swatch, y + swatch), fill=colour, outline=(0, 0, 0))
        draw.text((x + swatch + margin, y), text, fill=(0, 0, 0), font=font)
        y += line
    return canvas


def to_pil(image: torch.Tensor) -> Image.Image:
    """A uint8 3xHxW tensor as a Pillow RGB image."""
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A Pillow RGB image as a uint8 3xHxW tensor."""
    return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).contiguous()
