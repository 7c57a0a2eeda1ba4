"""Where a CPU training step of FAT-B0 goes: torch.profiler, the released code against fatvit's defaults.

A step is forward, cross-entropy, backward and the AdamW step, batch 32 at
224x224, set up by ``fatvit.benchmark.prepare_training_step`` as for
``benchmarks/train_throughput.py``: the released code channels-first with
PyTorch's own depthwise backward and AdamW's default implementation;
fatvit channels-last with its depthwise weight gradient and the Trainer's
(fused) optimizer. Prints the self CPU
time per step of each kind of work, largest first: convolutions by kind
(1x1, depthwise, the stem's 3x3) and direction, the depthwise weight
gradient's own convolutions, attention, norms, activations, elementwise
arithmetic, copies and the optimizer.

    python benchmarks/profile_training.py --threads 2
    python benchmarks/profile_training.py --batch-size 8 --steps 1
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Dict, List, Sequence

import torch
from torch.profiler import ProfilerActivity, profile

import fatvit  # noqa: F401 - registers the FAT models
from fatvit.benchmark import prepare_training_step
from fatvit.cli.format import render_table

#: op name -> kind of work, for the ops that are not convolutions
KINDS = {
    "attention": ("scaled_dot_product", "softmax", "aten::bmm", "aten::matmul", "aten::_softmax"),
    "batch norm": ("batch_norm",),
    "group norm": ("group_norm",),
    "activations": ("gelu", "silu", "sigmoid", "relu", "threshold"),
    "elementwise arithmetic": ("aten::mul", "aten::add", "aten::div", "aten::sub", "aten::sum", "aten::fill_"),
    "copies": ("aten::copy_", "aten::clone", "aten::contiguous", "aten::cat"),
    "optimizer": ("Optimizer.", "_fused_adam", "aten::lerp", "aten::addcdiv", "aten::sqrt", "aten::_foreach"),
}


def conv_kind(op: str, shapes: Sequence[Sequence[int]]) -> str:
    """The kind of a convolution op from its input shapes (weight: ``(out, in / groups, kh, kw)``)."""
    weight = shapes[1] if op == "aten::mkldnn_convolution" else shapes[2]
    direction = "forward" if op == "aten::mkldnn_convolution" else "backward"
    if len(weight) != 4:
        return f"other convolution {direction}"
    if op == "aten::mkldnn_convolution" and shapes[0][0] == 1 and weight[1] == 1 and weight[2] > 9:
        return "depthwise weight gradient (forward convolutions)"  # gradient maps as kernels
    if weight[2:] == [1, 1]:
        return f"1x1 convolution {direction}"
    if weight[1] == 1:
        return f"depthwise convolution {direction}"
    return f"stem 3x3 convolution {direction}"


def kind_of(op: str, shapes: Sequence[Sequence[int]]) -> str:
    if op in ("aten::mkldnn_convolution", "aten::convolution_backward"):
        return conv_kind(op, shapes)
    for kind, markers in KINDS.items():
        if any(marker in op for marker in markers):
            return kind
    return "other"


def profile_step(name: str, batch_size: int, img_size: int, steps: int) -> Dict[str, float]:
    """Self CPU milliseconds per training step of each kind of work, for ``name`` (``authors:`` + size, or a model)."""
    _, step = prepare_training_step(name, batch_size, img_size)
    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    kinds: Dict[str, float] = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        kinds[kind_of(event.key, event.input_shapes)] += event.self_cpu_time_total / 1000 / steps
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1]))


def main(argv: List[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fat_b0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=2, help="profiled steps (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    forms = {"released": f"authors:{args.model}", "fatvit": args.model}
    report = {"model": args.model, "batch_size": args.batch_size, "threads": torch.get_num_threads(), "forms": {}}
    for form, name in forms.items():
        kinds = profile_step(name, args.batch_size, args.img_size, args.steps)
        report["forms"][form] = {"total_ms": round(sum(kinds.values()), 1),
                                 "kinds_ms": {k: round(v, 1) for k, v in kinds.items()}}  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
        return report
    released, ours = (report["forms"][f]["kinds_ms"] for f in forms)
    rows = [[kind, f"{released.get(kind, 0.0):.1f}", f"{ours.get(kind, 0.0):.1f}"] for kind in {**released, **ours}]
    rows.append(["total", *(f"{report['forms'][f]['total_ms']:.1f}" for f in forms)])
    print(f"{args.model} training step, batch {args.batch_size} at {args.img_size}x{args.img_size}, "
          f"{report['threads']} threads: self CPU ms per step (profiled)")  # fmt: skip
    print(render_table(["work", "released", "fatvit"], rows))
    return report


if __name__ == "__main__":
    main()
