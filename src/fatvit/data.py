"""Data for training and evaluation.

* :class:`SafeImageFolder`: ImageNet-style ``root/<class>/*`` folders; every
  image is converted to 8-bit RGB (grayscale, palette, CMYK, alpha, 16-bit
  and float images scaled to 8 bits); an unreadable or truncated file is
  reported by path and skipped, never a crash; files of other formats are
  counted and reported.
* :func:`digits_splits`: scikit-learn's handwritten digits (a real data set
  shipped inside that package) as a small image classification set with a
  fixed, stratified train/val split: the default data set.
* :class:`SeededDataset` and :class:`ResumableSampler`: the order of samples
  and every random augmentation are functions of (seed, epoch, index), so a
  run stopped mid-epoch resumes on exactly the same data, whatever the
  number of loader workers.
"""

from __future__ import annotations

import logging
import math
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data import default_collate as _default_collate
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from .errors import FatvitError

__all__ = [
    "SafeImageFolder",
    "DigitsDataset",
    "digits_splits",
    "SeededDataset",
    "ResumableSampler",
    "collate_skipping",
    "Splits",
    "SPLIT_NAMES",
    "find_split",
    "build_splits",
    "make_loader",
]

_log = logging.getLogger("fatvit.train")

#: Image formats read from folders (torchvision's list, WebP and GIF included).
EXTENSIONS = tuple(sorted(set(IMG_EXTENSIONS) | {".webp", ".gif"}))


def _is_image(path: str) -> bool:
    return path.lower().endswith(EXTENSIONS)


def to_8bit(img: Image.Image) -> Image.Image:
    """An image whose pixels are 16-bit or 32-bit integers, or floats, as an 8-bit greyscale image.

    Pillow's own conversion clips such values to 0..255 (a 16-bit image turns
    white, a float one in [0, 1] black). Here 16-bit integers are scaled by
    255 / 65535; 32-bit integers likewise if they stay under 65536 (a 16-bit
    PNG opened as ``I``), else by their maximum; floats in [0, 1] by 255,
    floats in [0, 255] kept, any other float range stretched to 0..255.
    Other modes are returned unchanged.
    """
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img
    arr = np.asarray(img, dtype=np.float64)
    arr = np.where(np.isfinite(arr), arr, 0.0)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if img.mode.startswith("I;16"):
        arr = arr * (255.0 / 65535.0)
    elif img.mode == "I":
        if lo < 0 or hi > 65535:
            arr = (arr - lo) * (255.0 / max(hi - lo, 1.0))
        elif hi > 255:
            arr = arr * (255.0 / 65535.0)
    elif lo >= 0 and hi <= 1.0:  # float
        arr = arr * 255.0
    elif lo < 0 or hi > 255:
        arr = (arr - lo) * (255.0 / max(hi - lo, 1e-12))
    return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), mode="L")


def load_rgb(path: str) -> Image.Image:
    """Open an image and convert it to 8-bit RGB (greyscale, palette, CMYK, alpha, 16-bit and float included)."""
    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()
    return to_8bit(img).convert("RGB")


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
            if _is_image(path):
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


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    classes: List[str]


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


class SeededDataset(Dataset):
    """Wraps a dataset so that sample ``i`` of epoch ``e`` is transformed with RNGs seeded from (seed, e, i).

    The global RNG states of the caller are restored afterwards, so training
    randomness (dropout, drop path, Mixup) is not disturbed. A ``joint``
    transform is called on ``(image, target)`` (boxes and masks move with the image).
    """

    def __init__(self, dataset: Dataset, transform: Callable, seed: int, joint: bool = False) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.joint = joint
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Optional[Tuple[Any, int]]:
        item = self.dataset[index]
        if item is None:
            return None
        img, target = item
        sample_seed = (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            random.seed(sample_seed)
            np.random.seed(sample_seed % 2**32)
            if self.joint:
                img, target = self.transform(img, target)
            else:
                img = self.transform(img)
        random.setstate(py_state)
        np.random.set_state(np_state)
        return img, target


class ResumableSampler(Sampler[int]):
    """Shuffled (or ordered) indices for one process of ``num_replicas``, resumable mid-epoch.

    The permutation depends on (seed, epoch) only. With ``pad`` (training)
    every replica gets the same number of samples (the list is padded by
    wrapping around), as with ``DistributedSampler``; without it
    (evaluation) the replicas share the samples exactly, each once.
    ``start`` skips the first samples of this replica's share: the ones an
    interrupted run already trained on.

    With ``groups`` (a group id per sample, e.g. landscape or portrait) each
    batch of ``batch_size`` on every replica is drawn from one group, as
    mmdet's ``AspectRatioBatchSampler``: the permuted samples are dealt into
    one bucket per group, and a full bucket (``batch_size`` x ``num_replicas``)
    is the next global batch. What is left in the buckets at the end of the
    epoch follows, mixed; a loader that drops its last partial batch drops
    part of it.
    """

    def __init__(
        self,
        length: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        pad: bool = True,
        groups: Optional[Sequence[int]] = None,
        batch_size: int = 1,
    ) -> None:
        if groups is not None and len(groups) != length:
            raise ValueError(f"{len(groups)} groups given for {length} samples")
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start = 0
        self.pad = pad
        self.groups = list(groups) if groups is not None else None
        self.batch_size = batch_size
        self.per_replica = math.ceil(length / num_replicas) if pad else len(range(rank, length, num_replicas))

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def _indices(self) -> List[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        if not self.pad:
            return order[self.rank :: self.num_replicas]
        total = self.per_replica * self.num_replicas
        order = (order * math.ceil(total / max(len(order), 1)))[:total]
        if self.groups is not None:
            order = self._grouped(order)
        return order[self.rank : total : self.num_replicas]

    def _grouped(self, order: List[int]) -> List[int]:
        """``order`` rearranged into global batches of one group each (then the mixed rest); the replicas
        take every ``num_replicas``-th sample, so each one's batch comes from the same global batch."""
        full = self.batch_size * self.num_replicas
        buckets: Dict[int, List[int]] = {}
        arranged: List[int] = []
        for index in order:
            bucket = buckets.setdefault(self.groups[index], [])
            bucket.append(index)
            if len(bucket) == full:
                arranged.extend(bucket)
                bucket.clear()
        return arranged + [i for bucket in buckets.values() for i in bucket]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return self.per_replica - self.start


def collate_skipping(batch: Sequence[Optional[Tuple[Any, int]]]) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Collate (image, target) pairs, dropping the ``None`` of unreadable images; returns the count dropped."""
    kept = [item for item in batch if item is not None]
    skipped = len(batch) - len(kept)
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images, targets = _default_collate(kept)
    return images, targets, skipped


def worker_error_message(err: BaseException) -> str:
    """The message of an error as raised in a loader worker: PyTorch re-raises it in the main process with
    the worker's traceback as its message ("Caught X in DataLoader worker process N. Original Traceback ...",
    ending with ``module.X: message``); that last part."""
    text = str(err)
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return text
    marker = f"{type(err).__name__}: "
    at = text.rfind(marker)
    return text[at + len(marker) :].strip() if at >= 0 else text.strip().splitlines()[-1]


class _Loader(DataLoader):
    """A DataLoader whose workers' :class:`FatvitError` reach the caller as one-line errors."""

    def __iter__(self) -> Iterator[Any]:
        iterator = super().__iter__()
        if self.num_workers == 0:
            return iterator
        return self._one_line_errors(iterator)

    @staticmethod
    def _one_line_errors(iterator: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from iterator
        except FatvitError as err:
            raise type(err)(worker_error_message(err)) from None


_capped: set = set()


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers() -> int:
    """The loader workers of the evaluation verbs unless told otherwise: 4, at most the cores available (no
    warning: the default adapts)."""
    from .config import DEFAULT_WORKERS

    return min(DEFAULT_WORKERS, usable_cores())


def loader_workers(requested: int) -> int:
    """``requested`` loader workers, at most the cores this process may run on: more would only compete for
    them (and torch warns). A cap is said once per process, as a warning."""
    cores = usable_cores()
    if requested <= cores:
        return requested
    if requested not in _capped:
        _capped.add(requested)
        warnings.warn(f"{requested} loader workers asked for, {cores} used: this process may run on {cores} cores",
                      stacklevel=2)  # fmt: skip
    return cores


def make_loader(
    dataset: Dataset,
    sampler: Sampler,
    batch_size: int,
    workers: int,
    drop_last: bool,
    pin_memory: bool = False,
    collate_fn: Callable = collate_skipping,
) -> DataLoader:
    """A loader that drops unreadable images (counting them, see ``collate_fn``) and never draws from the global RNG.

    A data error raised in a loader worker reaches the caller as it would without workers: the same
    :class:`FatvitError` with its own one-line message, not PyTorch's worker traceback. ``workers`` is capped
    at the cores available (:func:`loader_workers`).
    """
    return _Loader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=loader_workers(workers),
        collate_fn=collate_fn,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=False,  # workers must see each epoch's SeededDataset.epoch
        # its own generator: creating an iterator must not draw from the global RNG, which a
        # resumed run restores mid-epoch (augmentations are seeded per sample by SeededDataset)
        generator=torch.Generator().manual_seed(0),
    )
