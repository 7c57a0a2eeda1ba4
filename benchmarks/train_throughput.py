"""Training step time on the CPU: forward, cross-entropy, backward and AdamW step, batch 32 at 224x224.

fatvit's FAT-B0 with its training defaults (channels-last memory, the
optimizer of ``fatvit.engine.create_optimizer``: AdamW, fused) against the
same model run as the authors' released code runs it (``authors:fat_b0``,
see ``fatvit.models.released``; channels-first, PyTorch's own depthwise
backward, AdamW's default implementation), and timm peers under fatvit's
defaults, measured in one run, interleaved, median over rounds, with the
ratio of each step time to the first model's. Only ratios are meaningful
across machines.

    python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --rounds 3 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Dict, List

import torch

import fatvit  # noqa: F401 - registers the FAT models
from fatvit.benchmark import prepare_training_step
from fatvit.cli.format import render_table

MODELS = ["authors:fat_b0", "fat_b0", "fat_b1", "edgenext_small", "efficientnet_b1"]


def main(argv: List[str] | None = None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=8, help="timed training steps per model (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    setups = {name: prepare_training_step(name, args.batch_size, args.img_size) for name in args.models}

    def step(name: str) -> float:
        start = time.perf_counter()
        setups[name][1]()
        return time.perf_counter() - start

    for name in setups:
        for _ in range(args.warmup):
            step(name)
    times: Dict[str, List[float]] = {name: [] for name in setups}
    order = list(setups)
    rng = random.Random(0)
    for _ in range(args.rounds):
        rng.shuffle(order)
        for name in order:
            times[name].append(step(name))
    base = statistics.median(times[args.models[0]])
    rows = []
    for name in args.models:
        median = statistics.median(times[name])
        q1, _, q3 = statistics.quantiles(times[name], n=4) if len(times[name]) > 1 else (median, median, median)
        rows.append(
            dict(
                model=name,
                params_m=round(sum(p.numel() for p in setups[name][0].parameters()) / 1e6, 2),
                step_s=round(median, 3),
                step_p25_s=round(q1, 3),
                step_p75_s=round(q3, 3),
                images_per_s=round(args.batch_size / median, 1),
                step_ratio=round(median / base, 3),
            )
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(
            f"CPU training step, batch {args.batch_size} at {args.img_size}x{args.img_size}, "
            f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved steps"
        )
        headers = ["model", "params (M)", "step s", "quartiles", "img/s", f"step x {args.models[0]}"]
        table = [
            [r["model"], r["params_m"], r["step_s"], f"[{r['step_p25_s']}, {r['step_p75_s']}]", r["images_per_s"],
             f"{r['step_ratio']:.2f}"]
            for r in rows
        ]  # fmt: skip
        print(render_table(headers, table))
    return rows


if __name__ == "__main__":
    main()
