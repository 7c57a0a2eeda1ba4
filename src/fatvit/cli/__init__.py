"""The ``fatvit`` command: one module per verb, each thin over the library.

Every user error, argparse's own included, ends with one line
``fatvit: error: ...`` on stderr and exit code 1; every warning is one line
``fatvit: warning: ...``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any, List, NoReturn, Optional

from ..errors import FatvitError
from . import benchmark, detect, explain, export, predict, segment, summary, table, train
from . import eval as eval_verb

VERBS = {
    "train": train,
    "eval": eval_verb,
    "predict": predict,
    "explain": explain,
    "summary": summary,
    "table": table,
    "export": export,
    "benchmark": benchmark,
    "detect": detect,
    "segment": segment,
}


class Parser(argparse.ArgumentParser):
    """argparse with fatvit's error convention: one line, exit code 1 (not argparse's usage and 2)."""

    def error(self, message: str) -> NoReturn:
        print(f"fatvit: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(1)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fatvit",
        description=(
            "FAT (Fully Adaptive Transformer) models: training, evaluation, predictions, explanations, tables, "
            "ONNX export and benchmarks; COCO detection (fatvit detect) and semantic segmentation (fatvit segment)."
        ),
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=Parser)
    for name, module in VERBS.items():
        module.add_parser(sub, name)
    return parser


def show_warning(message: Warning | str, category: type, filename: str, lineno: int, file: Any = None,
                 line: Optional[str] = None) -> None:  # fmt: skip
    """Warnings as the command words them: ``fatvit: warning: ...`` on one line, not Python's
    ``file:line: Category: ...`` with the source line."""
    text = " ".join(str(message).split())
    print(f"fatvit: warning: {text}", file=file or sys.stderr, flush=True)


def main(argv: List[str] | None = None) -> int:
    """Run the ``fatvit`` command; user errors print one line and return 1, warnings one line each."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a bad argument (1, its line already printed)
        return int(exit_.code or 0)
    with warnings.catch_warnings():  # restores Python's own display when the command returns
        warnings.showwarning = show_warning
        try:
            return int(args.run(args) or 0)
        except FatvitError as err:
            print(f"fatvit: error: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("fatvit: interrupted", file=sys.stderr)
            return 130
