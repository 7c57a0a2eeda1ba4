"""Top-k predictions of a trained classifier on image files and folders.

:func:`predict` reads each image as ``fatvit eval`` does (8-bit RGB, then
the file's own evaluation transform), runs the model in batches and returns
one record per readable image::

    {"path": "cat.jpg", "topk": [{"class": "cat", "prob": 0.93}, {"class": "dog", "prob": 0.05}, ...]}

Unreadable files are reported (``on_skip``) and left out; a path that does
not exist, or a folder without images, is an error before any work.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ...checkpoint import PathLike
from ...data import EXTENSIONS, ImageFiles, loader_workers
from ...distributed import pick_device
from ...errors import FatvitError
from .inference import Classifier, load_classifier

__all__ = ["find_images", "predict", "top_k"]

Record = Dict[str, Any]


def find_images(inputs: Iterable[PathLike]) -> List[Path]:
    """The image files named by ``inputs``: files as given, folders searched recursively (sorted).

    Inside folders only files with an image suffix (:data:`fatvit.data.EXTENSIONS`) are taken and
    hidden files and folders are passed over; a file named directly is always tried.

    Raises:
        FatvitError: a path does not exist, a folder holds no images, or nothing was given.
    """
    found: List[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            inside = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not inside:
                raise FatvitError(f"no images in {path} (read: {', '.join(EXTENSIONS)})")
            found.extend(inside)
        elif path.exists():
            found.append(path)
        else:
            raise FatvitError(f"image not found: {path}")
    if not found:
        raise FatvitError("no images given")
    return found


def _collate(batch: Sequence[Tuple[int, Optional[torch.Tensor], Optional[str]]]):  # noqa: ANN202
    kept = [(i, t) for i, t, _ in batch if t is not None]
    failed = [(i, reason) for i, t, reason in batch if t is None]
    images = torch.stack([t for _, t in kept]) if kept else torch.empty(0)
    return [i for i, _ in kept], images, failed


def top_k(probs: torch.Tensor, classes: Sequence[str], k: int) -> List[Dict[str, Any]]:
    """The ``k`` most probable classes of one probability vector, as ``{"class", "prob"}`` records."""
    values, indices = probs.topk(min(k, probs.numel()))
    return [{"class": classes[i], "prob": float(p)} for p, i in zip(values.tolist(), indices.tolist())]


def _warn_skip(path: Path, reason: str) -> None:
    warnings.warn(f"skipping unreadable image {path}: {reason}", stacklevel=3)


@torch.no_grad()
def predict(
    model: Union[Classifier, PathLike],
    inputs: Union[PathLike, Iterable[PathLike]],
    topk: int = 5,
    batch_size: int = 32,
    workers: int = 0,
    device: Optional[str] = None,
    progress: bool = False,
    on_skip: Optional[Callable[[Path, str], None]] = None,
) -> List[Record]:
    """Top-``topk`` classes with probabilities for every readable image in ``inputs``.

    Args:
        model: a :class:`~fatvit.tasks.classification.inference.Classifier` or the path of a checkpoint that records its
            classes (a fatvit checkpoint or ``.safetensors`` export).
        inputs: image files and folders (searched recursively).
        topk: how many classes per image (at most the number of classes).
        batch_size, workers: of the data loader (workers at most the cores available).
        device: ``"cpu"``, ``"cuda"``, ... (default: the classifier's config, ``auto``).
        progress: show a progress bar on stderr.
        on_skip: called with (path, reason) for each unreadable file; default: a warning.

    Returns:
        One ``{"path", "topk"}`` record per readable image, in input order.

    Raises:
        FatvitError: a bad checkpoint, missing class names, a missing path or ``topk < 1``.
    """
    classifier = model if isinstance(model, Classifier) else load_classifier(model, purpose="predict")
    classes = classifier.class_names()
    if topk < 1:
        raise FatvitError(f"topk must be at least 1, got {topk}")
    paths = find_images([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)
    on_skip = on_skip or _warn_skip
    run_device = pick_device(device or classifier.config.device)
    channels_last = classifier.config.channels_last
    net = classifier.model.to(run_device).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    loader = DataLoader(ImageFiles(paths, classifier.transform), batch_size=batch_size,
                        num_workers=loader_workers(workers),
                        collate_fn=_collate)  # fmt: skip
    records: List[Record] = []
    for indices, images, failed in tqdm(loader, desc="predict", unit="batch", disable=not progress, leave=False):
        for i, reason in failed:
            on_skip(paths[i], reason)
        if not indices:
            continue
        images = images.to(run_device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        probs = net(images).float().softmax(dim=1).cpu()
        records.extend({"path": str(paths[i]), "topk": top_k(p, classes, topk)} for i, p in zip(indices, probs))
    return records
