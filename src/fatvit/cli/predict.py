"""``fatvit predict``: the top-k classes of a trained model for image files and folders."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import FatvitError
from ..files import check_output_file
from ..reporting import write_csv
from ..tasks.classification.config import INFERENCE_KEYS
from .format import positive_int, render_table, report_skip
from .model_options import add_model_options, add_runtime_option, typed_values

#: Config keys that apply to predictions (no data set: the images are the arguments).
PREDICT_KEYS = tuple(k for k in INFERENCE_KEYS if k != "data")


def add_parser(sub: argparse._SubParsersAction, name: str, help: str) -> None:
    p = sub.add_parser(
        name,
        help=help,
        description=(
            "The top-k classes, with probabilities, of each image given (files, and folders searched recursively), "
            "preprocessed as the checkpoint records (an .onnx file from fatvit export runs in --runtime). "
            "Prints a table, or JSON records (--json: path and topk, a list "
            "of class/prob), or writes a CSV (--csv). Unreadable files are reported on stderr and skipped."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and folders")
    add_model_options(p, PREDICT_KEYS, {"workers": "default: 0, images read in this process"})
    add_runtime_option(p)
    p.add_argument("--topk", type=positive_int, default=5, help="classes per image (default: 5)")
    p.add_argument(
        "--classes",
        metavar="FILE",
        help="class names, one per line in output order (for files that do not record them, as the authors')",
    )
    p.add_argument("--json", action="store_true", help="print JSON records instead of the table")
    p.add_argument("--csv", metavar="OUT", help="also write the predictions as CSV (one row per image)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --csv file")
    p.set_defaults(run=run)


def _csv_rows(records: list, k: int) -> list:
    rows = []
    for record in records:
        row = {"path": record["path"]}
        for rank in range(k):
            hit = record["topk"][rank] if rank < len(record["topk"]) else {"class": "", "prob": ""}
            row[f"class_{rank + 1}"] = hit["class"]
            row[f"prob_{rank + 1}"] = hit["prob"]
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    from ..tasks.classification.inference import load_classifier, read_class_names
    from ..tasks.classification.predict import predict

    csv_path = check_output_file(args.csv, "--csv", args.overwrite) if args.csv else None
    classes = read_class_names(args.classes) if args.classes else None
    classifier = load_classifier(
        args.checkpoint,
        typed_values(args),
        args.overrides,
        args.ema,
        classes,
        PREDICT_KEYS,
        purpose="predict",
        runtime=args.runtime,
    )
    classifier.class_names()  # an error now, before reading any image, if the file records none

    records = predict(
        classifier,
        args.inputs,
        topk=args.topk,
        batch_size=classifier.config.batch_size,
        workers=classifier.config.workers if "workers" in classifier.given else 0,
        progress=sys.stderr.isatty(),
        on_skip=report_skip,
    )
    if not records:
        raise FatvitError("none of the images could be read")
    k = min(args.topk, classifier.num_classes)
    if csv_path is not None:
        write_csv(csv_path, _csv_rows(records, k))
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        headers = ["image"] + [f"#{rank + 1}" for rank in range(k)]
        rows = [[r["path"], *(f"{hit['class']} {100 * hit['prob']:.1f}%" for hit in r["topk"])] for r in records]
        print(render_table(headers, rows))
    return 0
