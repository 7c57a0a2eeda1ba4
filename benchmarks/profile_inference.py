"""Where FAT-B0's CPU inference time goes: torch.profiler, the released code's order against fatvit.deploy.

Prints, for each form, the self CPU time per forward of each op (grouped by
name, largest first), and the fraction of the CPU's float32 peak reached:
FAT-B0's multiply-accumulates (convs, linears, attention matmuls and norms,
as fvcore counts them) over the time per forward, against the rate of a large float32 matrix
product measured in the same run.

    python benchmarks/profile_inference.py --threads 2
    python benchmarks/profile_inference.py --batch 16 --top 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Dict, List

import torch
from torch.profiler import ProfilerActivity, profile

import fatvit
from fatvit.benchmark import build_candidate
from fatvit.cli.format import render_table
from fatvit.flops import model_cost


def op_times(model: torch.nn.Module, x: torch.Tensor, iters: int) -> Dict[str, float]:
    """Self CPU milliseconds per forward of each op name."""
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(iters):
                model(x)
    return {e.key: e.self_cpu_time_total / 1000 / iters for e in prof.key_averages()}


def median_ms(model: torch.nn.Module, x: torch.Tensor, iters: int) -> float:
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def matmul_gmacs_per_s(n: int = 2048, iters: int = 10) -> float:
    """The CPU's float32 rate on an n x n x n matrix product (GMAC/s), the practical peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    return iters * n**3 / (time.perf_counter() - start) / 1e9


def main(argv: List[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fat_b0")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--top", type=int, default=12, help="ops listed per form")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    released = build_candidate(f"authors:{args.model}", args.img_size).model
    deployed = fatvit.deploy(build_candidate(args.model, args.img_size).model)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)
    forms = {"released": released, "deployed": deployed}
    gmacs = model_cost(build_candidate(args.model, args.img_size).model, (3, args.img_size, args.img_size)).full_gflops
    peak = matmul_gmacs_per_s()
    report = {"model": args.model, "batch": args.batch, "threads": torch.get_num_threads(), "gmacs": gmacs,
              "matmul_peak_gmacs_per_s": peak, "forms": {}}  # fmt: skip
    for name, model in forms.items():
        ms = median_ms(model, x, args.iters)
        ops = sorted(op_times(model, x, args.iters).items(), key=lambda kv: -kv[1])
        achieved = args.batch * gmacs / (ms / 1000)
        report["forms"][name] = {
            "median_ms": ms,  # unrounded: the JSON's figures are what was computed, the table rounds them
            "gmacs_per_s": achieved,
            "fraction_of_peak": achieved / peak,
            "ops_ms": {k: round(v, 3) for k, v in ops[: args.top]},
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return report
    print(f"{args.model}, batch {args.batch}, {args.img_size}x{args.img_size}, {report['threads']} threads; "
          f"float32 matmul rate {peak:.1f} GMAC/s")  # fmt: skip
    for name, form in report["forms"].items():
        share = f"{100 * form['fraction_of_peak']:.1f}% of the matmul rate"
        print(f"\n{name}: {form['median_ms']:.2f} ms per forward, {form['gmacs_per_s']:.1f} GMAC/s ({share}); "
              "self CPU ms per forward (profiled):")  # fmt: skip
        print(render_table(["op", "ms"], [[k, f"{v:.2f}"] for k, v in form["ops_ms"].items()]))
    return report


if __name__ == "__main__":
    main()
