"""``fatvit summary``: parameters and FLOPs of every FAT size beside the paper's."""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List

from ..flops import matches_paper, model_cost
from ..models import MODEL_CONFIGS, create_model
from .format import render_table

#: Agreement with the paper required of every size: parameters, FLOPs (relative).
PARAMS_TOL = 0.01
GFLOPS_TOL = 0.03


def summarize(image_size: int = 224) -> List[Dict[str, Any]]:
    """One row per FAT size: measured parameters and FLOPs, the paper's, and their relative differences.

    The FLOPs difference compares the paper's figure with the count in the
    convention it uses (``paper_gflops_convention`` of the size's config).
    ``matches_paper`` is true when parameters are within 1% and FLOPs within
    3% of the paper, or print the same at the paper's precision.
    """
    rows = []
    for name, cfg in MODEL_CONFIGS.items():
        cost = model_cost(create_model(name), (3, image_size, image_size))
        compared = cost.full_gflops if cfg.paper_gflops_convention == "full" else cost.conv_linear_gmacs
        rows.append(
            dict(
                model=name,
                params_m=round(cost.params_m, 3),
                paper_params_m=cfg.paper_params_m,
                params_rel_diff=round(cost.params_m / float(cfg.paper_params_m) - 1, 4),
                conv_linear_gmacs=round(cost.conv_linear_gmacs, 3),
                full_gflops=round(cost.full_gflops, 3),
                paper_gflops=cfg.paper_gflops,
                paper_gflops_convention=cfg.paper_gflops_convention,
                gflops_rel_diff=round(compared / float(cfg.paper_gflops) - 1, 4),
                matches_paper=matches_paper(cost.params_m, cfg.paper_params_m, PARAMS_TOL)
                and matches_paper(compared, cfg.paper_gflops, GFLOPS_TOL),
                paper_top1=cfg.paper_top1,
            )
        )
    return rows


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="parameters and FLOPs of every FAT size beside the paper's",
        description=(
            "Count parameters, conv+linear GMACs (the paper's convention) and full GFLOPs "
            "(attention matmuls and norms included, fvcore) of every FAT size, beside the paper's figures."
        ),
    )
    p.add_argument("--image-size", type=int, default=224, help="square input side (default: 224)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rows = summarize(args.image_size)
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
    print(f"FAT models at {args.image_size}x{args.image_size}")
    print(render_table(headers, table))
    print(
        "paper GFLOPs are compared in the convention the paper used for that model; 'matches': params within "
        f"{PARAMS_TOL:.0%} and FLOPs within {GFLOPS_TOL:.0%}, or equal at the paper's printed precision"
    )
    return 0
