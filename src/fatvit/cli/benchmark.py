"""``fatvit benchmark``: CPU latency and throughput of FAT and peers, in every execution mode, side by side."""

from __future__ import annotations

import argparse
import json
import sys

from ..catalog import ALL_MODES, AUTHORS_PREFIX, DEFAULT_MODELS, MODES
from ..errors import FatvitError
from ..files import check_output_file
from .format import positive_int, render_table


def add_parser(sub: argparse._SubParsersAction, name: str, help: str) -> None:
    p = sub.add_parser(
        name,
        help=help,
        description=(
            "Times each model in each mode at each batch size. Within a mode and batch size all models run in the "
            "same rounds, interleaved in a shuffled order; the median over rounds is printed with its quartiles and "
            "the ratio to the baseline model measured in that same mode and batch. Modes: eager (the model as "
            "built), deployed (fatvit.deploy for FAT; timm's reparameterize_model and channels-last for peers), "
            "compiled (torch.compile of the deployed form, frozen weights), onnxruntime (ONNX export of the "
            "deployed form, ONNX Runtime CPU) and, when asked for, onnxruntime-int8 (that file quantized to int8 "
            "as fatvit quantize does, calibrated on random batches, ONNX Runtime CPU) and openvino (the same ONNX "
            "file compiled by OpenVINO for the CPU, latency hint, --threads threads, outputs checked against "
            "PyTorch) and openvino-int8 (the int8 file compiled by OpenVINO, whose int8 kernels run its "
            "convolutions); the OpenVINO modes need pip install "
            f"'fatvit[openvino]'. {AUTHORS_PREFIX}fat_b0 runs FAT-B0 as the authors' released code "
            "does (in deployed mode too: it has no inference form). Weights are random: only speed is measured."
        ),
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        metavar="NAME",
        help=f"FAT sizes, {AUTHORS_PREFIX}SIZE, timm model names (default: {' '.join(DEFAULT_MODELS)})",
    )
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=ALL_MODES, metavar="MODE",
                   help=f"{', '.join(ALL_MODES)} (default: {' '.join(MODES)})")  # fmt: skip
    p.add_argument("--batch-sizes", nargs="+", type=positive_int, default=[1, 16], metavar="N",
                   help="batch sizes (default: 1 16)")  # fmt: skip
    p.add_argument("--rounds", type=positive_int, default=20, help="timed rounds (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default: 3)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: torch's choice)")
    p.add_argument("--img-size", type=positive_int, default=224, help="input side (default: 224)")
    p.add_argument("--native-size", action="store_true", help="run each peer at its pretrained resolution")
    p.add_argument("--baseline", default=None, help="model the ratios are to (default: the first of --models)")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    p.add_argument("--plot", metavar="FILE.png", default=None,
                   help="also write a plot of ImageNet top-1 against latency (batch 1, or the smallest)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..benchmark import plot_latency, run_benchmark

    plot = check_output_file(args.plot, "--plot", args.overwrite) if args.plot else None
    if args.warmup < 0:
        raise FatvitError(f"--warmup must be 0 or more, got {args.warmup}")
    if args.threads:
        torch.set_num_threads(args.threads)
    models = list(dict.fromkeys(args.models))

    def progress(line: str) -> None:
        print(f"fatvit: {line}", file=sys.stderr)

    records = run_benchmark(
        models,
        modes=args.modes,
        batch_sizes=args.batch_sizes,
        rounds=args.rounds,
        warmup=args.warmup,
        img_size=args.img_size,
        native_size=args.native_size,
        baseline=args.baseline,
        progress=progress if not args.json else None,
    )
    if plot is not None:
        plot_latency(records, plot, batch=min(args.batch_sizes))
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    baseline = args.baseline or models[0]
    print(f"CPU, {torch.get_num_threads()} threads; median of {args.rounds} interleaved rounds, quartiles in brackets")
    for mode in args.modes:
        for batch in args.batch_sizes:
            rows = [r for r in records if r["mode"] == mode and r["batch"] == batch]
            table = [
                [r["model"], r["input"], f"{r['params_m']:.2f}", f"{r['median_ms']:.2f}",
                 f"[{r['p25_ms']:.2f}, {r['p75_ms']:.2f}]", f"{r['images_per_s']:.1f}",
                 "-" if r["ratio"] is None else f"{r['ratio']:.2f}", "-" if r["top1"] is None else f"{r['top1']:.1f}"]
                for r in rows
            ]  # fmt: skip
            print(f"\n{mode}, batch {batch}")
            headers = ["model", "input", "params (M)", "median ms", "quartiles", "img/s", f"x {baseline}", "top-1"]
            print(render_table(headers, table))
    if plot is not None:
        print(f"\nplot: {plot}")
    return 0
