"""``fatvit table``: the paper's ablation and attention tables, our measurements beside its figures."""

from __future__ import annotations

import argparse
import json

from ..catalog import TABLES
from .format import render_table

TITLES = {
    "ablation": "Main components analysis (FAT-B0)",
    "attention": "Different self-attention mechanisms comparison (FAT-B0 body)",
    "dense": "Dense prediction: RetinaNet 1x and Mask R-CNN 1x on COCO (80 classes), Semantic FPN on ADE20K (150)",
}


def add_parser(sub: argparse._SubParsersAction, name: str, help: str) -> None:
    p = sub.add_parser(
        name,
        help=help,
        description=(
            "Reprint a table of the paper with the parameters and FLOPs of our implementation of every row, "
            "measured at 224x224. FLOPs are compared as conv+linear multiply-accumulates (the paper's "
            "convention for FAT); the full count (attention matmuls and norms) is shown beside it. "
            "'dense' compares the parameters of the detectors and segmenters on FAT-B0..B3 with the paper's, "
            "beside its COCO figures."
        ),
    )
    p.add_argument("table", choices=sorted([*TABLES, "dense"]), help="which table")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.table == "dense":
        return _run_dense(args)
    from ..tables import GFLOPS_TOL, PARAMS_TOL_M, measure_table

    rows = measure_table(args.table)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    headers = ["row", "model", "paper params", "ours", "diff", "paper GFLOPs", "conv+lin", "diff", "full",
               "paper top-1", "within bounds"]  # fmt: skip
    body = []
    notes = []
    for r in rows:
        verdict = "yes" if r["within_bounds"] else ("NO, see note" if r["unmatched"] else "NO")
        body.append(
            [r["label"], r["model"], r["paper_params_m"], f"{r['params_m']:.2f}", f"{r['params_diff_m']:+.2f}",
             r["paper_gflops"], f"{r['conv_linear_gmacs']:.3f}", f"{r['gflops_diff']:+.3f}",
             f"{r['full_gflops']:.3f}", f"{r['paper_top1']:.1f}", verdict]
        )  # fmt: skip
        if r["unmatched"]:
            notes.append(f"- {r['label']}: {r['unmatched']}")
    print(f"{TITLES[args.table]}, 224x224")
    print(render_table(headers, body))
    print(f"bounds: {PARAMS_TOL_M}M parameters and {GFLOPS_TOL} GFLOPs (conv+linear) from the paper's figure")
    if notes:
        print("notes:")
        print("\n".join(notes))
    return 0


def _run_dense(args: argparse.Namespace) -> int:
    from ..tables import DENSE_PARAMS_TOL_M, measure_dense_table

    rows = measure_dense_table()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    headers = ["model", "paper params", "ours", "diff", "within bounds", "paper COCO/ADE20K figures (%)"]
    body = []
    for r in rows:
        paper = r["paper_params_m"]
        verdict = "-" if r["within_bounds"] is None else ("yes" if r["within_bounds"] else "NO")
        figures = "  ".join(f"{k} {v:.1f}" for k, v in r["paper_metrics"].items()) or "-"
        diff = "-" if paper is None else f"{r['params_diff_m']:+.2f}"
        body.append([r["model"], "-" if paper is None else paper, f"{r['params_m']:.2f}", diff, verdict, figures])
    print(TITLES["dense"])
    print(render_table(headers, body))
    print(f"bounds: {DENSE_PARAMS_TOL_M}M parameters from the paper's figure (parameters in millions)")
    return 0
