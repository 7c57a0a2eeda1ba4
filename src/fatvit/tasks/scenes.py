"""Digit scenes: the embedded data set of detection and segmentation, written in the real formats.

Each scene is a canvas with a few of scikit-learn's real handwritten digits
(8x8 scans, upscaled to 24-36 pixels, four to six per scene, none overlapping) pasted in random colours on a
textured background. A digit's mask is its stroke (the upscaled scan above
a threshold) and its box the mask's extent. The train scenes use the
digits of the classification set's train split and the val scenes its
held-out digits, so no digit scan is seen in both.

:func:`write_digit_scenes` writes them as

- COCO: ``coco/{train,val}/*.jpg`` and ``coco/annotations/instances_{train,val}.json``
  (categories ``"0"``..``"9"`` with ids 1..10, masks as polygons or RLE);
- ADE20K: ``ade/images/{training,validation}/*.jpg`` and
  ``ade/annotations/{training,validation}/*.png``, where 0 is "ignore" (the
  blurred rim of the strokes), 1 the background and 2..11 the digits, and
  ``ade/classes.txt`` names the classes 1..11,

so that the loaders of real data are the ones exercised.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ..errors import FatvitError
from .classification.data import digits_splits

__all__ = ["write_digit_scenes", "embedded_scenes", "scenes_cache", "SCENE_CLASSES", "DEFAULT_SCENES"]

#: The classes of the segmentation scenes after ``reduce_zero_label``: the background, then the digits.
SCENE_CLASSES = ["background", *[str(d) for d in range(10)]]

#: Scene counts and size of the embedded default.
DEFAULT_SCENES = dict(train=600, val=100, size=128)

#: Digits per scene (at most: a digit that finds no free place is left out) and their side in pixels.
DIGITS_PER_SCENE = (4, 6)
DIGIT_SIDE = (24, 36)
#: Bumped whenever the scenes change, so that a cached copy of older ones is not used.
SCENES_VERSION = 3

_STROKE = 0.45  # fraction of the digit's peak intensity above which a pixel is stroke
_RIM = 0.15  # pixels between this and _STROKE are the blurred rim: "ignore" in the semantic maps


def _digit_map(scan: np.ndarray, side: int) -> np.ndarray:
    """An 8x8 scan (0..255) upscaled to ``side`` pixels, as intensities in [0, 1]."""
    img = Image.fromarray(scan).resize((side, side), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return np.clip(arr / max(float(arr.max()), 1e-6), 0.0, 1.0)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour gradient with noise, darker than the digits."""
    corners = rng.uniform(0, 110, size=(2, 2, 3))
    t = np.linspace(0, 1, size, dtype=np.float32)
    top = corners[0, 0] * (1 - t[:, None]) + corners[0, 1] * t[:, None]
    bottom = corners[1, 0] * (1 - t[:, None]) + corners[1, 1] * t[:, None]
    canvas = top[None, :, :] * (1 - t[:, None, None]) + bottom[None, :, :] * t[:, None, None]
    return canvas + rng.normal(0, 8, size=(size, size, 3))


def _place(rng: np.random.Generator, size: int, side: int, taken: List[Tuple[int, int, int, int]]) -> Any:
    """A top-left corner for a ``side`` square that overlaps no taken square, or None."""
    for _ in range(50):
        x, y = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        if all(x + side <= a or a + s <= x or y + side <= b or b + s <= y for a, b, s, _ in taken):
            return x, y
    return None


def _scene(rng: np.random.Generator, scans: np.ndarray, labels: np.ndarray, size: int) -> Dict[str, Any]:
    canvas = _background(rng, size)
    semantic = np.ones((size, size), dtype=np.uint8)  # 1: background
    objects = []
    taken: List[Tuple[int, int, int, int]] = []
    for _ in range(int(rng.integers(DIGITS_PER_SCENE[0], DIGITS_PER_SCENE[1] + 1))):
        side = int(rng.integers(DIGIT_SIDE[0], DIGIT_SIDE[1] + 1))
        corner = _place(rng, size, side, taken)
        if corner is None:
            continue
        x, y = corner
        k = int(rng.integers(len(labels)))
        digit = _digit_map(scans[k], side)
        colour = rng.uniform(150, 255, size=3)
        region = canvas[y : y + side, x : x + side]
        region[:] = region * (1 - digit[..., None]) + colour * digit[..., None]
        stroke = digit > _STROKE
        ys, xs = np.nonzero(stroke)
        if len(xs) == 0:
            continue
        taken.append((x, y, side, int(labels[k])))
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[y : y + side, x : x + side] = stroke
        rim = np.zeros((size, size), dtype=bool)
        rim[y : y + side, x : x + side] = (digit > _RIM) & ~stroke
        semantic[rim] = 0
        semantic[mask.astype(bool)] = int(labels[k]) + 2
        box = [float(x + xs.min()), float(y + ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        objects.append(dict(label=int(labels[k]), mask=mask, box=box))
    image = np.clip(canvas, 0, 255).astype(np.uint8)
    return dict(image=image, objects=objects, semantic=semantic)


def _polygons(mask: np.ndarray) -> List[List[float]]:
    """The outline of each 4-connected run of a binary mask, as COCO polygons (pixel-corner coordinates)."""
    polys = []
    for y, row in enumerate(mask):
        xs = np.flatnonzero(np.diff(np.concatenate([[0], row, [0]])))
        for x0, x1 in zip(xs[::2], xs[1::2]):
            polys.append([float(x0), float(y), float(x1), float(y), float(x1), float(y + 1), float(x0), float(y + 1)])
    return polys


def write_digit_scenes(
    root: str | Path, train: int = DEFAULT_SCENES["train"], val: int = DEFAULT_SCENES["val"],
    size: int = DEFAULT_SCENES["size"], seed: int = 0,
) -> Path:  # fmt: skip
    """Write the digit scenes under ``root`` (see the module's doc) and return ``root``.

    Masks alternate between COCO polygons (one rectangle per stroke row
    segment, so they rasterise back to the stroke exactly) and RLE.
    """
    root = Path(root)
    train_digits, val_digits = digits_splits()
    rng = np.random.default_rng(seed)
    categories = [dict(id=d + 1, name=str(d), supercategory="digit") for d in range(10)]
    for split, count, digits, ade_split in (
        ("train", train, train_digits, "training"),
        ("val", val, val_digits, "validation"),
    ):
        coco_dir = root / "coco" / split
        ade_img = root / "ade" / "images" / ade_split
        ade_ann = root / "ade" / "annotations" / ade_split
        for folder in (coco_dir, ade_img, ade_ann, root / "coco" / "annotations"):
            folder.mkdir(parents=True, exist_ok=True)
        scans, labels = digits.images, np.asarray(digits.targets)
        images, annotations = [], []
        for i in range(count):
            scene = _scene(rng, scans, labels, size)
            name = f"{split}_{i:05d}"
            Image.fromarray(scene["image"]).save(coco_dir / f"{name}.jpg", quality=95)
            Image.fromarray(scene["image"]).save(ade_img / f"{name}.jpg", quality=95)
            Image.fromarray(scene["semantic"]).save(ade_ann / f"{name}.png")
            images.append(dict(id=i + 1, file_name=f"{name}.jpg", width=size, height=size))
            for obj in scene["objects"]:
                mask = obj["mask"]
                if len(annotations) % 2:
                    rle = mask_utils.encode(np.asfortranarray(mask))
                    segmentation: Any = dict(size=rle["size"], counts=rle["counts"].decode("ascii"))
                else:
                    segmentation = _polygons(mask)
                annotations.append(
                    dict(id=len(annotations) + 1, image_id=i + 1, category_id=obj["label"] + 1, bbox=obj["box"],
                         area=float(mask.sum()), iscrowd=0, segmentation=segmentation)
                )  # fmt: skip
        coco = dict(images=images, annotations=annotations, categories=categories)
        (root / "coco" / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    (root / "ade" / "classes.txt").write_text("\n".join(SCENE_CLASSES) + "\n")
    return root


def scenes_cache() -> Path:
    """Where the embedded scenes are written: ``digit_scenes-v<SCENES_VERSION>`` in ``$FATVIT_CACHE`` or, by
    default, ``~/.cache/fatvit``."""
    base = os.environ.get("FATVIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fatvit")
    return Path(base) / f"digit_scenes-v{SCENES_VERSION}"


def embedded_scenes() -> Path:
    """The embedded default data (:data:`DEFAULT_SCENES`), written once to :func:`scenes_cache` and reused.

    The scenes are a function of the code alone (fixed seed), so the cache
    is rebuilt identically if removed. A partial write never shows: the
    files are written to a temporary folder beside it, then renamed.
    """
    root = scenes_cache()
    if (root / "complete").is_file():
        return root
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".digit_scenes-", dir=root.parent))
    except OSError as err:
        raise FatvitError(f"cannot write the embedded scenes under {root.parent} ({err.strerror or err}); "
                          "set FATVIT_CACHE to a writable folder") from None  # fmt: skip
    try:
        write_digit_scenes(tmp)
        (tmp / "complete").write_text("ok\n")
        try:
            tmp.rename(root)
        except OSError:  # another process finished first: use its copy
            if not (root / "complete").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
