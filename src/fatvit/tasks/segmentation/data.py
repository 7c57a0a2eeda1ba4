"""Semantic segmentation data in the ADE20K layout, and mmseg's training pipeline.

Layout (ADEChallengeData2016): ``images/{training,validation}/*.jpg`` and
``annotations/{training,validation}/<same stem>.png``, label 0 = "other"
(ignored), classes 1..N. With ``reduce_zero_label`` (ADE20K's convention)
0 becomes 255, the ignore index, and k becomes k - 1. Class names come from
``classes.txt`` (one per line, classes 1..N) or ADE20K's
``objectInfo150.txt`` in the root, when there is one.

Bad data: a missing annotation PNG, two images of one stem (``x.jpg`` and
``x.png``: one label map), a label map of another size than its image, label
values above the class count, an empty ``classes.txt`` or one with a blank
line: one :class:`FatvitError`; an unreadable image or PNG is reported and
skipped (``None``).

Training pipeline (mmseg's, for the paper's recipe): resize keeping the
ratio to ``scale`` (long, short) times a random ratio (the scale truncated
to whole pixels, as mmseg's ``random_sample_ratio``), random crop (redrawn
up to 10 times while one class covers ``cat_max_ratio`` or more of the
labelled pixels), flip, photometric distortion, normalisation, padding to
the crop size (label 255). Images are resized as OpenCV's bilinear resize
(mmcv's ``imrescale``): half-pixel centres, no antialiasing; label maps by
nearest neighbour. Evaluation resizes images the same way.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF
from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

from ...data import EXTENSIONS, load_rgb
from ...errors import FatvitError

__all__ = [
    "ADE20KSegmentation",
    "SegmentationTrainTransform",
    "SegmentationEvalTransform",
    "collate_segmentation",
    "read_class_names",
    "resize_image",
    "IGNORE_INDEX",
    "SPLITS",
]

IGNORE_INDEX = 255

#: The folder names of the train and val splits in the ADE20K layout.
SPLITS = {"train": "training", "val": "validation"}


def read_class_names(root: Path) -> Optional[List[str]]:
    """The class names of a data set root: ``classes.txt``, or ADE20K's ``objectInfo150.txt``; None if neither.

    Raises:
        FatvitError: ``classes.txt`` names no class, or has a blank line before its last name.
    """
    plain = root / "classes.txt"
    if plain.is_file():
        lines = [line.strip() for line in plain.read_text().splitlines()]
        while lines and not lines[-1]:  # a file may end with blank lines
            lines.pop()
        if not lines:
            raise FatvitError(f"{plain} names no classes: it holds one class name per line (classes 1..N)")
        if "" in lines:
            raise FatvitError(
                f"{plain}: line {lines.index('') + 1} is blank; the file holds one class name per line (classes "
                "1..N), and a blank line would shift the names of the classes after it"
            )
        return lines
    info = root / "objectInfo150.txt"
    if info.is_file():
        rows = [line.split("\t") for line in info.read_text().splitlines()[1:] if line.strip()]
        return [row[-1].split(";")[0].strip() for row in rows]
    return None


class ADE20KSegmentation(Dataset):
    """One split of a data set in the ADE20K layout (see the module's doc).

    Args:
        root: the folder holding ``images/`` and ``annotations/``.
        split: ``train`` or ``val``.
        num_classes: the classes after ``reduce_zero_label``; label values above it are an error.
    """

    def __init__(
        self, root: str | Path, split: str, num_classes: int, reduce_zero_label: bool = True, transform: Any = None
    ) -> None:
        self.root = Path(root)
        folder = SPLITS[split]
        images, annotations = self.root / "images" / folder, self.root / "annotations" / folder
        for path in (images, annotations):
            if not path.is_dir():
                raise FatvitError(
                    f"{path} not found: a segmentation data set holds images/{{training,validation}}/*.jpg and "
                    "annotations/{training,validation}/*.png"
                )
        self.images = sorted(p for p in images.iterdir() if p.suffix.lower() in EXTENSIONS)
        if not self.images:
            raise FatvitError(f"no images in {images}")
        stems: Dict[str, Path] = {}
        for path in self.images:
            if path.stem in stems:
                raise FatvitError(
                    f"{stems[path.stem].name} and {path.name} in {images} share the stem {path.stem!r}, so both "
                    f"would be scored against {annotations / (path.stem + '.png')}: keep one"
                )
            stems[path.stem] = path
        self.labels = [annotations / f"{p.stem}.png" for p in self.images]
        missing = [p for p in self.labels if not p.is_file()]
        if missing:
            raise FatvitError(f"{len(missing)} image(s) in {images} have no annotation PNG (first: {missing[0]})")
        self.num_classes = num_classes
        self.reduce_zero_label = reduce_zero_label
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def read_label(self, index: int) -> np.ndarray:
        """The label map of sample ``index`` as classes 0..N-1 and 255 (ignored), checked."""
        path = self.labels[index]
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16"):
                raise FatvitError(f"{path} is a {img.mode} image: a label map is single-channel (L, P or I)")
            label = np.asarray(img, dtype=np.int64)
        top = self.num_classes if self.reduce_zero_label else self.num_classes - 1
        bad = label[(label > top) & (label != IGNORE_INDEX)]
        if bad.size:
            raise FatvitError(
                f"{path} holds label {int(bad.max())}, above the {self.num_classes} classes (values 0..{top}"
                f"{', 0 ignored' if self.reduce_zero_label else ''}, and {IGNORE_INDEX} ignored)"
            )
        if self.reduce_zero_label:
            label = np.where((label == 0) | (label == IGNORE_INDEX), IGNORE_INDEX, label - 1)
        return label.astype(np.uint8)

    def __getitem__(self, index: int) -> Optional[Tuple[Any, np.ndarray]]:
        path = self.images[index]
        try:
            img = load_rgb(str(path))
            label = self.read_label(index)
        except FatvitError:
            raise
        except Exception as err:  # truncated, corrupt or unreadable file
            warnings.warn(f"skipping unreadable sample {path}: {type(err).__name__}: {err}", stacklevel=1)
            return None
        if label.shape != (img.size[1], img.size[0]):
            raise FatvitError(
                f"{self.labels[index]} is {label.shape[1]}x{label.shape[0]} but its image {path} is "
                f"{img.size[0]}x{img.size[1]}"
            )
        if self.transform is not None:
            return self.transform(img, label)
        return img, label


def _rescale_size(height: int, width: int, scale: Sequence[float]) -> Tuple[int, int]:
    """mmseg's keep-ratio resize: the largest size with long side <= max(scale) and short side <= min(scale)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_image(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A uint8 CxHxW image resized to ``size`` (height, width) as OpenCV's ``INTER_LINEAR`` (mmcv's
    ``imresize``): bilinear on half-pixel centres, without antialiasing when shrinking."""
    return TF.resize(image, list(size), interpolation=TF.InterpolationMode.BILINEAR, antialias=False)


def _convert(x: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
    """mmseg's ``PhotoMetricDistortion.convert``: ``x * alpha + beta`` clipped to [0, 255] and truncated to uint8."""
    return (x.float() * alpha + beta).clamp(0, 255).to(torch.uint8)


def _in_hsv(x: torch.Tensor, channel: int, change: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """A uint8 RGB image with one channel of its HSV form (0 hue, 1 saturation; in [0, 1]) changed, back to
    uint8 RGB, rounded."""
    hsv = _rgb_to_hsv(x.float() / 255)
    hsv[channel] = change(hsv[channel])
    return _convert(_hsv_to_rgb(hsv) * 255 + 0.5)


def _normalize(img: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    return TF.normalize(img.float() / 255.0, list(mean), list(std))


class SegmentationTrainTransform:
    """mmseg's training pipeline (see the module's doc) on a PIL image and its label map."""

    def __init__(
        self,
        scale: Sequence[int],
        ratio_range: Sequence[float],
        crop_size: int,
        cat_max_ratio: float,
        hflip: float,
        photometric: bool,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.scale, self.ratio_range, self.crop_size = scale, ratio_range, crop_size
        self.cat_max_ratio, self.hflip, self.photometric = cat_max_ratio, hflip, photometric
        self.mean, self.std = mean, std

    def _crop_box(self, label: torch.Tensor) -> Tuple[int, int, int, int]:
        h, w = label.shape
        ch, cw = min(self.crop_size, h), min(self.crop_size, w)

        def draw() -> Tuple[int, int, int, int]:
            return random.randint(0, h - ch), random.randint(0, w - cw), ch, cw

        box = draw()
        if self.cat_max_ratio < 1:  # mmseg's RandomCrop: the first box, then up to 10 redraws
            for _ in range(10):
                top, left = box[:2]
                crop = label[top : top + ch, left : left + cw]
                _, counts = torch.unique(crop[crop != IGNORE_INDEX], return_counts=True)
                if len(counts) > 1 and counts.max().item() / counts.sum().item() < self.cat_max_ratio:
                    break
                box = draw()
        return box

    def _distort(self, img: torch.Tensor) -> torch.Tensor:
        """mmseg's ``PhotoMetricDistortion`` on a uint8 RGB image, each step with probability 0.5: brightness
        +-32, contrast x0.5-1.5 (before or after the next two), saturation x0.5-1.5 and hue +-18 in OpenCV's
        units (180 to the circle: +-36 degrees, integer shifts from -18 to 17 as numpy draws them). Each step's
        result is clipped to [0, 255] and truncated to uint8, as mmseg's; saturation and hue are changed in
        floating-point HSV, where mmcv's OpenCV works on 8-bit HSV (hue in 2-degree steps)."""
        x = img
        if random.random() < 0.5:
            x = _convert(x, beta=random.uniform(-32, 32))
        contrast_first = random.random() < 0.5

        def contrast(x: torch.Tensor) -> torch.Tensor:
            return _convert(x, alpha=random.uniform(0.5, 1.5)) if random.random() < 0.5 else x

        if contrast_first:
            x = contrast(x)
        if random.random() < 0.5:
            x = _in_hsv(x, 1, lambda s: (s * random.uniform(0.5, 1.5)).clamp(0, 1))
        if random.random() < 0.5:
            x = _in_hsv(x, 0, lambda h: (h + random.randint(-18, 17) / 180) % 1.0)
        if not contrast_first:
            x = contrast(x)
        return x

    def __call__(self, img: Image.Image, label: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
        image = TF.pil_to_tensor(img)
        target = torch.from_numpy(label.astype(np.int64))
        ratio = random.uniform(*self.ratio_range)
        size = _rescale_size(image.shape[1], image.shape[2], [int(s * ratio) for s in self.scale])
        image = resize_image(image, size)
        target = TF.resize(target[None], list(size), interpolation=TF.InterpolationMode.NEAREST)[0]
        top, left, ch, cw = self._crop_box(target)
        image, target = image[:, top : top + ch, left : left + cw], target[top : top + ch, left : left + cw]
        if random.random() < self.hflip:
            image, target = image.flip(-1), target.flip(-1)
        if self.photometric:
            image = self._distort(image)
        image = _normalize(image, self.mean, self.std)
        pad_h, pad_w = self.crop_size - image.shape[1], self.crop_size - image.shape[2]
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
            target = F.pad(target, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        return image, target


class SegmentationEvalTransform:
    """Resize the image keeping its ratio to ``scale`` and normalise it; the label map keeps its size."""

    def __init__(self, scale: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> None:
        self.scale, self.mean, self.std = scale, mean, std

    def __call__(self, img: Image.Image, label: Optional[np.ndarray]) -> Tuple[torch.Tensor, Any]:
        image = TF.pil_to_tensor(img)
        size = _rescale_size(image.shape[1], image.shape[2], self.scale)
        image = resize_image(image, size)
        target = torch.from_numpy(label.astype(np.int64)) if label is not None else None
        return _normalize(image, self.mean, self.std), target


def collate_segmentation(batch: Sequence[Optional[Tuple[torch.Tensor, torch.Tensor]]]) -> Tuple[Any, Any, int]:
    """Stack equal-sized samples (training crops); keep lists otherwise (evaluation); drop and count ``None``."""
    kept = [item for item in batch if item is not None]
    images, labels = [img for img, _ in kept], [lab for _, lab in kept]
    same = images and all(img.shape == images[0].shape for img in images)
    if same and all(lab.shape == labels[0].shape for lab in labels):
        return torch.stack(images), torch.stack(labels), len(batch) - len(kept)
    return images, labels, len(batch) - len(kept)
