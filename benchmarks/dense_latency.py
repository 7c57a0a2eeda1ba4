"""CPU inference latency of the dense models on FAT-B0 against the same models on timm's resnet18.

RetinaNet, Mask R-CNN (80 classes) and Semantic FPN (150 classes), batch 1,
in eval mode, at 800x1333 (COCO's test size) and 512x512, every model of a
size measured interleaved in one run, median over rounds, with the ratio of
each FAT-B0 model to its resnet18 twin. The detectors run end to end
(resizing, backbone, FPN, heads, box decoding and NMS) on random weights;
only ratios are meaningful across machines.

    python benchmarks/dense_latency.py
    python benchmarks/dense_latency.py --sizes 512x512 --rounds 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Dict, List

import torch

from fatvit.benchmark import time_interleaved
from fatvit.cli.format import render_table
from fatvit.detection.models import build_detector
from fatvit.segmentation.models import build_segmenter

HEADS = ("retinanet", "mask_rcnn", "semantic_fpn")
BACKBONES = ("fat_b0", "resnet18")


def _size(text: str) -> tuple:
    h, _, w = text.partition("x")
    return int(h), int(w)


def _runner(head: str, backbone: str, height: int, width: int):  # noqa: ANN202
    name = f"{head}_{backbone}"
    if head == "semantic_fpn":
        model = build_segmenter(name).eval()
        x = torch.rand(1, 3, height, width)
        return model, lambda: model(x)
    side = min(height, width), max(height, width)
    model = build_detector(name, min_size=side[0], max_size=side[1]).eval()
    x = [torch.rand(3, height, width)]
    return model, lambda: model(x)


def main(argv: List[str] | None = None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["800x1333", "512x512"], help="HxW input sizes")
    parser.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS))
    parser.add_argument("--rounds", type=int, default=3, help="timed calls per model (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes:
        height, width = _size(size)
        runners: Dict[str, object] = {}
        params: Dict[str, float] = {}
        for head in args.heads:
            for backbone in BACKBONES:
                model, run = _runner(head, backbone, height, width)
                runners[f"{head}_{backbone}"] = run
                params[f"{head}_{backbone}"] = sum(p.numel() for p in model.parameters()) / 1e6
        times = time_interleaved(runners, args.rounds, args.warmup)
        for head in args.heads:
            twin = statistics.median(times[f"{head}_resnet18"])
            for backbone in BACKBONES:
                name = f"{head}_{backbone}"
                median = statistics.median(times[name])
                rows.append(dict(model=name, head=head, backbone=backbone, input=f"{height}x{width}",
                                 params_m=round(params[name], 2), median_ms=round(1000 * median, 1),
                                 ratio_to_resnet18=round(median / twin, 3)))  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"CPU latency, batch 1, {torch.get_num_threads()} threads, median of {args.rounds} interleaved calls")
        table = [[r["model"], r["input"], r["params_m"], r["median_ms"], f"{r['ratio_to_resnet18']:.2f}"]
                 for r in rows]  # fmt: skip
        print(render_table(["model", "input", "params (M)", "median ms", "x resnet18 twin"], table))
    return rows


if __name__ == "__main__":
    main()
