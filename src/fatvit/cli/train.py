"""``fatvit train``: train a FAT model, or any timm model, with a recipe (the embedded digits set without --data)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Callable, Dict, Optional, Sequence

from ..config import AMP_MODES, load_config, recipe_files, recipe_values
from ..errors import FatvitError
from ..tasks.classification.config import ClassifyConfig
from .format import CONFIG_FLAGS, add_set_option, flag_values, positive_int

#: The shortcut flags of the training verbs (:data:`~fatvit.cli.format.CONFIG_FLAGS`), in --help's order: their
#: metavar and their line (defaults are added from the recipes).
FLAG_HELP = {
    "model": ("NAME", "the model to train"),
    "data": ("DIR", "the data set's folder"),
    "epochs": ("N", "the run's length in epochs"),
    "iterations": ("N", "the run's length in optimizer steps, instead of epochs"),
    "batch_size": ("N", "images per batch and process"),
    "img_size": ("PIXELS", "the side of the training images"),
    "lr": ("LR", "the peak learning rate per lr_base_batch images (scaled by the global batch)"),
    "output": ("DIR", "the run folder"),
    "workers": ("N", "data loading processes, at most the cores available"),
    "device": ("DEVICE", "auto, cpu, cuda or cuda:N"),
    "amp": ("MODE", f"mixed precision: {', '.join(AMP_MODES)} (auto: bf16 on CUDA where supported, else fp16; "
            "none on a CPU)"),
    "seed": ("N", "the random seed"),
    "finetune": ("CKPT", "initial weights of the whole model (layers for other classes are replaced)"),
    "backbone_weights": ("CKPT", "a classification checkpoint of the backbone (fatvit's or the authors'), or none: "
                         "random weights on purpose (with --data, one or the other is required unless --finetune)"),
}  # fmt: skip

#: Defaults that no recipe sets.
FIXED_DEFAULTS = {"data": "the task's embedded data set", "output": "runs/<model>-<time>"}

#: The recipes ``fatvit train`` uses without --config: without --data, and with it.
DEFAULT_RECIPES = ("digits", "imagenet")


def default_recipe(data: Optional[str]) -> str:
    """The recipe used without --config: ``digits`` for the embedded set, the paper's ``imagenet`` with --data."""
    return DEFAULT_RECIPES[0 if data is None else 1]


def add_parser(sub: argparse._SubParsersAction, name: str, help: str) -> None:
    p = sub.add_parser(
        name,
        help=help,
        description=(
            "Train a FAT model (or any timm model, for comparisons under the same recipe) on an ImageNet-style "
            "folder (DATA/train/<class>/*, DATA/val/<class>/*) with the paper's recipe, or, without --data, on "
            "scikit-learn's handwritten digits (the 'digits' recipe). Launch with torchrun for several "
            "processes (DDP)."
        ),
    )
    add_training_arguments(p, ClassifyConfig, DEFAULT_RECIPES, "a FAT size or variant, or any timm model")
    p.set_defaults(run=run)


def _shown(value: Any) -> str:
    """A config value as a recipe would write it."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _default_text(key: str, recipes: Sequence[str], values: Sequence[Dict[str, Any]]) -> str:
    if key in FIXED_DEFAULTS:
        return f"default: {FIXED_DEFAULTS[key]}"
    shown = [_shown(v[key]) for v in values]
    if len(set(shown)) == 1:
        return f"default: {shown[0]}"
    return "default: " + ", ".join(f"{s} with recipe {r}" for s, r in zip(shown, recipes))


def add_training_arguments(
    p: argparse.ArgumentParser, cls: type, recipes: Sequence[str], model_help: str, recipe_help: str = ""
) -> None:
    """The options of a training verb for config class ``cls``: --config, the shortcut flags of its keys, --set,
    --resume, --overwrite, --max-steps, --json. ``recipes``: the recipe used without --data and the one used
    with it, whose values the flags' help gives as defaults."""
    names = recipe_files(cls.TASK)
    per_size = f" or, {cls.MODEL_RECIPES}" if cls.MODEL_RECIPES else ""
    p.add_argument(
        "--config",
        metavar="RECIPE",
        help=f"a YAML file or a recipe name: {', '.join(names)}{per_size} (default: {recipes[0]} without --data, "
        f"{recipe_help or recipes[1]} with it)",
    )
    keys = {f.name for f in dataclasses.fields(cls)}
    values = [recipe_values(name, cls) for name in recipes]
    for key, (metavar, text) in FLAG_HELP.items():
        if key in keys:
            if key == "model":
                text = f"{text}: {model_help}"
            default = _default_text(key, recipes, values)
            text = f"{text} (config key {key}{'; ' + default if default else ''})"
            p.add_argument(f"--{key.replace('_', '-')}", dest=key, type=CONFIG_FLAGS[key], default=None,
                           metavar=metavar, help=text)  # fmt: skip
    add_set_option(p, "override any config key (YAML value; model_kwargs.NAME for model arguments); repeatable")
    p.add_argument("--resume", metavar="CKPT", help="continue a run exactly from its last.pth")
    p.add_argument("--overwrite", action="store_true", help="replace the run files of a non-empty --output folder")
    p.add_argument(
        "--max-steps",
        type=positive_int,
        default=None,
        metavar="N",
        help="stop after this many optimizer steps in all, resumable (default: the run's length)",
    )
    p.add_argument("--json", action="store_true", help="print summary.json's content at the end")


def typed_flags(args: argparse.Namespace) -> Dict[str, Any]:
    """The config values given as flags, already typed by argparse."""
    return flag_values(args, list(FLAG_HELP))


def run_training(
    args: argparse.Namespace, cls: type, recipe: Optional[str], verb: str, result: Callable[[Dict[str, Any]], str]
) -> int:
    """Train (or resume) as ``args`` say; ``result`` words a finished run's figures for the last line."""
    from ..engine import Trainer

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
        last = trainer.folder / "last.pth"
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
        args, ClassifyConfig, recipe, "fatvit train",
        lambda s: f"top-1 {s['final_top1']:.2f}% (best {s['best_top1']:.2f}%)",
    )  # fmt: skip
