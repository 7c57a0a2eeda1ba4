"""``fatvit eval``: top-1, top-5, loss and images/s of a checkpoint on a validation set."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Dict, Set, Tuple

import torch

from ..checkpoint import apply_state_dict, read_checkpoint
from ..config import TrainConfig, apply_overrides, make_config
from ..data import ResumableSampler, SafeImageFolder, SeededDataset, digits_splits, make_loader
from ..distributed import pick_device
from ..errors import FatvitError
from ..evaluate import eval_transform, evaluate
from ..models import create_model
from .format import positive_int

#: Config keys that apply to evaluation (flags and --set KEY=VALUE); a file's own record fills them first.
EVAL_KEYS = ("model", "model_kwargs", "img_size", "crop_pct", "interpolation", "batch_size", "workers", "device",
             "channels_last", "data")  # fmt: skip
#: Flags that are shortcuts for those keys.
SHORTCUTS = {
    "model": str,
    "data": str,
    "img_size": positive_int,
    "crop_pct": float,
    "interpolation": str,
    "batch_size": positive_int,
    "workers": int,
    "device": str,
}


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="evaluate a checkpoint",
        description=(
            "Top-1, top-5, loss and images/s of a model on a validation folder (DATA/<class>/* or DATA/val/<class>/*) "
            "or on the embedded digits set's held-out split. Reads fatvit checkpoints and .safetensors exports "
            "(model, classes and preprocessing from the file's own record) and the authors' files (give --model, "
            "and model arguments with --set model_kwargs.NAME=VALUE). Flags and --set win over the record."
        ),
    )
    p.add_argument("--checkpoint", required=True, help="weights: .pth (fatvit or the authors') or .safetensors")
    for key, kind in SHORTCUTS.items():
        default_help = {
            "model": "default: the file's record, else fat_b0",
            "data": "default: the digits held-out split",
        }
        p.add_argument(
            f"--{key.replace('_', '-')}",
            dest=key,
            type=kind,
            default=None,
            help=f"config key {key} ({default_help.get(key, 'default: the file record, else the model')})",
        )
    p.add_argument("--ema", action="store_true", help="use the EMA weights of a training checkpoint")
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the model in channels-last memory (default: on; faster on CPUs)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"set a config key ({', '.join(EVAL_KEYS)}; model_kwargs.NAME for model arguments); repeatable",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def eval_config(meta: Dict[str, Any], args: argparse.Namespace) -> Tuple[TrainConfig, Set[str]]:
    """The evaluation's settings: the file's record, then flags, then --set, checked by TrainConfig.

    Also returns the keys given (by the record or the user): the others fall back on the model's pretrained_cfg.
    """
    values = {k: meta[k] for k in ("model", "model_kwargs", "img_size", "crop_pct", "interpolation") if k in meta}
    typed = {key: getattr(args, key) for key in SHORTCUTS if getattr(args, key) is not None}
    if args.channels_last is not None:
        typed["channels_last"] = args.channels_last
    values = apply_overrides(values, args.overrides, typed)
    foreign = [k for k in values if k not in EVAL_KEYS]
    if foreign:
        raise FatvitError(f"config key {foreign[0]!r} does not apply to eval (it takes {', '.join(EVAL_KEYS)})")
    given = set(values)
    values.setdefault("workers", min(4, os.cpu_count() or 1))
    return make_config(values), given


def run(args: argparse.Namespace) -> int:
    state_dict, meta = read_checkpoint(args.checkpoint, use_ema=args.ema)
    cfg, given = eval_config(meta, args)
    name = cfg.model
    model = create_model(name, **cfg.model_kwargs)
    classifier = model.pretrained_cfg.get("classifier", "head")
    head = state_dict.get(f"{classifier}.weight")
    num_classes = meta.get("num_classes") or (head.shape[0] if head is not None else model.num_classes)
    if num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    apply_state_dict(model, state_dict, args.checkpoint, meta=meta)
    transform = eval_transform(
        model,
        input_size=(3, cfg.img_size, cfg.img_size) if "img_size" in given else None,
        crop_pct=cfg.crop_pct if "crop_pct" in given else None,
        interpolation=cfg.interpolation if "interpolation" in given else None,
        mean=tuple(meta["mean"]) if "mean" in meta else None,
        std=tuple(meta["std"]) if "std" in meta else None,
    )
    if cfg.data is None:
        _, val = digits_splits()
        where = "the digits held-out split"
    else:
        root = Path(cfg.data)
        val = SafeImageFolder(root / "val" if (root / "val").is_dir() else root)
        where = str(root)
    if len(val.classes) != num_classes:
        raise FatvitError(f"{args.checkpoint} classifies {num_classes} classes, but {where} has {len(val.classes)}")
    if meta.get("classes") and list(meta["classes"]) != list(val.classes):
        differ = [f"{a!r} vs {b!r}" for a, b in zip(meta["classes"], val.classes) if a != b]
        raise FatvitError(
            f"{args.checkpoint} was trained on other classes than {where} has "
            f"(class index: checkpoint vs data: {', '.join(differ[:3])}{' ...' if len(differ) > 3 else ''})"
        )
    device = pick_device(cfg.device)
    dataset = SeededDataset(val, transform, seed=0)
    loader = make_loader(dataset, ResumableSampler(len(dataset), shuffle=False, pad=False), cfg.batch_size,
                         cfg.workers, False)  # fmt: skip
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    result = evaluate(model, loader, device, channels_last=cfg.channels_last)
    if args.json:
        print(json.dumps(dict(model=name, checkpoint=args.checkpoint, data=where, **result.as_dict()), indent=2))
    else:
        skipped = f", {result.skipped_images} unreadable skipped" if result.skipped_images else ""
        print(
            f"{name} on {where}: top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  loss {result.loss:.4f}  "
            f"({result.images} images{skipped}, {result.images_per_s:.1f} images/s)"
        )
    return 0
