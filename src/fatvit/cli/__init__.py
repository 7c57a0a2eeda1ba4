"""The ``fatvit`` command: one module per verb, each thin over the library."""

from __future__ import annotations

import argparse
import sys
from typing import List

from ..errors import FatvitError
from . import eval as eval_verb
from . import summary, table, train

VERBS = {"train": train, "eval": eval_verb, "summary": summary, "table": table}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fatvit",
        description="FAT (Fully Adaptive Transformer) models: summary, training, evaluation and tables.",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, module in VERBS.items():
        module.add_parser(sub, name)
    return parser


def main(argv: List[str] | None = None) -> int:
    """Run the ``fatvit`` command; user errors print one line and return 1."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except FatvitError as err:
        print(f"fatvit: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fatvit: interrupted", file=sys.stderr)
        return 130
