"""The options of the verbs that run a trained model (eval, predict, explain): which file, which settings.

A file's own record (model, arguments, classes, preprocessing) comes first;
these flags, then ``--set KEY=VALUE``, win over it.
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, Mapping, Optional, Sequence

from ..config import DEFAULT_WORKERS
from .format import CONFIG_FLAGS, add_set_option, flag_values

#: The shortcut flags (:data:`~fatvit.cli.format.CONFIG_FLAGS`) of the verbs that run a trained model, in order.
MODEL_FLAGS = ("model", "data", "img_size", "crop_pct", "interpolation", "batch_size", "workers", "device")

_DEFAULTS = {
    "model": "default: the file's record, else fat_b0",
    "data": "default: the digits held-out split",
    "batch_size": "default: 128",
    "workers": f"default: {DEFAULT_WORKERS}, at most the cores available",
    "device": "auto (default), cpu, cuda, cuda:N",
}

_RECORD_DEFAULT = "default: the file's record, else the model's"


def add_model_options(
    p: argparse.ArgumentParser, keys: Sequence[str], defaults: Optional[Mapping[str, str]] = None
) -> None:
    """``--checkpoint``, ``--ema``, a flag for each of ``keys`` that has one, ``--channels-last`` and ``--set``;
    ``defaults`` words the defaults that differ from the other verbs'."""
    p.add_argument(
        "--checkpoint",
        required=True,
        help="weights: .pth (fatvit or the authors') or .safetensors; eval and predict also take .onnx files from "
        "fatvit export",
    )
    for key in MODEL_FLAGS:
        if key in keys:
            p.add_argument(
                f"--{key.replace('_', '-')}",
                dest=key,
                type=CONFIG_FLAGS[key],
                default=None,
                help=f"config key {key} ({(defaults or {}).get(key) or _DEFAULTS.get(key, _RECORD_DEFAULT)})",
            )
    p.add_argument("--ema", action="store_true", help="use the EMA weights of a training checkpoint")
    if "channels_last" in keys:
        p.add_argument(
            "--channels-last",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="run the model in channels-last memory (default: on; faster on CPUs)",
        )
    add_set_option(p, f"set a config key ({', '.join(keys)}; model_kwargs.NAME for model arguments); repeatable")


def typed_values(args: argparse.Namespace) -> Dict[str, Any]:
    """The config values given by flags (those left out are not in the dict)."""
    typed = flag_values(args, MODEL_FLAGS)
    if getattr(args, "channels_last", None) is not None:
        typed["channels_last"] = args.channels_last
    return typed


def add_runtime_option(p: argparse.ArgumentParser) -> None:
    """``--runtime``: what runs an ``.onnx`` file given as ``--checkpoint``."""
    p.add_argument(
        "--runtime",
        choices=("onnxruntime", "openvino"),
        default=None,
        help="for an .onnx file from fatvit export: the runtime that runs it, on the CPU (default: onnxruntime; "
        "openvino needs pip install 'fatvit[openvino]'); model, classes and preprocessing come from its metadata",
    )
