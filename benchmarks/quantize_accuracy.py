"""Top-1 and speed that ``fatvit quantize`` gives, on the digits and on a folder data set of synthetic shapes.

Trains FAT-B0 twice with fatvit's own commands, then quantizes each run's
best checkpoint and prints the drop ``fatvit quantize`` measures on the
held-out images (the run's validation images not used for calibration;
``--max-drop 100``, so that a drop over the default 1 point is printed too):

1. the main job (``fatvit train``: the digits recipe, 32x32 images), quantized
   with the default calibration set (the digits' held-out split);
2. an ImageNet-style folder (``train/<class>/*.png``, ``val/<class>/*.png``)
   of colour shapes drawn here (circle, cross, square, triangle; random
   colours, sizes, positions and rotations over noisy backgrounds, 64x64;
   1000 training and 90 validation images a class), trained with the digits
   recipe at 64 px with horizontal flips for 20 epochs and quantized with
   ``--calibration`` on its ``val/`` folder.

Then each data set's float32 file (``fatvit export`` of the same checkpoint)
and int8 file are timed at their own input size, batch 1 and 16, in ONNX
Runtime and in OpenVINO (the ``openvino`` extra; left out without it), all
four in the same interleaved rounds; the speed-ups are over float32 in ONNX
Runtime. ``fatvit benchmark --modes onnxruntime onnxruntime-int8 openvino
openvino-int8`` times the same forms at 224x224 (see the README).

Run alone (two processes on two cores slow both):

    .venv/bin/python benchmarks/quantize_accuracy.py [--work DIR] [--threads 2]

It takes about eight minutes on an AMD EPYC with two cores (about twice as
long on this project's earlier Xeon).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fatvit.cli.format import positive_int

CLASSES = ("circle", "cross", "square", "triangle")
SIDE = 64
#: the drop is printed whatever it is (the default --max-drop would refuse a file over 1 point)
KEEP_ANY_DROP = ("--max-drop", "100")


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list:
    if kind == "triangle":
        corners = [angle + k * 2 * math.pi / 3 for k in range(3)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in corners]
    if kind == "square":
        corners = [angle + math.pi / 4 + k * math.pi / 2 for k in range(4)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in corners]
    # a cross: twelve corners, arms a third of the width
    w = r / 3
    arm = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in arm]


def draw_shape(kind: str, rng: np.random.Generator) -> Image.Image:
    """One image of ``kind`` on a noisy two-colour background."""
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, SIDE)[:, None, None]
    background = top * (1 - ramp) + bottom * ramp + rng.normal(0, 12, (SIDE, SIDE, 3))
    img = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    r = rng.uniform(0.18, 0.38) * SIDE
    cx, cy = rng.uniform(r, SIDE - r, 2)
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=colour)
    return img


def write_shapes(root: Path, n_train: int = 1000, n_val: int = 90, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for kind in CLASSES:
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw_shape(kind, rng).save(folder / f"{i:03d}.png")
    return root


def fatvit(*argv: str) -> str:
    exe = Path(sys.executable).with_name("fatvit")
    done = subprocess.run([str(exe), *argv], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"fatvit {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def time_files(files: dict, side: int, batches: tuple = (1, 16), rounds: int = 20) -> list:
    """Median ms of each (runtime, file) at each batch size, timed in the same interleaved rounds."""
    from fatvit.benchmark import time_interleaved
    from fatvit.export import onnx_session
    from fatvit.runtime import openvino_model

    rows = []
    for batch in batches:
        x = np.random.default_rng(0).standard_normal((batch, 3, side, side), dtype=np.float32)
        runners = {}
        for precision, path in files.items():
            session = onnx_session(path, spinning=False)
            feed = {session.get_inputs()[0].name: x}
            runners[("onnxruntime", precision)] = functools.partial(session.run, None, feed)
            if importlib.util.find_spec("openvino") is not None:
                request = openvino_model(path).create_infer_request()
                runners[("openvino", precision)] = functools.partial(request.infer, {0: x})
        times = time_interleaved(runners, rounds=rounds, warmup=3)
        base = statistics.median(times[("onnxruntime", "float32")])
        for (runtime, precision), values in times.items():
            median = statistics.median(values)
            rows.append((batch, runtime, precision, 1000 * median, base / median))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--threads", type=positive_int, default=2, help="threads of each runtime (default: 2)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="fatvit-quantize-accuracy-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        shapes = write_shapes(work / "shapes")
        runs = [
            ("digits (main job, 32 px)", 32, [], []),
            (f"shapes folder ({SIDE} px)", SIDE,
             ["--config", "digits", "--data", str(shapes), "--img-size", str(SIDE), "--epochs", "20", "--set",
              "hflip=0.5"], ["--calibration", str(shapes)]),
        ]  # fmt: skip
        accuracy, speed = [], []
        for i, (name, side, train, calibration) in enumerate(runs):
            run, fp32, int8 = work / f"run{i}", work / f"run{i}.onnx", work / f"run{i}.int8.onnx"
            fatvit("train", *train, "--output", str(run), "--overwrite")
            out = fatvit("quantize", "--checkpoint", str(run / "best.pth"), *calibration, "--output", str(int8),
                         "--overwrite", "--json", *KEEP_ANY_DROP)  # fmt: skip
            accuracy.append((name, json.loads(out)))
            fatvit("export", "--checkpoint", str(run / "best.pth"), "--output", str(fp32), "--overwrite")
            speed.extend((name, *row) for row in time_files({"float32": fp32, "int8": int8}, side))
    print("| data | held-out images | top-1 fp32 | top-1 int8 | drop (points) | predictions differing |")
    print("|---|---|---|---|---|---|")
    for name, r in accuracy:
        print(f"| {name} | {r['images']} | {r['top1_fp32']:.2f} | {r['top1_int8']:.2f} | {r['drop']:.2f} | "
              f"{r['differing']} |")  # fmt: skip
    print(f"\n{args.threads} threads; median ms of 20 interleaved rounds; speed-up over float32 in ONNX Runtime\n")
    print("| data | batch | runtime | precision | ms | speed-up |")
    print("|---|---|---|---|---|---|")
    for name, batch, runtime, precision, ms, ratio in speed:
        print(f"| {name} | {batch} | {runtime} | {precision} | {ms:.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
