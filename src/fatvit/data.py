"""Data that every task reads the same way.

* :func:`load_rgb`: any image file as 8-bit RGB (grayscale, palette, CMYK,
  alpha, 16-bit and float images scaled to 8 bits); :data:`EXTENSIONS`, the
  formats read from folders.
* :class:`Splits`: what a task's ``build_splits`` returns.
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
from torchvision.datasets.folder import IMG_EXTENSIONS

from .errors import FatvitError

__all__ = [
    "EXTENSIONS",
    "is_image",
    "try_load_rgb",
    "load_rgb",
    "ImageFiles",
    "SeededDataset",
    "ResumableSampler",
    "collate_skipping",
    "Splits",
    "make_loader",
]

_log = logging.getLogger("fatvit.train")

#: Image formats read from folders (torchvision's list, WebP and GIF included).
EXTENSIONS = tuple(sorted(set(IMG_EXTENSIONS) | {".webp", ".gif"}))


def is_image(path: str) -> bool:
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


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    classes: List[str]


def try_load_rgb(path: str | Path) -> Tuple[Optional[Image.Image], Optional[str]]:
    """``(load_rgb(path), None)``, or ``(None, why)`` for a file that is not a readable image (not an image,
    truncated, unreadable): how every verb that predicts reads its inputs."""
    try:
        return load_rgb(str(path)), None
    except Exception as err:  # Pillow raises many kinds for a bad file
        return None, f"{type(err).__name__}: {err}"


class ImageFiles(Dataset):
    """The images a predicting verb was given, read with :func:`try_load_rgb` (in loader workers, if any):
    ``(index, transform(image), None)`` for a readable file, ``(index, None, why)`` for another. Without a
    ``transform`` the item is the RGB image itself."""

    def __init__(self, paths: Sequence[Path], transform: Optional[Callable[[Image.Image], Any]] = None) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tuple[int, Any, Optional[str]]:
        image, reason = try_load_rgb(self.paths[index])
        if image is not None and self.transform is not None:
            image = self.transform(image)
        return index, image, reason


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
