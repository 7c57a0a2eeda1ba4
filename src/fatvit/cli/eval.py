"""``fatvit eval``: top-1, top-5, loss and images/s of a checkpoint on a validation set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from ..checkpoint import apply_state_dict, read_checkpoint
from ..data import ResumableSampler, SafeImageFolder, SeededDataset, digits_splits, make_loader
from ..errors import FatvitError
from ..evaluate import eval_transform, evaluate
from ..models import create_model


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="evaluate a checkpoint",
        description=(
            "Top-1, top-5, loss and images/s of a model on a validation folder (DATA/<class>/* or DATA/val/<class>/*) "
            "or on the embedded digits set's held-out split. Reads fatvit checkpoints, the authors' files and "
            ".safetensors. Crop and interpolation come from the model's pretrained_cfg unless given."
        ),
    )
    p.add_argument("--model", default=None, help="model name (default: the one recorded in a fatvit checkpoint)")
    p.add_argument("--checkpoint", required=True, help="weights: .pth (fatvit or the authors') or .safetensors")
    p.add_argument("--data", default=None, help="validation folder (default: the digits held-out split)")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--crop-pct", type=float, default=None)
    p.add_argument("--interpolation", default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--ema", action="store_true", help="use the EMA weights of a training checkpoint")
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the model in channels-last memory (default: on; faster on CPUs)",
    )
    p.add_argument(
        "--set",
        dest="model_kwargs",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model constructor argument (YAML value); repeatable",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    state_dict, saved = read_checkpoint(args.checkpoint, use_ema=args.ema)
    name = args.model or saved.get("model") or "fat_b0"
    kwargs = dict(saved.get("model_kwargs", {}))
    for item in args.model_kwargs:
        key, _, value = item.partition("=")
        kwargs[key] = yaml.safe_load(value)
    head = state_dict.get("head.weight")
    num_classes = head.shape[0] if head is not None else 1000
    model = create_model(name, num_classes=num_classes, **kwargs)
    apply_state_dict(model, state_dict, args.checkpoint)
    img_size = args.img_size or saved.get("img_size")
    crop_pct = args.crop_pct if args.crop_pct is not None else saved.get("crop_pct")
    interpolation = args.interpolation or saved.get("interpolation")
    transform = eval_transform(
        model,
        input_size=(3, img_size, img_size) if img_size else None,
        crop_pct=crop_pct,
        interpolation=interpolation,
    )
    if args.data is None:
        _, val = digits_splits()
        where = "the digits held-out split"
    else:
        root = Path(args.data)
        val = SafeImageFolder(root / "val" if (root / "val").is_dir() else root)
        where = str(root)
    if len(val.classes) != num_classes:
        raise FatvitError(f"{args.checkpoint} classifies {num_classes} classes, but {where} has {len(val.classes)}")
    dataset = SeededDataset(val, transform, seed=0)
    loader = make_loader(dataset, ResumableSampler(len(dataset), shuffle=False), args.batch_size, args.workers, False)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    result = evaluate(model, loader, torch.device("cpu"), channels_last=args.channels_last)
    if args.json:
        print(json.dumps(dict(model=name, checkpoint=args.checkpoint, data=where, **result.as_dict()), indent=2))
    else:
        print(
            f"{name} on {where}: top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  loss {result.loss:.4f}  "
            f"({result.images} images, {result.images_per_s:.1f} images/s)"
        )
    return 0
