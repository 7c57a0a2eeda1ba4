"""Top-1 that ``fatvit quantize`` loses, on the digits and on a folder data set of synthetic shapes.

Trains FAT-B0 twice with fatvit's own commands, then quantizes each run's
best checkpoint and prints the drop ``fatvit quantize`` measures on the
held-out images (the run's validation images not used for calibration;
``--max-drop 100``, so that a drop over the default 1 point is printed too):

1. the main job (``fatvit train``: the digits recipe, 32x32 images), quantized
   with the default calibration set (the digits' held-out split);
2. an ImageNet-style folder (``train/<class>/*.png``, ``val/<class>/*.png``)
   of colour shapes drawn here (circle, cross, square, triangle; random
   colours, sizes, positions and rotations over noisy backgrounds, 64x64),
   trained with the digits recipe at 64 px for 20 epochs (400 images a class) and quantized with
   ``--calibration`` on its ``val/`` folder.

Run alone (two processes on two cores slow both):

    .venv/bin/python benchmarks/quantize_accuracy.py [--work DIR]

It takes about twelve minutes on this project's two CPU cores. The speed of the
int8 file is measured by ``fatvit benchmark --modes onnxruntime
onnxruntime-int8`` (see the README).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

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


def write_shapes(root: Path, n_train: int = 400, n_val: int = 90, seed: int = 0) -> Path:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fatvit-quantize-accuracy-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        fatvit("train", "--output", str(work / "digits"), "--overwrite")
        out = fatvit("quantize", "--checkpoint", str(work / "digits" / "best.pth"), "--output",
                     str(work / "digits.int8.onnx"), "--overwrite", "--json", *KEEP_ANY_DROP)  # fmt: skip
        rows.append(("digits (main job, 32 px)", json.loads(out)))
        shapes = write_shapes(work / "shapes")
        fatvit("train", "--config", "digits", "--data", str(shapes), "--img-size", str(SIDE), "--epochs", "20",
               "--output",
               str(work / "shapes-run"), "--overwrite")  # fmt: skip
        out = fatvit("quantize", "--checkpoint", str(work / "shapes-run" / "best.pth"), "--calibration", str(shapes),
                     "--output", str(work / "shapes.int8.onnx"), "--overwrite", "--json", *KEEP_ANY_DROP)  # fmt: skip
        rows.append((f"shapes folder ({SIDE} px)", json.loads(out)))
    print("| data | held-out images | top-1 fp32 | top-1 int8 | drop (points) | predictions differing |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['images']} | {r['top1_fp32']:.2f} | {r['top1_int8']:.2f} | {r['drop']:.2f} | "
              f"{r['differing']} |")  # fmt: skip


if __name__ == "__main__":
    main()
