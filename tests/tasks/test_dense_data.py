"""Dense-prediction data: the digit scenes, the COCO and ADE20K readers with their bad-data handling, the
segmentation pipeline, and the metrics against pycocotools and a direct confusion matrix."""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fatvit.errors import FatvitError
from fatvit.tasks.detection.data import CocoDetection, collate_detection, detection_transform
from fatvit.tasks.detection.metrics import CocoEvaluator
from fatvit.tasks.scenes import SCENE_CLASSES, write_digit_scenes
from fatvit.tasks.segmentation.data import (
    ADE20KSegmentation,
    SegmentationTrainTransform,
    collate_segmentation,
    read_class_names,
)
from fatvit.tasks.segmentation.metrics import SegmentationMetrics, predict_logits


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_digit_scenes(tmp_path_factory.mktemp("scenes"), train=8, val=3, size=96)


def _quiet_coco(path):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_scenes_masks_boxes_and_semantic_maps_agree(scenes):
    coco = _quiet_coco(scenes / "coco/annotations/instances_train.json")
    assert [c["name"] for c in coco.loadCats(sorted(coco.cats))] == [str(d) for d in range(10)]
    kinds = set()
    for image_id in coco.getImgIds():
        info = coco.imgs[image_id]
        semantic = np.asarray(Image.open(scenes / "ade/annotations/training" / (info["file_name"][:-4] + ".png")))
        assert set(np.unique(semantic)) <= set(range(12))
        union = {}
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            kinds.add(type(ann["segmentation"]).__name__)
            mask = coco.annToMask(ann).astype(bool)
            ys, xs = np.nonzero(mask)
            x, y, w, h = ann["bbox"]
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
            assert ann["area"] == mask.sum()
            union[ann["category_id"]] = union.get(ann["category_id"], False) | mask
        for cat, mask in union.items():  # semantic class = category id + 1 (1 is the background)
            assert np.array_equal(semantic == cat + 1, mask)
    assert kinds == {"list", "dict"}  # polygons and RLE
    assert read_class_names(scenes / "ade") == SCENE_CLASSES


def _coco_file(tmp_path, annotations, images=None, categories=None, drop=()):
    """A COCO file of ``images`` (each written as an image file, at 8x8 where its entry has no valid size) and
    ``annotations``, without the top-level keys in ``drop``."""
    root = tmp_path / "imgs"
    root.mkdir(exist_ok=True)
    images = images or [dict(id=1, file_name="a.png", width=40, height=30), dict(id=2, file_name="b.png", width=40,
                                                                                  height=30)]  # fmt: skip
    for info in images:
        size = [info.get(k) for k in ("width", "height")]
        size = size if all(isinstance(v, int) and v > 0 for v in size) else [8, 8]
        if not (root / info["file_name"]).exists():
            Image.new("RGB", tuple(size), (90, 20, 20)).save(root / info["file_name"])
    path = tmp_path / "instances.json"
    cats = categories or [dict(id=3, name="three"), dict(id=7, name="seven")]
    data = dict(images=images, annotations=annotations, categories=cats)
    path.write_text(json.dumps({k: v for k, v in data.items() if k not in drop}))
    return root, path


def _ann(i, image_id, cat, box, **kw):
    return dict(id=i, image_id=image_id, category_id=cat, bbox=box, area=box[2] * box[3], iscrowd=0, **kw)


def test_coco_reader_labels_crowd_and_degenerate_boxes(tmp_path):
    anns = [
        _ann(1, 1, 7, [2, 3, 10, 8]),
        _ann(2, 1, 3, [30, 20, 20, 20]),  # runs past the image: clipped
        _ann(3, 1, 3, [5, 5, 0, 4]),  # zero width: dropped
        _ann(4, 1, 3, [50, 40, 5, 5]),  # wholly outside: dropped
        {**_ann(5, 1, 7, [0, 0, 40, 30]), "iscrowd": 1},
    ]
    root, path = _coco_file(tmp_path, anns)
    with pytest.warns(UserWarning, match="1 box.*clipped.*2 dropped"):
        train = CocoDetection(root, path, train=True)
    assert train.classes == ["three", "seven"] and train.cat_ids == [3, 7]
    assert (train.clipped_boxes, train.dropped_boxes, train.crowd_left_out) == (1, 2, 1)
    img, target = train[0]
    assert img.size == (40, 30)
    assert target["labels"].tolist() == [1, 0]  # category 7 -> index 1, 3 -> 0
    assert target["boxes"].tolist() == [[2, 3, 12, 11], [30, 20, 40, 30]]
    _, empty = train[1]  # an image without annotations: no targets
    assert empty["boxes"].shape == (0, 4) and len(empty["labels"]) == 0
    with pytest.warns(UserWarning):
        val = CocoDetection(root, path, train=False)
    assert len(val[0][1]["labels"]) == 3  # the crowd region stays in evaluation data


def test_coco_reader_masks_flip_with_the_image(tmp_path):
    poly = [[2.0, 3.0, 12.0, 3.0, 12.0, 11.0, 2.0, 11.0]]
    root, path = _coco_file(tmp_path, [_ann(1, 1, 3, [2, 3, 10, 8], segmentation=poly)])
    data = CocoDetection(root, path, masks=True)
    img, target = data[0]
    assert target["masks"].shape == (1, 30, 40) and target["masks"][0, 3:11, 2:12].all()
    flipped_img, flipped = detection_transform(True, hflip=1.0)(img, target)
    assert flipped_img.shape == (3, 30, 40) and flipped_img.dtype == torch.float32
    assert flipped["boxes"].tolist() == [[28, 3, 38, 11]]
    assert flipped["masks"][0, 3:11, 28:38].all() and flipped["masks"].sum() == 80


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a, i: a.append(_ann(9, 1, 5, [1, 1, 3, 3])), "category 5, not one of"),
        (lambda a, i: a.append(_ann(9, 8, 3, [1, 1, 3, 3])), "names image 8"),
        (lambda a, i: a.append({**_ann(9, 1, 3, [1, 1, 3, 3]), "bbox": [1, 1, 3]}), "no valid bbox"),
        (lambda a, i: a.append(_ann(9, 1, 3, [1, 1, 3, 3], segmentation=dict(size=[10, 10], counts="0"))),
         "mask is \\[10, 10\\]"),
        (lambda a, i: i.append(dict(id=5, file_name="missing.png", width=4, height=4)), "1 image\\(s\\) listed"),
    ],
)  # fmt: skip
def test_coco_reader_bad_files_are_one_clear_error(tmp_path, change, message):
    anns = [_ann(1, 1, 3, [1, 1, 5, 5])]
    images = [dict(id=1, file_name="a.png", width=40, height=30)]
    root, _ = _coco_file(tmp_path, [], images)
    change(anns, images)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(dict(images=images, annotations=anns, categories=[dict(id=3, name="three")])))
    with pytest.raises(FatvitError, match=message):
        CocoDetection(root, path)


def test_coco_reader_unreadable_and_missized_images(tmp_path):
    root, path = _coco_file(tmp_path, [_ann(1, 1, 3, [1, 1, 5, 5])])
    (root / "b.png").write_bytes(b"not an image")
    data = CocoDetection(root, path)
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        assert data[1] is None
    images, targets, skipped = collate_detection([data[0], None])
    assert len(images) == len(targets) == 1 and skipped == 1
    Image.new("RGB", (20, 20)).save(root / "a.png")
    with pytest.raises(FatvitError, match="is 20x20 but"):
        data[0]
    for text, message in (("{", "not a JSON file"), ('{"images": []}', "not a COCO instances file")):
        path.write_text(text)
        with pytest.raises(FatvitError, match=message):
            CocoDetection(root, path)


def _ade(tmp_path, labels, classes=None):
    for split in ("training", "validation"):
        (tmp_path / "images" / split).mkdir(parents=True, exist_ok=True)
        (tmp_path / "annotations" / split).mkdir(parents=True, exist_ok=True)
    for i, label in enumerate(labels):
        Image.new("RGB", (label.shape[1], label.shape[0]), (10, 200, 30)).save(tmp_path / f"images/training/{i}.jpg")
        Image.fromarray(label.astype(np.uint8)).save(tmp_path / f"annotations/training/{i}.png")
    if classes:
        (tmp_path / "classes.txt").write_text("\n".join(classes) + "\n")
    return tmp_path


def test_ade20k_reader_reduces_zero_label_and_checks_values(tmp_path):
    label = np.array([[0, 1, 2], [3, 255, 1]])
    root = _ade(tmp_path, [label], ["a", "b", "c"])
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


def test_coco_evaluator_matches_cocoeval_on_the_same_detections(scenes):
    gt_path = scenes / "coco/annotations/instances_val.json"
    gt = _quiet_coco(gt_path)
    data = json.loads(gt_path.read_text())
    # a crowd region in the ground truth: COCOeval ignores detections on it, as it must here too
    crowd = dict(data["annotations"][0], id=999, iscrowd=1)
    data["annotations"].append(crowd)
    gt.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    cat_ids = sorted(gt.cats)
    rng = np.random.default_rng(0)
    outputs, records = {}, []
    for image_id in gt.getImgIds():
        boxes, labels, scores, masks = [], [], [], []
        for ann in gt.imgToAnns[image_id]:
            x, y, w, h = ann["bbox"]
            jitter = rng.uniform(-3, 3, 4)
            boxes.append([x + jitter[0], y + jitter[1], x + w + jitter[2], y + h + jitter[3]])
            labels.append(cat_ids.index(ann["category_id"]) if rng.random() < 0.7 else int(rng.integers(10)))
            scores.append(float(rng.uniform(0.3, 1.0)))
            masks.append(torch.from_numpy(gt.annToMask(ann)).float()[None] * 0.9)
        offset = 1
        out = dict(
            boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            labels=torch.tensor(labels) + offset,
            scores=torch.tensor(scores),
            masks=torch.stack(masks),
        )
        outputs[image_id] = out  # fmt: skip
        for box, label, score, mask in zip(boxes, labels, scores, masks):
            from pycocotools import mask as mask_utils

            rle = mask_utils.encode(np.asfortranarray((mask[0] > 0.5).numpy().astype(np.uint8)))
            records.append(dict(image_id=image_id, category_id=cat_ids[label], score=score,
                                bbox=[box[0], box[1], box[2] - box[0], box[3] - box[1]], segmentation=rle))  # fmt: skip
    evaluator = CocoEvaluator(gt, cat_ids, 1, ("bbox", "segm"))
    evaluator.update(list(outputs), list(outputs.values()))
    ours = evaluator.compute()
    for iou_type in ("bbox", "segm"):
        with contextlib.redirect_stdout(io.StringIO()):
            direct = COCOeval(gt, gt.loadRes([dict(r) for r in records]), iou_type)
            direct.evaluate()
            direct.accumulate()
            direct.summarize()
        for name, value in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), direct.stats):
            got = ours[f"{iou_type}_{name}"]
            assert (math.isnan(got) and value == -1) or got == pytest.approx(value, abs=2e-3), (iou_type, name)
    assert 0.1 < ours["bbox_AP"] < 1.0 and "Average Precision" in evaluator.text
    empty = CocoEvaluator(gt, cat_ids, 1, ("bbox",))
    assert empty.compute()["bbox_AP"] == 0.0


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


# ----- hardening, round two: what the readers refuse, warn about or report the same way everywhere -----


IMAGE = dict(id=1, file_name="a.png", width=40, height=30)


@pytest.mark.parametrize("missing", ["width", "height"])
def test_coco_image_without_width_or_height_is_an_error(tmp_path, missing):
    image = {k: v for k, v in IMAGE.items() if k != missing}
    root, path = _coco_file(tmp_path, [_ann(1, 1, 3, [1, 1, 5, 5])], [image])
    with pytest.raises(FatvitError, match=f"image 1 has no valid '{missing}' \\(a positive integer\\): None"):
        CocoDetection(root, path)
    bad = {**IMAGE, missing: "40"}
    root, path = _coco_file(tmp_path, [_ann(1, 1, 3, [1, 1, 5, 5])], [bad])
    with pytest.raises(FatvitError, match=f"no valid '{missing}'.*'40'"):
        CocoDetection(root, path)


@pytest.mark.parametrize(
    "polygon, message",
    [
        ([1.0, 1.0], "a polygon of 2 number"),
        ([1.0, 1.0, 5.0, 5.0], "a polygon of 4 number"),
        ([1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 2.0], "a polygon of 7 number"),
        ([1.0, 1.0, 5.0, float("nan"), 5.0, 5.0], "a polygon that is not a list of finite numbers"),
        ([1.0, 1.0, 5.0, True, 5.0, 5.0], "a polygon that is not a list of finite numbers"),
    ],
)
@pytest.mark.parametrize("train", [True, False], ids=["train", "val"])
def test_coco_bad_polygons_are_refused_when_read(tmp_path, polygon, message, train):
    """In a training set (before a step runs) and in a val set (before the model runs on every image)."""
    root, path = _coco_file(tmp_path, [_ann(7, 1, 3, [1, 1, 5, 5], segmentation=[polygon])], [IMAGE])
    with pytest.raises(FatvitError, match=f"annotation 7 has {message}"):
        CocoDetection(root, path, train=train, masks=train)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), True, "3", None])
def test_coco_non_finite_or_non_numeric_box_values_are_an_error(tmp_path, value):
    root, path = _coco_file(tmp_path, [_ann(1, 1, 3, [1, 1, 5, 5]), _ann(2, 1, 3, [2, value, 4, 4])], [IMAGE])
    with pytest.raises(FatvitError) as err:
        CocoDetection(root, path)
    message = str(err.value)
    assert f"{path}: annotation 2 has no valid bbox" in message and repr(value) in message


def test_coco_duplicate_image_or_annotation_ids_are_refused(tmp_path):
    two = [IMAGE, dict(id=1, file_name="b.png", width=40, height=30)]
    root, path = _coco_file(tmp_path, [_ann(1, 1, 3, [1, 1, 5, 5])], two)
    with pytest.raises(FatvitError, match="1 image id\\(s\\) used more than once: 1$"):
        CocoDetection(root, path)
    anns = [
        _ann(4, 1, 3, [1, 1, 5, 5]),
        _ann(4, 1, 3, [2, 2, 5, 5]),
        _ann(9, 1, 3, [1, 1, 3, 3]),
        _ann(9, 1, 3, [3, 3, 3, 3]),
    ]
    root, path = _coco_file(tmp_path, anns, [IMAGE])
    with pytest.raises(FatvitError, match="2 annotation id\\(s\\) used more than once: 4, 9$"):
        CocoDetection(root, path)


@pytest.mark.parametrize(
    "annotations, drop, why",
    [
        ([], ("annotations",), "it has no annotations"),
        (
            [{**_ann(1, 1, 3, [1, 1, 5, 5]), "iscrowd": 1}],
            (),
            "its 1 annotation\\(s\\) are 1 crowd region\\(s\\) and 0 box",
        ),
        (
            [_ann(1, 1, 3, [50, 50, 5, 5])],
            (),
            "its 1 annotation\\(s\\) are 0 crowd region\\(s\\) and 1 box\\(es\\) under 1 px or with nothing inside",
        ),
    ],
    ids=["no-annotations-key", "only-crowd", "all-outside"],
)
def test_coco_split_without_a_usable_box_is_refused_for_training_and_warned_for_val(tmp_path, annotations, drop, why):
    root, path = _coco_file(tmp_path, annotations, [IMAGE], drop=drop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dropped-box warning of the third case
        with pytest.raises(FatvitError, match=f"has no box to train on: {why}"):
            CocoDetection(root, path, train=True)
    with pytest.warns(UserWarning, match=f"has no box to evaluate against: {why}"):
        assert len(CocoDetection(root, path, train=False)) == 1


def test_mask_rcnn_data_needs_a_segmentation_per_box(tmp_path):
    root, path = _coco_file(tmp_path, [_ann(5, 1, 3, [1, 1, 5, 5])], [IMAGE])
    with pytest.raises(FatvitError, match="annotation 5 has no segmentation"):
        CocoDetection(root, path, masks=True)
    assert len(CocoDetection(root, path)) == 1  # boxes only: no masks needed


def _loader_error(dataset, transform, collate, workers):
    from fatvit.data import ResumableSampler, SeededDataset, make_loader

    loader = make_loader(SeededDataset(dataset, transform, 0, joint=True),
                         ResumableSampler(len(dataset), shuffle=False, pad=False), 1, workers, drop_last=False,
                         collate_fn=collate)  # fmt: skip
    with pytest.raises(FatvitError) as err:
        list(loader)
    return type(err.value), str(err.value)


def test_loader_worker_data_errors_are_the_same_one_line(tmp_path):
    """A data error in a loader worker reaches the caller as the same FatvitError, not PyTorch's traceback."""
    from fatvit.tasks.segmentation.data import SegmentationEvalTransform

    root, path = _coco_file(tmp_path, [_ann(1, 1, 3, [1, 1, 5, 5])])
    Image.new("RGB", (20, 20)).save(root / "a.png")  # the JSON says 40x30
    coco = CocoDetection(root, path)
    plain = _loader_error(coco, detection_transform(False), collate_detection, 0)
    assert plain == _loader_error(coco, detection_transform(False), collate_detection, 1)
    assert plain[1] == f"{root / 'a.png'} is 20x20 but {path} says 40x30"
    ade = _ade(tmp_path / "ade", [np.zeros((4, 6))], ["a"])
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(ade / "annotations/training/0.png")
    seg = ADE20KSegmentation(ade, "train", 1)
    transform = SegmentationEvalTransform([8, 8], (0.5,) * 3, (0.25,) * 3)
    plain = _loader_error(seg, transform, collate_segmentation, 0)
    assert plain == _loader_error(seg, transform, collate_segmentation, 1)
    assert "\n" not in plain[1] and "is 5x5 but its image" in plain[1]


@pytest.mark.parametrize("text, message", [("", "names no classes"), ("\n\n", "names no classes"),
                                           ("a\n\nb\n", "line 2 is blank"), (" \nb\n", "line 1 is blank")])  # fmt: skip
def test_class_file_empty_or_with_a_blank_line_is_an_error(tmp_path, text, message):
    (tmp_path / "classes.txt").write_text(text)
    with pytest.raises(FatvitError, match=message):
        read_class_names(tmp_path)
    (tmp_path / "classes.txt").write_text("a\nb\n\n")  # blank lines at the end are no classes
    assert read_class_names(tmp_path) == ["a", "b"]


def test_ade20k_images_sharing_a_stem_are_refused(tmp_path):
    root = _ade(tmp_path, [np.zeros((4, 6))], ["a"])
    Image.new("RGB", (6, 4)).save(root / "images/training/0.png")  # beside 0.jpg: one label map for both
    with pytest.raises(FatvitError, match="0.jpg and 0.png in .* share the stem '0'"):
        ADE20KSegmentation(root, "train", 1)


def test_coco_training_leaves_out_images_without_annotations_and_boxes_under_one_pixel(tmp_path):
    images = [
        dict(id=1, file_name="a.png", width=48, height=40),
        dict(id=2, file_name="b.png", width=48, height=40),  # no annotations
        dict(id=3, file_name="c.png", width=20, height=40),  # shorter side under 32
        dict(id=4, file_name="d.png", width=36, height=44),  # a crowd region only: kept, as mmdet keeps it
    ]
    anns = [
        _ann(1, 1, 3, [2, 3, 10, 8]),
        _ann(2, 1, 3, [5, 5, 0.9, 4]),  # under 1 px wide: dropped
        _ann(3, 1, 3, [5, 5, 4, 0.5]),  # under 1 px high: dropped
        _ann(4, 1, 7, [20, 10, 1, 1]),  # 1 x 1: kept
        {**_ann(5, 1, 7, [8, 8, 4, 4]), "area": 0},  # no area: dropped
        _ann(6, 3, 3, [1, 1, 10, 10]),
        {**_ann(7, 4, 7, [0, 0, 10, 10]), "iscrowd": 1},
    ]
    root, path = _coco_file(tmp_path, anns, images)
    with pytest.warns(UserWarning, match="0 box.*clipped.*3 dropped \\(under 1 px wide or high, of no area"):
        train = CocoDetection(root, path, train=True, filter_empty_gt=True, min_image_side=32)
    assert train.ids == [1, 4] and train.images_left_out == 2 and len(train) == 2
    assert train[0][1]["boxes"].tolist() == [[2, 3, 12, 11], [20, 10, 21, 11]]
    assert train.aspect_groups() == [1, 0]  # 48x40 landscape, 36x44 portrait
    with pytest.warns(UserWarning):
        val = CocoDetection(root, path, train=False)  # evaluation keeps every image
    assert val.ids == [1, 2, 3, 4] and val.images_left_out == 0
    assert val.aspect_groups() == [1, 1, 0, 0]


def test_aspect_ratio_groups_give_one_group_per_batch_on_every_replica_and_resume():
    from fatvit.data import ResumableSampler

    groups = [i % 3 == 0 for i in range(50)]  # 17 of one group, 33 of the other
    batch, world = 4, 2
    shares = []
    for rank in range(world):
        sampler = ResumableSampler(50, True, seed=3, num_replicas=world, rank=rank, groups=groups, batch_size=batch)
        sampler.set_epoch(2)
        share = list(sampler)
        assert len(share) == len(sampler) == 25
        shares.append(share)
        resumed = ResumableSampler(50, True, seed=3, num_replicas=world, rank=rank, groups=groups, batch_size=batch)
        resumed.set_epoch(2, start=8)
        assert list(resumed) == share[8:]
    full_batches = sum(len(share) // batch for share in shares[:1])
    mixed = 0
    for b in range(full_batches):
        batches = [share[b * batch : (b + 1) * batch] for share in shares]
        kinds = {groups[i] for step in batches for i in step}  # the replicas' batches of one step: one group
        mixed += len(kinds) > 1
    assert mixed <= 1  # only the epoch's last, from what is left in the buckets
    plain = ResumableSampler(50, True, seed=3, num_replicas=world, rank=0)
    plain.set_epoch(2)
    ungrouped = list(plain)
    assert sorted(shares[0] + shares[1]) == list(range(50))  # each sample once (no padding needed)
    assert sum(len({groups[i] for i in ungrouped[b : b + batch]}) > 1 for b in range(0, 24, batch)) >= 2


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
