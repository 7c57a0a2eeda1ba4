"""The ADE20K reader and class files, the mmseg training pipeline (crops, photometric distortion, resizing),
the loss, sliding-window inference, and the metrics against a direct confusion matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ade_folder
from fatvit.errors import FatvitError
from fatvit.tasks.segmentation.data import (
    ADE20KSegmentation,
    SegmentationTrainTransform,
    collate_segmentation,
    read_class_names,
)
from fatvit.tasks.segmentation.metrics import SegmentationMetrics, predict_logits


def test_ade20k_reader_reduces_zero_label_and_checks_values(tmp_path):
    label = np.array([[0, 1, 2], [3, 255, 1]])
    root = ade_folder(tmp_path, [label], ["a", "b", "c"])
    data = ADE20KSegmentation(root, "train", num_classes=3)
    img, target = data[0]
    assert img.size == (3, 2)
    assert target.tolist() == [[255, 0, 1], [2, 255, 0]]
    assert ADE20KSegmentation(root, "train", 4, reduce_zero_label=False)[0][1].tolist() == label.tolist()
    with pytest.raises(FatvitError, match="holds label 3, above the 2 classes"):
        ADE20KSegmentation(root, "train", num_classes=2)[0]
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "annotations/training/0.png")
    with pytest.raises(FatvitError, match="is 5x5 but its image"):
        data[0]
    (root / "annotations/training/0.png").unlink()
    with pytest.raises(FatvitError, match="have no annotation PNG"):
        ADE20KSegmentation(root, "train", 3)
    with pytest.raises(FatvitError, match="not found"):
        ADE20KSegmentation(tmp_path / "nowhere", "train", 3)


def test_ade20k_images_sharing_a_stem_are_refused(tmp_path):
    root = ade_folder(tmp_path, [np.zeros((4, 6))], ["a"])
    Image.new("RGB", (6, 4)).save(root / "images/training/0.png")  # beside 0.jpg: one label map for both
    with pytest.raises(FatvitError, match="0.jpg and 0.png in .* share the stem '0'"):
        ADE20KSegmentation(root, "train", 1)


@pytest.mark.parametrize("text, message", [("", "names no classes"), ("\n\n", "names no classes"),
                                           ("a\n\nb\n", "line 2 is blank"), (" \nb\n", "line 1 is blank")])  # fmt: skip
def test_class_file_empty_or_with_a_blank_line_is_an_error(tmp_path, text, message):
    (tmp_path / "classes.txt").write_text(text)
    with pytest.raises(FatvitError, match=message):
        read_class_names(tmp_path)
    (tmp_path / "classes.txt").write_text("a\nb\n\n")  # blank lines at the end are no classes
    assert read_class_names(tmp_path) == ["a", "b"]


def test_segmentation_train_pipeline_crops_pads_and_keeps_labels(tmp_path):
    label = np.zeros((40, 60), np.int64)
    label[10:30, 20:50] = 2
    label[0:5] = 255
    img = Image.fromarray(np.full((40, 60, 3), 128, np.uint8))
    tf = SegmentationTrainTransform([60, 40], [1.0, 1.0], 32, 0.75, 0.5, True, (0.5,) * 3, (0.25,) * 3)
    torch.manual_seed(0)
    import random

    random.seed(0)
    image, target = tf(img, label)
    assert image.shape == (3, 32, 32) and target.shape == (32, 32) and target.dtype == torch.int64
    assert set(target.unique().tolist()) <= {0, 2, 255}
    small = SegmentationTrainTransform([30, 20], [1.0, 1.0], 32, 1.0, 0.0, False, (0.5,) * 3, (0.25,) * 3)
    image, target = small(img, label)  # resized to 30x20, padded to 32 with label 255 and pixel 0
    assert (target[20:] == 255).all() and (target[:, 30:] == 255).all() and (image[:, 20:] == 0).all()
    batch = collate_segmentation([(image, target), None, (image, target)])
    assert batch[0].shape == (2, 3, 32, 32) and batch[2] == 1


def _distortion_with(monkeypatch, coins, uniforms=(), ints=()):
    """The photometric distortion with its random draws fixed: ``coins`` for random.random, in call order."""
    import fatvit.tasks.segmentation.data as seg_data

    draws = dict(random=iter(coins), uniform=iter(uniforms), randint=iter(ints))
    monkeypatch.setattr(seg_data.random, "random", lambda: next(draws["random"]))
    monkeypatch.setattr(seg_data.random, "uniform", lambda a, b: next(draws["uniform"]))
    monkeypatch.setattr(seg_data.random, "randint", lambda a, b: (a, b, next(draws["randint"]))[2])
    return SegmentationTrainTransform([64, 64], [1, 1], 32, 1.0, 0.0, True, (0, 0, 0), (1, 1, 1))


def test_photometric_hue_shift_is_in_opencv_units(monkeypatch):
    red = torch.zeros(3, 4, 4, dtype=torch.uint8)
    red[0] = 255
    # brightness off, contrast last (off), saturation off, hue on: +18 OpenCV units = +36 degrees
    t = _distortion_with(monkeypatch, coins=[0.9, 0.9, 0.9, 0.1, 0.9], ints=[18])
    out = t._distort(red)
    assert out[:, 0, 0].tolist() == [255, 153, 0]  # hue 36 degrees: green at 36/60 of full


def test_photometric_brightness_is_clipped_before_contrast(monkeypatch):
    img = torch.full((3, 2, 2), 250, dtype=torch.uint8)
    # brightness +30 on, contrast first and on (x0.5), saturation and hue off
    t = _distortion_with(monkeypatch, coins=[0.1, 0.1, 0.1, 0.9, 0.9], uniforms=[30.0, 0.5])
    assert t._distort(img).unique().tolist() == [127]  # 255 * 0.5, truncated as mmseg's uint8 conversion


def test_segmentation_images_resize_as_opencv_bilinear_without_antialiasing():
    from torchvision.transforms.v2.functional import to_pil_image

    from fatvit.tasks.segmentation.data import SegmentationEvalTransform, resize_image

    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    plain = torch.nn.functional.interpolate(image[None].float(), size=(16, 24), mode="bilinear", align_corners=False)
    smooth = torch.nn.functional.interpolate(
        image[None].float(), size=(16, 24), mode="bilinear", align_corners=False, antialias=True
    )
    ours = resize_image(image, (16, 24)).float()
    assert (ours - plain[0]).abs().max() <= 1.0  # uint8 rounding
    assert (ours - smooth[0]).abs().max() > 20
    pixels, _ = SegmentationEvalTransform([24, 16], (0, 0, 0), (1, 1, 1))(to_pil_image(image), None)
    torch.testing.assert_close(pixels * 255, ours, atol=1e-3, rtol=0)


def test_segmentation_cross_entropy_divides_by_every_pixel_as_mmseg():
    from fatvit.tasks.segmentation.task import pixel_cross_entropy

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, 4)
    labels = torch.randint(0, 5, (2, 4, 4))
    labels[0, :2] = 255  # a quarter of the pixels ignored
    per_pixel = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    torch.testing.assert_close(pixel_cross_entropy(logits, labels), per_pixel.sum() / 32)
    torch.testing.assert_close(
        pixel_cross_entropy(logits, labels, avg_non_ignore=True),
        torch.nn.functional.cross_entropy(logits, labels, ignore_index=255),
    )


def test_sliding_window_inference_averages_the_windows():
    conv = torch.nn.Conv2d(3, 4, 1)  # per pixel: every window gives the same scores where windows overlap
    image = torch.rand(1, 3, 50, 70)
    whole = predict_logits(conv, image, 4, "whole")
    slide = predict_logits(conv, image, 4, "slide", crop=32, stride=20)
    assert torch.allclose(whole, slide, atol=1e-6)
    calls = []
    conv.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape[-2:])))
    predict_logits(conv, image, 4, "slide", crop=32, stride=20)
    assert len(calls) == 2 * 3 and set(calls) == {(32, 32)}  # windows end at the edges, all full-sized


def test_segmentation_metrics_match_a_direct_confusion_matrix():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, size=(3, 20, 20))
    target[:, :3] = 255  # ignored
    target[target == 3] = 0  # class 3 never appears in the labels ...
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 5, size=target.shape))
    pred[pred == 255] = 1
    pred[pred == 4] = 2
    metrics = SegmentationMetrics(5)  # ... and class 4 in neither: left out of mIoU
    for p, t in zip(pred, target):
        metrics.update(torch.from_numpy(p), torch.from_numpy(t))
    got = metrics.compute()
    keep = target != 255
    cm = np.zeros((5, 5))
    np.add.at(cm, (target[keep], pred[keep]), 1)
    hits, union = np.diag(cm), cm.sum(0) + cm.sum(1) - np.diag(cm)
    iou = [h / u if u else float("nan") for h, u in zip(hits, union)]
    assert got["per_class_iou"][:4] == pytest.approx(iou[:4]) and math.isnan(got["per_class_iou"][4])
    assert got["mIoU"] == pytest.approx(np.nanmean(iou))
    acc = [h / t for h, t in zip(hits, cm.sum(1)) if t]
    assert got["mAcc"] == pytest.approx(np.mean(acc)) and got["aAcc"] == pytest.approx(hits.sum() / keep.sum())
