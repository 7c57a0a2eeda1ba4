"""The ``fatvit`` command: one module per verb, each thin over the library.

Every user error, argparse's own included, ends with one line
``fatvit: error: ...`` on stderr and exit code 1; every warning is one line
``fatvit: warning: ...``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import Any, List, NoReturn, Optional

from ..errors import FatvitError
from ..tasks import TASKS

#: Each verb: the module of ``fatvit.cli`` that defines it, and its line in ``fatvit --help``. Only the module
#: of the verb given is imported, so ``fatvit --help`` and a mistyped verb answer without torch.
VERBS = {
    "train": ("train", "train a model"),
    "eval": ("eval", "evaluate a checkpoint"),
    "predict": ("predict", "top-k classes of a trained model for images"),
    "explain": ("explain", "figure of FASA's gates and attention and the Grad-CAM of an image"),
    "summary": ("summary", "parameters and FLOPs of every FAT size beside the paper's"),
    "table": ("table", "the paper's ablation, attention and dense-prediction tables with our measurements"),
    "export": ("export", "export a FAT model to ONNX, checked with ONNX Runtime"),
    "quantize": ("quantize", "a classifier as an int8 ONNX file, refused if it loses more top-1 than allowed"),
    "benchmark": ("benchmark", "latency and throughput of FAT and timm peers, eager/deployed/compiled/ONNX Runtime"),
    # a task with its own verb group (fatvit detect train|eval|predict|export): the registry's line
    **{spec.verb: (spec.verb, spec.help) for spec in TASKS.values() if spec.verb},
}


class Parser(argparse.ArgumentParser):
    """argparse with fatvit's error convention: one line, exit code 1 (not argparse's usage and 2)."""

    def error(self, message: str) -> NoReturn:
        print(f"fatvit: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(1)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extra = super().parse_known_args(args, namespace)
        if self.prog != "fatvit":  # a verb's parser: the top level words what is left over
            return parsed, extra
        prog = vars(parsed).pop("prog", self.prog)
        hints = vars(parsed).pop("unknown_hints", {})
        if extra:  # named by the (sub-)verb that was given, not by the top level
            hint = hints.get(extra[0].partition("=")[0], "")
            self.prog = prog
            self.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
        return parsed, extra


def _verb_of(argv: List[str]) -> Optional[str]:
    """The verb ``argv`` names: its first word that is not an option."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    """The ``fatvit`` parser; the options of the verb ``argv`` names (every verb's when ``argv`` is None)."""
    parser = Parser(
        prog="fatvit",
        description=(
            "FAT (Fully Adaptive Transformer) models: training, evaluation, predictions, explanations, tables, "
            "ONNX export and benchmarks; COCO detection (fatvit detect) and semantic segmentation (fatvit segment)."
        ),
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=Parser)
    given = None if argv is None else _verb_of(argv)
    for name, (module, help) in VERBS.items():
        if argv is None or name == given:
            importlib.import_module(f".{module}", __name__).add_parser(sub, name, help)
        else:
            sub.add_parser(name, help=help)
    for action in _leaf_parsers(parser):
        action.set_defaults(prog=action.prog)
    return parser


def _leaf_parsers(parser: argparse.ArgumentParser) -> List[argparse.ArgumentParser]:
    """The parsers of ``parser``'s (sub-)verbs that take no further verb."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for a in subs for p in dict.fromkeys(a.choices.values()) for leaf in _leaf_parsers(p)]


def show_warning(message: Warning | str, category: type, filename: str, lineno: int, file: Any = None,
                 line: Optional[str] = None) -> None:  # fmt: skip
    """Warnings as the command words them: ``fatvit: warning: ...`` on one line, not Python's
    ``file:line: Category: ...`` with the source line."""
    text = " ".join(str(message).split())
    print(f"fatvit: warning: {text}", file=file or sys.stderr, flush=True)


def main(argv: List[str] | None = None) -> int:
    """Run the ``fatvit`` command; user errors print one line and return 1, warnings one line each."""
    try:
        args = build_parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a bad argument (1, its line already printed)
        return int(exit_.code or 0)
    with warnings.catch_warnings():  # restores Python's own display when the command returns
        warnings.showwarning = show_warning
        try:
            return int(args.run(args) or 0)
        except FatvitError as err:
            from .errors import error_line

            print(f"fatvit: error: {error_line(err)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("fatvit: interrupted", file=sys.stderr)
            return 130
