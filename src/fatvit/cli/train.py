"""``fatvit train``: train a FAT model, or any timm model, with a recipe (the embedded digits set without --data)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from ..config import TrainConfig, load_config, recipe_names
from ..errors import FatvitError
from ..train import Trainer
from .format import add_set_option, positive_int

#: Flags that are shortcuts for config keys (any key also works with --set KEY=VALUE).
SHORTCUTS = {
    "model": str,
    "data": str,
    "epochs": positive_int,
    "iterations": positive_int,
    "batch_size": positive_int,
    "img_size": positive_int,
    "lr": float,
    "output": str,
    "workers": int,
    "device": str,
    "amp": str,
    "seed": int,
    "finetune": str,
    "backbone_weights": str,
}


def default_recipe(data: Optional[str]) -> str:
    """The recipe used without --config: ``digits`` for the embedded set, the paper's ``imagenet`` with --data."""
    return "digits" if data is None else "imagenet"


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="train a model",
        description=(
            "Train a FAT model (or any timm model, for comparisons under the same recipe) on an ImageNet-style "
            "folder (DATA/train/<class>/*, DATA/val/<class>/*) with the paper's recipe, or, without --data, on "
            "scikit-learn's handwritten digits (the 'digits' recipe). Launch with torchrun for several "
            "processes (DDP)."
        ),
    )
    add_training_arguments(p, TrainConfig, "digits without --data, imagenet with it")
    p.set_defaults(run=run)


def add_training_arguments(p: argparse.ArgumentParser, cls: type, default_help: str) -> None:
    """The options of a training verb for config class ``cls``: --config, the shortcut flags of its keys, --set,
    --resume, --overwrite, --max-steps, --json."""
    p.add_argument(
        "--config",
        metavar="RECIPE",
        help=f"a YAML file or a recipe name: {', '.join(recipe_names(cls.TASK))} (default: {default_help})",
    )
    keys = {f.name for f in dataclasses.fields(cls)}
    for key, kind in SHORTCUTS.items():
        if key in keys:
            p.add_argument(f"--{key.replace('_', '-')}", dest=key, type=kind, default=None, help=f"config key {key}")
    add_set_option(p, "override any config key (YAML value; model_kwargs.NAME for model arguments); repeatable")
    p.add_argument("--resume", metavar="CKPT", help="continue a run exactly from its last.pth")
    p.add_argument("--overwrite", action="store_true", help="replace the run files of a non-empty --output folder")
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many optimizer steps in all")
    p.add_argument("--json", action="store_true", help="print summary.json's content at the end")


def typed_flags(args: argparse.Namespace) -> Dict[str, Any]:
    """The config values given as flags, already typed by argparse."""
    return {key: getattr(args, key) for key in SHORTCUTS if getattr(args, key, None) is not None}


def run_training(
    args: argparse.Namespace, cls: type, recipe: Optional[str], verb: str, result: Callable[[Dict[str, Any]], str]
) -> int:
    """Train (or resume) as ``args`` say; ``result`` words a finished run's figures for the last line."""
    flags = typed_flags(args)
    if args.resume:
        if args.config:
            raise FatvitError("--config cannot be used with --resume: a run continues with its own recipe")
        if args.overwrite:
            raise FatvitError("--overwrite cannot be used with --resume: a resumed run continues its own files")
        trainer = Trainer.resume(args.resume, args.overrides, max_steps=args.max_steps, typed=flags, task=cls.TASK)
    else:
        trainer = Trainer(
            load_config(recipe, args.overrides, flags, cls), max_steps=args.max_steps, overwrite=args.overwrite
        )
    try:
        summary = trainer.fit()
    except KeyboardInterrupt:
        last = Path(trainer.out) / "last.pth"
        if trainer.dist.is_main:
            hint = f"resume with: {verb} --resume {last}" if last.is_file() else "no checkpoint was written yet"
            print(f"\nfatvit: interrupted; {hint}", file=sys.stderr)
        return 130
    finally:
        trainer.close()
    if trainer.dist.is_main:
        if args.json:
            print(json.dumps(summary, indent=2))
        elif summary["finished"]:
            print(
                f"done: {summary['model']} {result(summary)} after {summary['epochs']} epochs "
                f"({summary['steps']} steps) in {summary['train_seconds']:.0f}s; results in {summary['output']}"
            )
        else:
            print(f"stopped after {summary['steps']} steps; resume with --resume {summary['checkpoints']['last']}")
    return 0


def run(args: argparse.Namespace) -> int:
    recipe = None if args.resume else (args.config or default_recipe(args.data))
    return run_training(
        args, TrainConfig, recipe, "fatvit train",
        lambda s: f"top-1 {s['final_top1']:.2f}% (best {s['best_top1']:.2f}%)",
    )  # fmt: skip
