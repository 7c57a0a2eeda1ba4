"""CPU inference latency of the dense models on FAT-B0 against the same models on timm's resnet18.

RetinaNet, Mask R-CNN (80 classes) and Semantic FPN (150 classes), batch 1,
in eval mode, at 800x1333 (COCO's test size) and 512x512, every model of a
size and every mode measured interleaved in one run, median over rounds,
with the ratio of each FAT-B0 model to its resnet18 twin in the same mode
and of each mode to eager PyTorch. The detectors run end to end (resizing,
backbone, FPN, heads, box decoding and NMS) on random weights; only ratios
are meaningful across machines. Modes:

- ``eager``: the model as built, in PyTorch;
- ``deployed``: :func:`fatvit.deploy` of it (FAT's BatchNorms and residuals
  folded, 1x1 convs as matrix products, channels-last); resnet18 has nothing
  for it to fold, so its twin is only made channels-last;
- ``onnxruntime``: the file ``fatvit detect export`` / ``fatvit segment
  export`` writes (deployed backbone), run by ONNX Runtime on as many threads
  (ONNX Runtime folds resnet18's BatchNorms itself);
- ``openvino``: the same file compiled by OpenVINO for the CPU (latency hint,
  float32, as many threads; ``pip install 'fatvit[openvino]'``).

Mask R-CNN is not exported, so it has no row in the two runtimes.

    python benchmarks/dense_latency.py
    python benchmarks/dense_latency.py --sizes 512x512 --rounds 5 --threads 2 --modes eager onnxruntime openvino
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from fatvit import deploy
from fatvit.benchmark import time_interleaved
from fatvit.cli.format import render_table
from fatvit.tasks.detection.models import build_detector
from fatvit.tasks.segmentation.models import build_segmenter

HEADS = ("retinanet", "mask_rcnn", "semantic_fpn")
BACKBONES = ("fat_b0", "resnet18")
MODES = ("eager", "deployed", "onnxruntime", "openvino")


def _size(text: str) -> tuple:
    h, _, w = text.partition("x")
    return int(h), int(w)


def _runner(head: str, backbone: str, height: int, width: int, mode: str, folder: Path) -> Optional[tuple]:
    """(model, call) for one model in one mode; None where the mode does not apply (Mask R-CNN in a runtime)."""
    name = f"{head}_{backbone}"
    if head == "semantic_fpn":
        model = build_segmenter(name).eval()
        x = torch.rand(1, 3, height, width)
    else:
        side = min(height, width), max(height, width)
        model = build_detector(name, min_size=side[0], max_size=side[1]).eval()
        x = [torch.rand(3, height, width)]
    if mode == "eager":
        return model, lambda: model(x)
    if mode == "deployed":
        fast = deploy(model)
        return model, lambda: fast(x)
    if head == "mask_rcnn":
        return None
    from fatvit.export import export_onnx, onnx_session

    path = folder / f"{name}.onnx"
    if head == "semantic_fpn":
        export_onnx(model, path, img_size=64)
        feed = {"image": x.numpy()}
    else:
        from fatvit.tasks.detection.export import export_detector

        export_detector(model, path)
        feed = {"image": x[0].numpy()}
    if mode == "openvino":
        from fatvit.runtime import openvino_model

        compiled = openvino_model(path, torch.get_num_threads())
        request = compiled.create_infer_request()
        return model, lambda: request.infer(feed)
    session = onnx_session(path, threads=torch.get_num_threads(), spinning=False)  # turns with PyTorch
    return model, lambda: session.run(None, feed)


def main(argv: List[str] | None = None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["800x1333", "512x512"], help="HxW input sizes")
    parser.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--rounds", type=int, default=3, help="timed calls per model (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            height, width = _size(size)
            runners: Dict[str, Callable[[], object]] = {}
            params: Dict[str, float] = {}
            for head in args.heads:
                for backbone in BACKBONES:
                    for mode in args.modes:
                        built = _runner(head, backbone, height, width, mode, Path(tmp))
                        if built is None:
                            continue
                        model, runners[f"{head}_{backbone}/{mode}"] = built
                        params[f"{head}_{backbone}"] = sum(p.numel() for p in model.parameters()) / 1e6
            times = {k: statistics.median(v) for k, v in time_interleaved(runners, args.rounds, args.warmup).items()}
            for head in args.heads:
                for mode in args.modes:
                    twin = times.get(f"{head}_resnet18/{mode}")
                    for backbone in BACKBONES:
                        name = f"{head}_{backbone}"
                        median = times.get(f"{name}/{mode}")
                        if median is None:
                            continue
                        eager = times.get(f"{name}/eager")
                        rows.append(dict(model=name, head=head, backbone=backbone, mode=mode, input=f"{height}x{width}",
                                         params_m=round(params[name], 2), median_ms=round(1000 * median, 1),
                                         ratio_to_resnet18=round(median / twin, 3),
                                         ratio_to_eager=round(median / eager, 3) if eager else None))  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"CPU latency, batch 1, {torch.get_num_threads()} threads, median of {args.rounds} interleaved calls")
        table = [[r["model"], r["mode"], r["input"], r["params_m"], r["median_ms"], f"{r['ratio_to_resnet18']:.2f}",
                  "-" if r["ratio_to_eager"] is None else f"{r['ratio_to_eager']:.2f}"] for r in rows]  # fmt: skip
        headers = ["model", "mode", "input", "params (M)", "median ms", "x resnet18 twin", "x eager"]
        print(render_table(headers, table))
    return rows


if __name__ == "__main__":
    main()
