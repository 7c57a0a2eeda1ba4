"""``fatvit train``: train a FAT model (the embedded digits set when no --data is given)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List

from ..config import CONFIG_DIR, load_config
from ..errors import FatvitError
from ..train import Trainer

#: Flags that are shortcuts for config keys (any key also works with --set KEY=VALUE).
SHORTCUTS = {
    "model": str,
    "data": str,
    "epochs": int,
    "batch_size": int,
    "lr": float,
    "output": str,
    "workers": int,
    "device": str,
    "amp": str,
    "seed": int,
    "finetune": str,
}


def resolve_recipe(value: str | None, data: str | None, model: str | None) -> Path | None:
    """A recipe path, or a name under configs/ (``fat_b0``, ``digits``)."""
    if value is None:
        if data is None:
            value = "digits"  # the embedded data set has its own short recipe
        else:
            value = model or "fat_b0"
        path = CONFIG_DIR / f"{value}.yaml"
        return path if path.is_file() else None
    path = Path(value)
    if path.is_file():
        return path
    named = CONFIG_DIR / f"{value}.yaml"
    if named.is_file():
        return named
    raise FatvitError(f"config not found: {value} (a YAML path, or a name under {CONFIG_DIR})")


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="train a FAT model",
        description=(
            "Train a FAT model with the paper's recipe on an ImageNet-style folder (DATA/train/<class>/*, "
            "DATA/val/<class>/*), or, without --data, on scikit-learn's handwritten digits (configs/digits.yaml). "
            "Launch with torchrun for several processes (DDP)."
        ),
    )
    p.add_argument(
        "--config",
        help="recipe: a YAML file or a name under configs/ (default: digits; the model's recipe with --data)",
    )
    for key, kind in SHORTCUTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", dest=key, type=kind, default=None, help=f"config key {key}")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key (YAML value; model_kwargs.NAME for model arguments); repeatable",
    )
    p.add_argument("--resume", metavar="CKPT", help="continue a run exactly from its last.pth")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps in all")
    p.add_argument("--json", action="store_true", help="print summary.json's content at the end")
    p.set_defaults(run=run)


def overrides_from(args: argparse.Namespace) -> List[str]:
    flags = [f"{key}={json.dumps(getattr(args, key))}" for key in SHORTCUTS if getattr(args, key) is not None]
    return flags + list(args.overrides)


def run(args: argparse.Namespace) -> int:
    overrides = overrides_from(args)
    if args.resume:
        trainer = Trainer.resume(args.resume, overrides, max_steps=args.max_steps)
    else:
        recipe = resolve_recipe(args.config, args.data, args.model)
        trainer = Trainer(load_config(recipe, overrides), max_steps=args.max_steps)
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    if trainer.dist.is_main:
        if args.json:
            print(json.dumps(summary, indent=2))
        elif summary["finished"]:
            print(
                f"done: {summary['model']} top-1 {summary['final_top1']:.2f}% (best {summary['best_top1']:.2f}%) "
                f"after {summary['epochs']} epochs in {summary['train_seconds']:.0f}s; results in {summary['output']}"
            )
        else:
            print(f"stopped after {summary['steps']} steps; resume with --resume {summary['checkpoints']['last']}")
    return 0
