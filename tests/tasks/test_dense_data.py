"""Data shared by the dense tasks: the digit scenes, and data errors raised in loader workers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import ade_folder, coco_ann, coco_file, quiet_coco
from fatvit.errors import FatvitError
from fatvit.tasks.detection.data import CocoDetection, collate_detection, detection_transform
from fatvit.tasks.scenes import SCENE_CLASSES
from fatvit.tasks.segmentation.data import ADE20KSegmentation, collate_segmentation, read_class_names


def test_scenes_masks_boxes_and_semantic_maps_agree(scenes):
    coco = quiet_coco(scenes / "coco/annotations/instances_train.json")
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

    root, path = coco_file(tmp_path, [coco_ann(1, 1, 3, [1, 1, 5, 5])])
    Image.new("RGB", (20, 20)).save(root / "a.png")  # the JSON says 40x30
    coco = CocoDetection(root, path)
    plain = _loader_error(coco, detection_transform(False), collate_detection, 0)
    assert plain == _loader_error(coco, detection_transform(False), collate_detection, 1)
    assert plain[1] == f"{root / 'a.png'} is 20x20 but {path} says 40x30"
    ade = ade_folder(tmp_path / "ade", [np.zeros((4, 6))], ["a"])
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(ade / "annotations/training/0.png")
    seg = ADE20KSegmentation(ade, "train", 1)
    transform = SegmentationEvalTransform([8, 8], (0.5,) * 3, (0.25,) * 3)
    plain = _loader_error(seg, transform, collate_segmentation, 0)
    assert plain == _loader_error(seg, transform, collate_segmentation, 1)
    assert "\n" not in plain[1] and "is 5x5 but its image" in plain[1]
