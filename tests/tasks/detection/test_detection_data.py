"""The COCO reader (labels, crowds, masks, and the bad data it refuses or warns about), the training set's
aspect-ratio groups, and the COCO evaluator against pycocotools."""

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
from pycocotools.cocoeval import COCOeval

from conftest import coco_ann, coco_file, quiet_coco
from fatvit.errors import FatvitError
from fatvit.tasks.detection.data import CocoDetection, collate_detection, detection_transform
from fatvit.tasks.detection.metrics import CocoEvaluator

IMAGE = dict(id=1, file_name="a.png", width=40, height=30)


def test_coco_reader_labels_crowd_and_degenerate_boxes(tmp_path):
    anns = [
        coco_ann(1, 1, 7, [2, 3, 10, 8]),
        coco_ann(2, 1, 3, [30, 20, 20, 20]),  # runs past the image: clipped
        coco_ann(3, 1, 3, [5, 5, 0, 4]),  # zero width: dropped
        coco_ann(4, 1, 3, [50, 40, 5, 5]),  # wholly outside: dropped
        {**coco_ann(5, 1, 7, [0, 0, 40, 30]), "iscrowd": 1},
    ]
    root, path = coco_file(tmp_path, anns)
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
    root, path = coco_file(tmp_path, [coco_ann(1, 1, 3, [2, 3, 10, 8], segmentation=poly)])
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
        (lambda a, i: a.append(coco_ann(9, 1, 5, [1, 1, 3, 3])), "category 5, not one of"),
        (lambda a, i: a.append(coco_ann(9, 8, 3, [1, 1, 3, 3])), "names image 8"),
        (lambda a, i: a.append({**coco_ann(9, 1, 3, [1, 1, 3, 3]), "bbox": [1, 1, 3]}), "no valid bbox"),
        (lambda a, i: a.append(coco_ann(9, 1, 3, [1, 1, 3, 3], segmentation=dict(size=[10, 10], counts="0"))),
         "mask is \\[10, 10\\]"),
        (lambda a, i: i.append(dict(id=5, file_name="missing.png", width=4, height=4)), "1 image\\(s\\) listed"),
    ],
)  # fmt: skip
def test_coco_reader_bad_files_are_one_clear_error(tmp_path, change, message):
    anns = [coco_ann(1, 1, 3, [1, 1, 5, 5])]
    images = [dict(id=1, file_name="a.png", width=40, height=30)]
    root, _ = coco_file(tmp_path, [], images)
    change(anns, images)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(dict(images=images, annotations=anns, categories=[dict(id=3, name="three")])))
    with pytest.raises(FatvitError, match=message):
        CocoDetection(root, path)


def test_coco_reader_unreadable_and_missized_images(tmp_path):
    root, path = coco_file(tmp_path, [coco_ann(1, 1, 3, [1, 1, 5, 5])])
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


@pytest.mark.parametrize("missing", ["width", "height"])
def test_coco_image_without_width_or_height_is_an_error(tmp_path, missing):
    image = {k: v for k, v in IMAGE.items() if k != missing}
    root, path = coco_file(tmp_path, [coco_ann(1, 1, 3, [1, 1, 5, 5])], [image])
    with pytest.raises(FatvitError, match=f"image 1 has no valid '{missing}' \\(a positive integer\\): None"):
        CocoDetection(root, path)
    bad = {**IMAGE, missing: "40"}
    root, path = coco_file(tmp_path, [coco_ann(1, 1, 3, [1, 1, 5, 5])], [bad])
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
    root, path = coco_file(tmp_path, [coco_ann(7, 1, 3, [1, 1, 5, 5], segmentation=[polygon])], [IMAGE])
    with pytest.raises(FatvitError, match=f"annotation 7 has {message}"):
        CocoDetection(root, path, train=train, masks=train)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), True, "3", None])
def test_coco_non_finite_or_non_numeric_box_values_are_an_error(tmp_path, value):
    root, path = coco_file(tmp_path, [coco_ann(1, 1, 3, [1, 1, 5, 5]), coco_ann(2, 1, 3, [2, value, 4, 4])], [IMAGE])
    with pytest.raises(FatvitError) as err:
        CocoDetection(root, path)
    message = str(err.value)
    assert f"{path}: annotation 2 has no valid bbox" in message and repr(value) in message


def test_coco_duplicate_image_or_annotation_ids_are_refused(tmp_path):
    two = [IMAGE, dict(id=1, file_name="b.png", width=40, height=30)]
    root, path = coco_file(tmp_path, [coco_ann(1, 1, 3, [1, 1, 5, 5])], two)
    with pytest.raises(FatvitError, match="1 image id\\(s\\) used more than once: 1$"):
        CocoDetection(root, path)
    anns = [
        coco_ann(4, 1, 3, [1, 1, 5, 5]),
        coco_ann(4, 1, 3, [2, 2, 5, 5]),
        coco_ann(9, 1, 3, [1, 1, 3, 3]),
        coco_ann(9, 1, 3, [3, 3, 3, 3]),
    ]
    root, path = coco_file(tmp_path, anns, [IMAGE])
    with pytest.raises(FatvitError, match="2 annotation id\\(s\\) used more than once: 4, 9$"):
        CocoDetection(root, path)


@pytest.mark.parametrize(
    "annotations, drop, why",
    [
        ([], ("annotations",), "it has no annotations"),
        (
            [{**coco_ann(1, 1, 3, [1, 1, 5, 5]), "iscrowd": 1}],
            (),
            "its 1 annotation\\(s\\) are 1 crowd region\\(s\\) and 0 box",
        ),
        (
            [coco_ann(1, 1, 3, [50, 50, 5, 5])],
            (),
            "its 1 annotation\\(s\\) are 0 crowd region\\(s\\) and 1 box\\(es\\) under 1 px or with nothing inside",
        ),
    ],
    ids=["no-annotations-key", "only-crowd", "all-outside"],
)
def test_coco_split_without_a_usable_box_is_refused_for_training_and_warned_for_val(tmp_path, annotations, drop, why):
    root, path = coco_file(tmp_path, annotations, [IMAGE], drop=drop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dropped-box warning of the third case
        with pytest.raises(FatvitError, match=f"has no box to train on: {why}"):
            CocoDetection(root, path, train=True)
    with pytest.warns(UserWarning, match=f"has no box to evaluate against: {why}"):
        assert len(CocoDetection(root, path, train=False)) == 1


def test_mask_rcnn_data_needs_a_segmentation_per_box(tmp_path):
    root, path = coco_file(tmp_path, [coco_ann(5, 1, 3, [1, 1, 5, 5])], [IMAGE])
    with pytest.raises(FatvitError, match="annotation 5 has no segmentation"):
        CocoDetection(root, path, masks=True)
    assert len(CocoDetection(root, path)) == 1  # boxes only: no masks needed


def test_coco_training_leaves_out_images_without_annotations_and_boxes_under_one_pixel(tmp_path):
    images = [
        dict(id=1, file_name="a.png", width=48, height=40),
        dict(id=2, file_name="b.png", width=48, height=40),  # no annotations
        dict(id=3, file_name="c.png", width=20, height=40),  # shorter side under 32
        dict(id=4, file_name="d.png", width=36, height=44),  # a crowd region only: kept, as mmdet keeps it
    ]
    anns = [
        coco_ann(1, 1, 3, [2, 3, 10, 8]),
        coco_ann(2, 1, 3, [5, 5, 0.9, 4]),  # under 1 px wide: dropped
        coco_ann(3, 1, 3, [5, 5, 4, 0.5]),  # under 1 px high: dropped
        coco_ann(4, 1, 7, [20, 10, 1, 1]),  # 1 x 1: kept
        {**coco_ann(5, 1, 7, [8, 8, 4, 4]), "area": 0},  # no area: dropped
        coco_ann(6, 3, 3, [1, 1, 10, 10]),
        {**coco_ann(7, 4, 7, [0, 0, 10, 10]), "iscrowd": 1},
    ]
    root, path = coco_file(tmp_path, anns, images)
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


def test_coco_evaluator_matches_cocoeval_on_the_same_detections(scenes):
    gt_path = scenes / "coco/annotations/instances_val.json"
    gt = quiet_coco(gt_path)
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
