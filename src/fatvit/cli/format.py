"""Shared pieces of the verbs: argument types and plain-text tables for the terminal."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    return _int_at_least(text, 1, "at least 1")


def non_negative_int(text: str) -> int:
    """An argparse type: an integer of 0 or more."""
    return _int_at_least(text, 0, "0 or more")


def add_set_option(p: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable): config values as YAML text, collected in ``args.overrides``."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-align the first column, right-align the others, with a rule under the header."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def report_skip(path: object, reason: str) -> None:
    """The line every verb that predicts prints for an input it cannot read (and skips)."""
    print(f"fatvit: skipping unreadable image {path}: {reason}", file=sys.stderr)


#: Every flag that is a shortcut for a config key, with its argparse type; a verb adds the flags of the keys it
#: takes (any key also works with --set KEY=VALUE).
CONFIG_FLAGS = {
    "model": str,
    "data": str,
    "epochs": positive_int,
    "iterations": positive_int,
    "batch_size": positive_int,
    "img_size": positive_int,
    "crop_pct": float,
    "interpolation": str,
    "lr": float,
    "output": str,
    "workers": non_negative_int,
    "device": str,
    "amp": str,
    "seed": int,
    "finetune": str,
    "backbone_weights": str,
}


def flag_values(args: argparse.Namespace, keys: Sequence[str]) -> dict:
    """The config values the shortcut flags of ``keys`` gave, typed by argparse (those left out are not in the
    dict; a verb's own options of the same name, such as explain's --output, are not config keys)."""
    return {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}
