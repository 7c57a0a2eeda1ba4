"""Errors that name a problem in the user's input (the CLI prints them on one line, exit 1)."""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Iterable

__all__ = ["FatvitError", "unknown_choice", "require"]


class FatvitError(Exception):
    """A problem with the user's input: a bad path, name, option or file."""


def unknown_choice(kind: str, value: str, choices: Iterable[str]) -> FatvitError:
    """An error for an unknown name, suggesting the closest known one."""
    choices = list(choices)
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(choices)}"
    return FatvitError(f"unknown {kind} {value!r}{hint}")


def require(module: str, extra: str) -> Any:
    """Import the optional dependency ``module``, or say in one line that the extra ``extra`` installs it.

    Raises:
        FatvitError: the module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise FatvitError(f"{module} is not installed: pip install 'fatvit[{extra}]'") from None
