"""Drawn detections and class maps: at a readable size, a colour per class, tags that do not overlap, a legend."""

from __future__ import annotations

import torch
from PIL import Image

from fatvit.drawing import MIN_SIDE, add_legend, label_font, palette, place_labels, to_tensor, upscale
from fatvit.tasks.detection.predict import draw_detections
from fatvit.tasks.segmentation.predict import draw_classes

CLASSES = [str(d) for d in range(10)]


def _image(h: int = 64, w: int = 96) -> torch.Tensor:
    return torch.full((3, h, w), 60, dtype=torch.uint8)


def _colours_in(picture: torch.Tensor) -> set:
    return {tuple(c) for c in picture.permute(1, 2, 0).reshape(-1, 3).unique(dim=0).tolist()}


def test_small_images_are_drawn_at_least_min_side_by_a_whole_factor():
    big, factor = upscale(_image(64, 96))
    assert factor == 8 and big.shape == (3, 512, 768)
    assert torch.equal(big[:, ::8, ::8], _image(64, 96))  # each pixel a sharp 8x8 square
    same, factor = upscale(_image(600, 700))
    assert factor == 1 and same.shape == (3, 600, 700)


def test_tags_never_overlap_and_stay_inside_the_image():
    picture = Image.new("RGB", (512, 512))
    font = label_font(512)
    boxes = [(100, 100, 200, 200)] * 4 + [(101, 102, 199, 201), (300, 0, 400, 60)]
    spots = place_labels(picture, boxes, [f"{i} 0.9{i}" for i in range(6)], palette(6), font)
    placed = [s for s in spots if s is not None]
    assert len(placed) == 5 and spots[4] is None  # four places around the box, then no room for a fifth tag
    for i, a in enumerate(placed):
        assert min(a[0], a[1]) >= 0 and max(a[2], a[3]) <= 512
        for b in placed[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    assert spots[5][1] == 0  # a box at the top edge gets its tag inside


def test_the_legend_is_a_band_at_the_right_and_grows_the_canvas_for_many_rows():
    picture = Image.new("RGB", (100, 50), (0, 0, 0))
    colours = palette(30)
    out = add_legend(picture, [(c, f"class {i}") for i, c in enumerate(colours)], label_font(100), title="t")
    assert out.width > 100 and out.height > 50
    band = to_tensor(out)[:, :, 100:]
    assert set(colours) <= _colours_in(band)


def test_detections_are_drawn_readable_in_class_colours_with_a_legend_of_what_was_found():
    output = {
        "boxes": torch.tensor([[10.0, 10.0, 30.0, 40.0], [12.0, 11.0, 31.0, 41.0], [60.0, 20.0, 90.0, 50.0]]),
        "scores": torch.tensor([0.9, 0.8, 0.3]),
        "labels": torch.tensor([3, 7, 5]),
    }
    drawn = draw_detections(_image(), output, CLASSES, label_offset=0, score_threshold=0.5)
    assert drawn.dtype == torch.uint8 and drawn.shape[1] == MIN_SIDE and drawn.shape[2] > 96 * 8
    colours = palette(10)
    image_part, band = drawn[:, :, : 96 * 8], drawn[:, :, 96 * 8 :]
    assert {colours[3], colours[7]} <= _colours_in(image_part) and colours[5] not in _colours_in(image_part)
    assert {colours[3], colours[7]} <= _colours_in(band) and colours[5] not in _colours_in(band)
    assert tuple(drawn[:, 10 * 8, 20 * 8].tolist()) == colours[3]  # the top edge of box 1, scaled 8x
    nothing = draw_detections(_image(), output, CLASSES, label_offset=0, score_threshold=0.95)
    assert not set(colours) & _colours_in(nothing)


def test_mask_rcnn_masks_are_scaled_with_the_image():
    masks = torch.zeros(1, 1, 64, 96)
    masks[0, 0, 40:60, 50:90] = 0.9
    output = {"boxes": torch.tensor([[50.0, 40.0, 90.0, 60.0]]), "scores": torch.tensor([0.9]),
              "labels": torch.tensor([2]), "masks": masks}  # fmt: skip
    drawn = draw_detections(_image(), output, CLASSES, label_offset=1, score_threshold=0.5)
    inside, outside = drawn[:, 50 * 8, 70 * 8], drawn[:, 20 * 8, 20 * 8]
    assert not torch.equal(inside, outside) and tuple(outside.tolist()) == (60, 60, 60)


def test_class_maps_are_drawn_readable_with_a_legend_and_the_background_left_undrawn():
    class_map = torch.zeros(64, 96, dtype=torch.long)
    class_map[:, 48:] = 4
    class_map[:10, :10] = 7
    names = ["background", *CLASSES]
    drawn = draw_classes(_image(), class_map, names, skip=[0])
    assert drawn.shape[1] == MIN_SIDE and drawn.shape[2] > 96 * 8
    image_part, band = drawn[:, :, : 96 * 8], drawn[:, :, 96 * 8 :]
    assert tuple(image_part[:, 300, 300].tolist()) == (60, 60, 60)  # background: not drawn
    assert tuple(image_part[:, 300, 600].tolist()) != (60, 60, 60)
    colours = palette(len(names))
    assert {colours[4], colours[7]} <= _colours_in(band) and colours[0] not in _colours_in(band)
