"""``fatvit eval``: top-1, top-5, loss and images/s of a checkpoint on a validation set."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Tuple

from ..errors import FatvitError
from ..tasks.classification.config import INFERENCE_KEYS
from .model_options import add_model_options, add_runtime_option, typed_values


def add_parser(sub: argparse._SubParsersAction, name: str, help: str) -> None:
    p = sub.add_parser(
        name,
        help=help,
        description=(
            "Top-1, top-5, loss and images/s of a model on a validation folder (DATA/<class>/*, or DATA/val/<class>/* "
            "where DATA has val/, valid/, validation/, eval/ or evaluation/) or on the embedded digits set's held-out "
            "split. Reads fatvit checkpoints and .safetensors exports (model, classes and preprocessing from the "
            "file's own record), the authors' files (give --model, and model arguments with --set "
            "model_kwargs.NAME=VALUE) and .onnx files from fatvit export (run by --runtime). Flags and --set win over "
            "the record."
        ),
    )
    add_model_options(p, INFERENCE_KEYS)
    add_runtime_option(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print the result as JSON (keys model, checkpoint, data, top1, top5, loss, images, images_per_s, "
        "skipped_images, runtime)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data import ResumableSampler, SeededDataset, make_loader
    from ..distributed import pick_device
    from ..tasks.classification.inference import load_classifier
    from ..tasks.classification.metrics import evaluate

    loaded = load_classifier(
        args.checkpoint,
        typed_values(args),
        args.overrides,
        use_ema=args.ema,
        keys=INFERENCE_KEYS,
        purpose="eval",
        runtime=args.runtime,
    )
    cfg, model, name = loaded.config, loaded.model, loaded.name
    runtime = getattr(model, "runtime", "pytorch")
    val, where = open_validation(cfg.data)
    check_classes(loaded, val, where, args.checkpoint)
    device = pick_device(cfg.device)
    dataset = SeededDataset(val, loaded.transform, seed=0)
    loader = make_loader(dataset, ResumableSampler(len(dataset), shuffle=False, pad=False), cfg.batch_size,
                         cfg.workers, False)  # fmt: skip
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    result = evaluate(model, loader, device, channels_last=cfg.channels_last)
    if args.json:
        record = dict(model=name, checkpoint=args.checkpoint, data=where, **result.as_dict(), runtime=runtime)
        print(json.dumps(record, indent=2))
    else:
        skipped = f", {result.skipped_images} unreadable skipped" if result.skipped_images else ""
        shown = name if runtime == "pytorch" else f"{name} in {runtime}"
        print(
            f"{shown} on {where}: top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  loss {result.loss:.4f}  "
            f"({result.images} images{skipped}, {result.images_per_s:.1f} images/s)"
        )
    return 0


def open_validation(data: Optional[str]) -> Tuple[Any, str]:
    """The images to evaluate on, and how to name them: ``data``'s validation folder (``data`` itself when it has
    none; the one found is named in the log), or the digits held-out split when ``data`` is None."""
    from ..tasks.classification.data import SafeImageFolder, digits_splits, find_split

    if data is None:
        return digits_splits()[1], "the digits held-out split"
    root = Path(data)
    split = find_split(root, "val")
    if split is not None:
        print(f"fatvit: evaluating on {split}", file=sys.stderr)
    return SafeImageFolder(split or root), str(root)


def check_classes(loaded: Any, val: Any, where: str, checkpoint: str) -> None:
    """Check that the model ``loaded`` from ``checkpoint`` classifies the classes of ``val`` (from ``where``), in
    the same order when the file names them.

    Raises:
        FatvitError: another number of classes, or other names.
    """
    if len(val.classes) != loaded.num_classes:
        raise FatvitError(f"{checkpoint} classifies {loaded.num_classes} classes, but {where} has "
                          f"{len(val.classes)}")  # fmt: skip
    if loaded.classes and loaded.classes != list(val.classes):
        differ = [f"{a!r} vs {b!r}" for a, b in zip(loaded.classes, val.classes) if a != b]
        raise FatvitError(
            f"{checkpoint} was trained on other classes than {where} has "
            f"(class index: checkpoint vs data: {', '.join(differ[:3])}{' ...' if len(differ) > 3 else ''})"
        )
