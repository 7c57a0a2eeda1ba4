"""CPU inference latency of FAT-B0/B1/B2 against timm peers of similar size.

All models are measured in one run, interleaved (each round times every model
once, in a shuffled order), and the median over rounds is reported with the
ratio to FAT-B0. FAT runs at 224x224, each peer at its own pretrained
resolution. Only ratios are meaningful across machines.

    python benchmarks/latency.py                 # batch 1 and 16, 30 rounds
    python benchmarks/latency.py --rounds 5 --json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Dict, List

import timm
import torch

import fatvit  # noqa: F401 - registers the FAT models
from fatvit.cli.format import render_table

FAT_MODELS = ["fat_b0", "fat_b1", "fat_b2"]
PEERS = ["mobilevit_xs", "edgenext_x_small", "edgenext_small", "efficientnet_b1", "efficientnet_b3"]


def build(names: List[str], batch: int, channels_last: bool) -> Dict[str, tuple]:
    models = {}
    for name in names:
        model = timm.create_model(name).eval()
        size = (3, 224, 224) if name.startswith("fat_") else tuple(model.pretrained_cfg["input_size"])
        x = torch.randn(batch, *size)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.to(memory_format=torch.channels_last)
        models[name] = (model, x)
    return models


@torch.inference_mode()
def measure(models: Dict[str, tuple], rounds: int, warmup: int, seed: int = 0) -> Dict[str, List[float]]:
    for model, x in models.values():
        for _ in range(warmup):
            model(x)
    times: Dict[str, List[float]] = {name: [] for name in models}
    order = list(models)
    rng = random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            model, x = models[name]
            start = time.perf_counter()
            model(x)
            times[name].append(time.perf_counter() - start)
    return times


def main(argv: List[str] | None = None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds per batch size (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--models", nargs="+", default=FAT_MODELS + PEERS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    baseline = args.models[0]
    rows = []
    for batch in args.batch_sizes:
        models = build(args.models, batch, args.channels_last)
        times = measure(models, args.rounds, args.warmup)
        base = statistics.median(times[baseline])
        for name in args.models:
            median = statistics.median(times[name])
            rows.append(
                dict(
                    model=name,
                    batch=batch,
                    input=models[name][1].shape[-1],
                    params_m=round(sum(p.numel() for p in models[name][0].parameters()) / 1e6, 2),
                    median_ms=round(1000 * median, 2),
                    images_per_s=round(batch / median, 1),
                    ratio_to_baseline=round(median / base, 3),
                )
            )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"CPU latency, {torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds")
        headers = ["model", "batch", "input", "params (M)", "median ms", "img/s", f"x {baseline}"]
        table = [
            [r["model"], r["batch"], r["input"], r["params_m"], f"{r['median_ms']:.1f}", r["images_per_s"],
             f"{r['ratio_to_baseline']:.2f}"]
            for r in rows
        ]  # fmt: skip
        print(render_table(headers, table))
    return rows


if __name__ == "__main__":
    main()
