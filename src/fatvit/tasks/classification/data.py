"""Classification data: image folders and the digits set.

* :class:`SafeImageFolder`: ImageNet-style ``root/<class>/*`` folders; every
  image is converted to 8-bit RGB (:func:`fatvit.data.load_rgb`); an
  unreadable or truncated file is reported by path and skipped, never a
  crash; files of other formats are counted and reported.
* :func:`digits_splits`: scikit-learn's handwritten digits (a real data set
  shipped inside that package) as a small image classification set with a
  fixed, stratified train/val split: the default data set.
* :func:`build_splits`: the train and val sets of a folder (or the digits).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from ...data import EXTENSIONS, Splits, is_image, load_rgb
from ...errors import FatvitError

__all__ = ["SafeImageFolder", "DigitsDataset", "digits_splits", "SPLIT_NAMES", "find_split", "build_splits"]

_log = logging.getLogger("fatvit.train")


class SafeImageFolder(ImageFolder):
    """An ``ImageFolder`` whose unreadable images are reported by path and skipped.

    ``__getitem__`` returns ``None`` for such a file (after a warning naming
    it); :func:`collate_skipping` drops those samples from the batch and
    counts them. Files that are not images of a supported format (see
    :data:`EXTENSIONS`) are counted by suffix in ``ignored`` and reported in
    one warning; hidden files (``.DS_Store``) are passed over silently.
    """

    def __init__(self, root: str | Path, transform: Optional[Callable] = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FatvitError(f"data folder not found: {root}")
        self.ignored: Dict[str, int] = {}

        def is_valid(path: str) -> bool:
            if is_image(path):
                return True
            name = os.path.basename(path)
            if not name.startswith("."):
                suffix = os.path.splitext(name)[1].lower() or "(no suffix)"
                self.ignored[suffix] = self.ignored.get(suffix, 0) + 1
            return False

        try:
            super().__init__(str(root), transform=transform, loader=load_rgb, is_valid_file=is_valid)
        except (FileNotFoundError, RuntimeError) as err:
            raise FatvitError(f"no images in {root}: expected {root}/<class>/<image> ({err})") from None
        if self.ignored:
            counts = ", ".join(f"{n} {suffix}" for suffix, n in sorted(self.ignored.items()))
            warnings.warn(
                f"{root}: ignored {sum(self.ignored.values())} file(s) that are not images of a supported format "
                f"({counts}; read: {', '.join(EXTENSIONS)})",
                stacklevel=2,
            )

    def __getitem__(self, index: int) -> Optional[Tuple[Any, int]]:
        path, target = self.samples[index]
        try:
            img = self.loader(path)
        except Exception as err:  # truncated, corrupt or unreadable file
            warnings.warn(f"skipping unreadable image {path}: {type(err).__name__}: {err}", stacklevel=1)
            return None
        if self.transform is not None:
            img = self.transform(img)
        return img, target


class DigitsDataset(Dataset):
    """Images of scikit-learn's handwritten digits (8x8, 16 grey levels) as RGB PIL images."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, transform: Optional[Callable] = None) -> None:
        self.images = images
        self.targets = [int(t) for t in targets]
        self.classes = [str(i) for i in range(10)]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        img = Image.fromarray(self.images[index]).convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]


def digits_splits(val_fraction: float = 0.2, seed: int = 0) -> Tuple[DigitsDataset, DigitsDataset]:
    """The digits set split into stratified train and held-out val parts (fixed by ``seed``)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    x_train, x_val, y_train, y_val = train_test_split(
        images, digits.target, test_size=val_fraction, random_state=seed, stratify=digits.target
    )
    return DigitsDataset(x_train, y_train), DigitsDataset(x_val, y_val)


#: The folder names of each split in a classification root, in the order they are looked for (timm's
#: ``create_dataset`` looks for the same names).
SPLIT_NAMES: Dict[str, Tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation", "eval", "evaluation"),
}


def find_split(root: Path, split: str) -> Optional[Path]:
    """The folder of ``split`` (``train`` or ``val``) in ``root``: the first of :data:`SPLIT_NAMES` that exists,
    or None."""
    return next((root / name for name in SPLIT_NAMES[split] if (root / name).is_dir()), None)


def build_splits(data: Optional[str]) -> Splits:
    """Train and val datasets (transforms unset) from ``data``'s split folders (``train/`` or ``training/``;
    ``val/``, ``valid/``, ``validation/``, ``eval/`` or ``evaluation/``), or the digits set."""
    if data is None:
        train, val = digits_splits()
        return Splits(train, val, train.classes)
    root = Path(data)
    if not root.is_dir():
        raise FatvitError(f"data folder not found: {root}")
    folders = {}
    for split, names in SPLIT_NAMES.items():
        folders[split] = find_split(root, split)
        if folders[split] is None:
            raise FatvitError(
                f"{root} has no {names[0]}/ folder (nor {', '.join(n + '/' for n in names[1:])}; expected "
                f"{root}/train/<class>/* and {root}/val/<class>/*)"
            )
    _log.info("data: training images from %s, validation images from %s", folders["train"], folders["val"])
    train, val = SafeImageFolder(folders["train"]), SafeImageFolder(folders["val"])
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        parts = []
        if only_train:
            parts.append(f"in {folders['train'].name} but not in {folders['val'].name}: {', '.join(only_train)}")
        if only_val:
            parts.append(f"in {folders['val'].name} but not in {folders['train'].name}: {', '.join(only_val)}")
        raise FatvitError(f"train and val classes differ ({'; '.join(parts)})")
    return Splits(train, val, train.classes)
