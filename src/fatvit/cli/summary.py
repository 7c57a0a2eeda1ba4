"""``fatvit summary``: parameters and FLOPs of every FAT size beside the paper's."""

from __future__ import annotations

import argparse
import json

from .format import positive_int, render_table


def add_parser(sub: argparse._SubParsersAction, name: str, help: str) -> None:
    p = sub.add_parser(
        name,
        help=help,
        description=(
            "Count parameters, conv+linear GMACs (the paper's convention) and full GFLOPs "
            "(attention matmuls and norms included, fvcore) of every FAT size, beside the paper's figures."
        ),
    )
    p.add_argument("--img-size", type=positive_int, default=224, help="square input side (default: 224)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..tables import GFLOPS_REL_TOL, PARAMS_REL_TOL, summarize

    rows = summarize(args.img_size)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [
        [
            r["model"],
            f"{r['params_m']:.2f}",
            r["paper_params_m"],
            f"{100 * r['params_rel_diff']:+.1f}%",
            f"{r['conv_linear_gmacs']:.3f}",
            f"{r['full_gflops']:.3f}",
            f"{r['paper_gflops']} ({'full' if r['paper_gflops_convention'] == 'full' else 'conv+lin'})",
            f"{100 * r['gflops_rel_diff']:+.1f}%",
            "yes" if r["matches_paper"] else "NO",
        ]
        for r in rows
    ]
    headers = [
        "model",
        "params (M)",
        "paper",
        "diff",
        "conv+linear GMACs",
        "full GFLOPs",
        "paper GFLOPs",
        "diff",
        "matches",
    ]
    print(f"FAT models at {args.img_size}x{args.img_size}")
    print(render_table(headers, table))
    print(
        "paper GFLOPs are compared in the convention the paper used for that model; 'matches': params within "
        f"{PARAMS_REL_TOL:.0%} and FLOPs within {GFLOPS_REL_TOL:.0%}, or equal at the paper's printed precision"
    )
    return 0
