"""COCO detection data: an images folder and an instances JSON, read with pycocotools.

:class:`CocoDetection` checks the file once, when it is opened:

- a JSON that is not COCO; an image entry without a positive integer
  ``width`` and ``height`` or a ``file_name``; duplicate image or annotation
  ids; an annotation naming an unknown category or image; a bbox that is not
  4 finite numbers (NaN, infinity, booleans and strings included); a polygon
  of fewer than 3 points, of an odd count of numbers or with a non-finite
  one; a mask whose RLE size is not its image's: one :class:`FatvitError`
  naming the file, the id and the value, before any training or evaluation;
- image files that do not exist: one error naming the first and the count;
- boxes under 1 px wide or high, of no area, or with nothing inside the
  image are dropped, as mmdet's ``CocoDataset`` drops them; the others are
  clipped to their image (as torchvision's references; mmdet keeps them
  unclipped): counted in ``clipped_boxes`` and ``dropped_boxes`` and
  reported in one warning;
- crowd annotations (``iscrowd=1``) are left out of training targets
  (COCOeval reads them from the file in evaluation);
- with ``filter_empty_gt`` (training, as mmdet's ``filter_cfg``) images
  without annotations and images whose shorter side is under
  ``min_image_side`` are left out (counted in ``images_left_out``); otherwise
  they are kept (no targets: only background). A training split with no
  usable box at all (no annotations, only crowd ones, or all dropped) is an
  error; an evaluation split without one is a warning.

A sample is ``(PIL image, target)`` with ``boxes`` (x1, y1, x2, y2 in
pixels), ``labels`` (class index, 0-based, in the order of the sorted
category ids), ``masks`` (``uint8``, one per box) when asked for, and
``image_id``. An unreadable image file gives ``None`` (counted and skipped
by :func:`collate_detection`).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ...data import load_rgb
from ...errors import FatvitError

__all__ = ["CocoDetection", "detection_transform", "collate_detection", "open_coco"]


def open_coco(annotations: str | Path) -> Any:
    """A pycocotools ``COCO`` of an instances JSON, its errors turned into one :class:`FatvitError`."""
    from pycocotools.coco import COCO

    path = Path(annotations)
    if not path.is_file():
        raise FatvitError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FatvitError(f"cannot read {path}: not a JSON file ({err})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise FatvitError(f"{path} is not a COCO instances file (it needs 'images' and 'categories' lists)")
    data.setdefault("annotations", [])
    if not isinstance(data["annotations"], list):
        raise FatvitError(f"{path} is not a COCO instances file: 'annotations' is not a list")
    _check_entries(data, path)
    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
    except (KeyError, TypeError) as err:
        raise FatvitError(f"{path} is not a COCO instances file: an entry lacks {err}") from None
    return coco


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool, which is an int to Python)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _duplicates(values: Sequence[Any]) -> List[Any]:
    return sorted((v for v, n in Counter(values).items() if n > 1), key=repr)


def _check_entries(data: Dict[str, Any], path: Path) -> None:
    """The image entries and the ids of a COCO file, before pycocotools indexes them (it keeps the last of
    duplicate ids and reads sizes only when asked)."""
    for kind, entries in (("image", data["images"]), ("annotation", data["annotations"])):
        for entry in entries:
            ident = entry.get("id") if isinstance(entry, dict) else None
            if not isinstance(ident, (int, str)) or isinstance(ident, bool):
                raise FatvitError(f"{path}: an {kind} has no valid 'id' (an integer): {str(entry)[:80]}")
        repeated = _duplicates([e["id"] for e in entries])
        if repeated:
            shown = ", ".join(repr(i) for i in repeated[:5]) + (" ..." if len(repeated) > 5 else "")
            raise FatvitError(f"{path}: {len(repeated)} {kind} id(s) used more than once: {shown}")
    for image in data["images"]:
        where = f"{path}: image {image['id']!r}"
        for key in ("width", "height"):
            value = image.get(key)
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise FatvitError(f"{where} has no valid {key!r} (a positive integer): {value!r}")
        if not isinstance(image.get("file_name"), str) or not image["file_name"]:
            raise FatvitError(f"{where} has no 'file_name'")


def _check_polygons(seg: List[Any], where: str) -> None:
    for polygon in seg:
        if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon):
            raise FatvitError(f"{where} has a polygon that is not a list of finite numbers: {str(polygon)[:80]}")
        if len(polygon) % 2 or len(polygon) < 6:
            raise FatvitError(
                f"{where} has a polygon of {len(polygon)} number(s): a polygon is at least 3 (x, y) points, "
                "an even count of at least 6"
            )


def _check_annotations(coco: Any, path: Path) -> None:
    images, categories = coco.imgs, coco.cats
    for ann in coco.dataset["annotations"]:
        where = f"{path}: annotation {ann.get('id')!r}"
        if ann.get("image_id") not in images:
            raise FatvitError(f"{where} names image {ann.get('image_id')!r}, which the file does not list")
        if ann.get("category_id") not in categories:
            known = ", ".join(str(c) for c in sorted(categories))
            raise FatvitError(f"{where} has category {ann.get('category_id')!r}, not one of the file's ({known})")
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            raise FatvitError(f"{where} has no valid bbox [x, y, width, height] of 4 finite numbers: {box!r}")
        seg = ann.get("segmentation")
        if isinstance(seg, list):
            _check_polygons(seg, where)
        elif isinstance(seg, dict):
            img = images[ann["image_id"]]
            if list(seg.get("size", [])) != [img["height"], img["width"]]:
                raise FatvitError(
                    f"{where}: its mask is {seg.get('size')} (height, width) but image {img['id']} is "
                    f"{img['height']}x{img['width']}"
                )
            if not isinstance(seg.get("counts"), (str, list)):
                raise FatvitError(f"{where}: its RLE mask has no 'counts' (a string or a list)")
        elif seg is not None:
            raise FatvitError(f"{where} has a segmentation that is neither polygons nor RLE: {str(seg)[:80]}")


class CocoDetection(Dataset):
    """A COCO instances file and its images folder (see the module's doc).

    Args:
        images: the folder of the images (``file_name`` is relative to it).
        annotations: the instances JSON.
        train: leave crowd annotations out of the targets.
        masks: give instance masks (Mask R-CNN).
        transform: called as ``transform(image, target)``.
        filter_empty_gt: leave out images without annotations (crowd ones count, as in mmdet).
        min_image_side: with ``filter_empty_gt``, also leave out images whose shorter side is smaller.
    """

    def __init__(
        self,
        images: str | Path,
        annotations: str | Path,
        train: bool = True,
        masks: bool = False,
        transform: Optional[Callable] = None,
        filter_empty_gt: bool = False,
        min_image_side: int = 0,
    ) -> None:
        self.root = Path(images)
        self.annotations = Path(annotations)
        if not self.root.is_dir():
            raise FatvitError(f"image folder not found: {self.root}")
        self.coco = open_coco(self.annotations)
        _check_annotations(self.coco, self.annotations)
        self.cat_ids = sorted(self.coco.cats)
        if not self.cat_ids:
            raise FatvitError(f"{self.annotations} lists no categories")
        self.classes = [str(self.coco.cats[c]["name"]) for c in self.cat_ids]
        self.label_of = {c: i for i, c in enumerate(self.cat_ids)}
        self.ids = sorted(self.coco.imgs)
        if filter_empty_gt:
            annotated = {ann["image_id"] for ann in self.coco.dataset["annotations"]}
            images_info = self.coco.imgs
            self.ids = [i for i in self.ids if i in annotated
                        and min(images_info[i]["width"], images_info[i]["height"]) >= min_image_side]  # fmt: skip
        self.images_left_out = len(self.coco.imgs) - len(self.ids)
        names = [self.coco.imgs[i]["file_name"] for i in self.ids]
        missing = [name for name in names if not (self.root / name).is_file()]
        if missing:
            raise FatvitError(
                f"{len(missing)} image(s) listed in {self.annotations} are not in {self.root} (first: {missing[0]})"
            )
        self.train = train
        self.masks = masks
        self.transform = transform
        self.clipped_boxes = 0
        self.dropped_boxes = 0
        self.crowd_left_out = 0
        self._targets = [self._sanitize(i) for i in self.ids]
        if self.clipped_boxes or self.dropped_boxes:
            warnings.warn(
                f"{self.annotations}: {self.clipped_boxes} box(es) clipped to their image, {self.dropped_boxes} "
                "dropped (under 1 px wide or high, of no area, or outside the image)",
                stacklevel=2,
            )
        if masks:
            kept = (o["ann"] for objects in self._targets for o in objects)
            bare = next((ann for ann in kept if "segmentation" not in ann), None)
            if bare is not None:
                raise FatvitError(f"{self.annotations}: annotation {bare['id']!r} has no segmentation (masks train "
                                  "Mask R-CNN: every box needs its polygons or RLE)")  # fmt: skip
        usable = sum(1 for objects in self._targets for o in objects if not o["ann"].get("iscrowd", 0))
        if not usable:
            anns = self.coco.dataset["annotations"]
            crowd = sum(1 for ann in anns if ann.get("iscrowd", 0))
            why = (
                "it has no annotations"
                if not anns
                else f"its {len(anns)} annotation(s) are {crowd} crowd region(s) and {len(anns) - crowd} box(es) "
                "under 1 px or with nothing inside the image"
            )
            if train:
                raise FatvitError(f"{self.annotations} has no box to train on: {why}")
            warnings.warn(f"{self.annotations} has no box to evaluate against: {why}", stacklevel=2)

    def _sanitize(self, image_id: int) -> List[Dict[str, Any]]:
        info = self.coco.imgs[image_id]
        w, h = float(info["width"]), float(info["height"])
        kept = []
        for ann in self.coco.imgToAnns.get(image_id, []):
            if self.train and ann.get("iscrowd", 0):
                self.crowd_left_out += 1
                continue
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            box = [min(max(x, 0.0), w), min(max(y, 0.0), h), min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h)]
            area = ann.get("area", bw * bh)
            if bw < 1 or bh < 1 or not (_is_number(area) and area > 0) or box[2] <= box[0] or box[3] <= box[1]:
                self.dropped_boxes += 1
                continue
            if box != [x, y, x + bw, y + bh]:
                self.clipped_boxes += 1
            kept.append(dict(box=box, label=self.label_of[ann["category_id"]], ann=ann))
        return kept

    def __len__(self) -> int:
        return len(self.ids)

    def aspect_groups(self) -> List[int]:
        """Each image's group for batching: 0 portrait (narrower than high), 1 landscape or square (mmdet's)."""
        return [0 if self.coco.imgs[i]["width"] < self.coco.imgs[i]["height"] else 1 for i in self.ids]

    def __getitem__(self, index: int) -> Optional[Tuple[Any, Dict[str, Any]]]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        path = self.root / info["file_name"]
        try:
            img = load_rgb(str(path))
        except Exception as err:  # truncated, corrupt or unreadable file
            warnings.warn(f"skipping unreadable image {path}: {type(err).__name__}: {err}", stacklevel=1)
            return None
        if img.size != (info["width"], info["height"]):
            raise FatvitError(
                f"{path} is {img.size[0]}x{img.size[1]} but {self.annotations} says {info['width']}x{info['height']}"
            )
        objects = self._targets[index]
        size = (img.size[1], img.size[0])
        boxes = torch.tensor([o["box"] for o in objects], dtype=torch.float32).reshape(-1, 4)
        target: Dict[str, Any] = dict(
            boxes=tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=size),
            labels=torch.tensor([o["label"] for o in objects], dtype=torch.int64),
            image_id=image_id,
        )
        if self.masks:
            arr = np.stack([self.coco.annToMask(o["ann"]) for o in objects]) if objects else np.zeros((0, *size))
            target["masks"] = tv_tensors.Mask(torch.from_numpy(arr.astype(np.uint8)))
        if self.transform is not None:
            img, target = self.transform(img, target)
        return img, target


def detection_transform(train: bool, hflip: float = 0.5) -> Callable:
    """PIL image and target to a float image in [0, 1] (the detector resizes and normalises), flipped in training."""
    steps: List[Any] = [v2.ToImage()]
    if train and hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)


def collate_detection(
    batch: Sequence[Optional[Tuple[torch.Tensor, Dict[str, Any]]]],
) -> Tuple[List[torch.Tensor], List[Dict[str, Any]], int]:
    """Images and targets as lists (they differ in size), without the ``None`` of unreadable images; and their count."""
    kept = [item for item in batch if item is not None]
    images = [img for img, _ in kept]
    targets = [
        {k: (v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v) for k, v in t.items()} for _, t in kept
    ]
    return images, targets, len(batch) - len(kept)
