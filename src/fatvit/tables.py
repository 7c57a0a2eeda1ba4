"""The paper's tables, with our measured parameters and FLOPs beside its figures.

:func:`summarize`: every FAT size against the main tables (relative bounds).

``ablation``: "Main components analysis"; ``attention``: "Different
self-attention mechanisms comparison". Every row is FAT-B0 with one change
(a registered variant, see :mod:`fatvit.models.variants`), measured at
224x224.

FLOPs convention: both tables are compared in multiply-accumulates of
convolutions and linear layers (the convention of the released code and of
the main table). In it every FLOPs figure of both tables is matched, the
window attentions' 0.8G included: they project queries, keys and values at
full resolution, while FASA projects keys and values on the downsampled map.
The full count (attention matmuls and norms) is shown beside it.
"""

from __future__ import annotations

from typing import Any, Dict, List

from .catalog import TABLES, PaperRow
from .flops import matches_paper, model_cost
from .models import MODEL_CONFIGS, create_model

__all__ = [
    "PaperRow",
    "TABLES",
    "PARAMS_TOL_M",
    "GFLOPS_TOL",
    "PARAMS_REL_TOL",
    "GFLOPS_REL_TOL",
    "measure_table",
    "summarize",
]

#: Agreement with the paper required of every FAT size (relative): parameters, FLOPs.
PARAMS_REL_TOL = 0.01
GFLOPS_REL_TOL = 0.03


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
                matches_paper=matches_paper(cost.params_m, cfg.paper_params_m, PARAMS_REL_TOL)
                and matches_paper(compared, cfg.paper_gflops, GFLOPS_REL_TOL),
                paper_top1=cfg.paper_top1,
            )
        )
    return rows


#: Agreement required with every row of the ablation tables (absolute): parameters (M) and GFLOPs.
PARAMS_TOL_M = 0.15
GFLOPS_TOL = 0.06


def measure_table(name: str, image_size: int = 224) -> List[Dict[str, Any]]:
    """The rows of table ``name`` with our measurements, differences and whether they meet the bound."""
    rows = []
    costs: Dict[str, Any] = {}
    for row in TABLES[name]:
        if row.model not in costs:
            costs[row.model] = model_cost(create_model(row.model), (3, image_size, image_size))
        cost = costs[row.model]
        params_diff = cost.params_m - float(row.params_m)
        gflops_diff = cost.conv_linear_gmacs - float(row.gflops)
        within = abs(params_diff) <= PARAMS_TOL_M and abs(gflops_diff) <= GFLOPS_TOL
        rows.append(
            dict(
                label=row.label,
                model=row.model,
                paper_params_m=row.params_m,
                params_m=round(cost.params_m, 3),
                params_diff_m=round(params_diff, 3),
                paper_gflops=row.gflops,
                conv_linear_gmacs=round(cost.conv_linear_gmacs, 3),
                gflops_diff=round(gflops_diff, 3),
                full_gflops=round(cost.full_gflops, 3),
                paper_top1=row.top1,
                within_bounds=within,
                unmatched=row.unmatched,
            )
        )
    return rows


#: Agreement required of the dense models' parameter counts with the paper's (M).
DENSE_PARAMS_TOL_M = 0.5


def measure_dense_table() -> List[Dict[str, Any]]:
    """The paper's COCO detectors (and Semantic FPN) on FAT-B0..B3: our parameter counts beside the paper's.

    The detectors are counted for COCO's 80 classes, Semantic FPN for
    ADE20K's 150. ``within_bounds`` is None where the paper gives no count.
    """
    from .tasks.detection.models import DETECTORS, build_detector
    from .tasks.segmentation.models import SEGMENTERS, build_segmenter

    rows = []
    for name, cfg in {**DETECTORS, **SEGMENTERS}.items():
        if not cfg.backbone.startswith("fat_"):
            continue
        model = build_detector(name) if name in DETECTORS else build_segmenter(name)
        params_m = sum(p.numel() for p in model.parameters()) / 1e6
        paper = cfg.paper_params_m
        rows.append(
            dict(
                model=name,
                head=cfg.head,
                backbone=cfg.backbone,
                params_m=round(params_m, 3),
                paper_params_m=paper,
                params_diff_m=None if paper is None else round(params_m - paper, 3),
                within_bounds=None if paper is None else abs(params_m - paper) <= DENSE_PARAMS_TOL_M,
                paper_metrics=dict(cfg.paper_metrics),
            )
        )
    return rows
