"""Training step time on the CPU: forward, cross-entropy, backward and AdamW step, batch 32 at 224x224.

fatvit's FAT-B0 with its training defaults (channels-last memory, the
optimizer of ``fatvit.train.create_optimizer``: AdamW, fused) against the
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
import torch.nn.functional as F
from timm.optim import create_optimizer_v2

import fatvit  # noqa: F401 - registers the FAT models
from fatvit.benchmark import AUTHORS_PREFIX, build_candidate
from fatvit.cli.format import render_table
from fatvit.train import create_optimizer

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

    setups: Dict[str, tuple] = {}
    for name in args.models:
        model = build_candidate(name, args.img_size).model.train()
        x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
        if name.startswith(AUTHORS_PREFIX):  # the released code: channels-first, AdamW's default implementation
            opt = create_optimizer_v2(model, "adamw", lr=1e-4, weight_decay=0.05)
        else:  # fatvit's defaults: TrainConfig.channels_last, the Trainer's optimizer
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
            opt = create_optimizer(model, "adamw", lr=1e-4, weight_decay=0.05)
        y = torch.randint(0, 1000, (args.batch_size,))
        setups[name] = (model, x, y, opt)

    def step(name: str) -> float:
        model, x, y, opt = setups[name]
        start = time.perf_counter()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
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
