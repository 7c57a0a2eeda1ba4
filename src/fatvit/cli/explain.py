"""``fatvit explain``: a figure of FASA's gates and attention, and the class activation map, for an image."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Tuple

from ..errors import FatvitError
from ..files import atomic_write, check_output_dir, prepare_output_dir
from ..tasks.classification.config import INFERENCE_KEYS
from .model_options import add_model_options, typed_values

#: Config keys that apply to explanations (one image, on the CPU, channels-first: no data set, batch, workers, device).
EXPLAIN_KEYS = tuple(k for k in INFERENCE_KEYS if k not in ("data", "batch_size", "workers", "device", "channels_last"))


def point(text: str) -> Tuple[float, float]:
    """An argparse type: ``x,y`` in pixels."""
    parts = text.split(",")
    try:
        x, y = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected x,y in pixels (as 120,80), got {text!r}") from None
    return x, y


def add_parser(sub: argparse._SubParsersAction, name: str, help: str) -> None:
    p = sub.add_parser(
        name,
        help=help,
        description=(
            "Writes OUTPUT/<image name>_explain.png: the image as the model sees it, the Grad-CAM of the predicted "
            "class on the last stage, and for the last block of each stage FASA's local and global gates "
            "(sigmoid(X'_local), sigmoid(X'_global), mean over channels) and the global branch's attention from a "
            "query point over the downsampled keys. Preprocessing and class names come from the checkpoint."
        ),
    )
    p.add_argument("image", metavar="IMAGE", help="an image file")
    add_model_options(p, EXPLAIN_KEYS)
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the figure (created if needed)")
    p.add_argument(
        "--point", type=point, default=None, help="attention query x,y in pixels of IMAGE (default: its centre)"
    )
    p.add_argument("--block", type=int, default=-1, help="which block of each stage (default: -1, the last)")
    p.add_argument("--class", dest="target", default=None, help="class name for the CAM (default: the predicted)")
    p.add_argument("--classes", metavar="FILE", help="class names, one per line (for files that record none)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing figure")
    p.add_argument("--json", action="store_true", help="print what was found as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..explain import explain_image, map_notes, plot_explanation
    from ..tasks.classification.inference import is_exported, load_classifier, read_class_names

    image = Path(args.image)
    if not image.is_file():
        raise FatvitError(f"image not found: {image}")
    figure_path = check_output_dir(args.output) / f"{image.stem}_explain.png"
    if figure_path.exists() and not args.overwrite:
        raise FatvitError(f"{figure_path} exists; give --overwrite to replace it")
    if is_exported(args.checkpoint):
        raise FatvitError(f"{args.checkpoint} is an exported model: fatvit explain reads FASA's gates and gradients "
                          "from the PyTorch model (give its .pth or .safetensors)")  # fmt: skip
    classes = read_class_names(args.classes) if args.classes else None
    classifier = load_classifier(
        args.checkpoint, typed_values(args), args.overrides, args.ema, classes, EXPLAIN_KEYS, purpose="explain"
    )
    names = classifier.class_names()
    target = None
    if args.target is not None:
        if args.target not in names:
            raise FatvitError(f"unknown class {args.target!r} (the checkpoint's: {', '.join(names[:10])} ...)")
        target = names.index(args.target)
    found = explain_image(classifier, image, args.point, target, args.block)
    fig = plot_explanation(found, title=f"{classifier.name} on {image.name}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    prepare_output_dir(figure_path.parent)
    with atomic_write(figure_path) as f:
        f.write(buffer.getvalue())
    prob = float(found.probs[found.target])
    if args.json:
        record = {
            "image": str(image),
            "figure": str(figure_path),
            "class": found.target_name,
            "prob": prob,
            "input_point": list(found.point),
            "notes": map_notes(found),
            "stages": [
                {
                    "stage": s.stage,
                    "block": s.block,
                    "local_gate_mean": float(s.local_gate.mean()),
                    "global_gate_mean": float(s.global_gate.mean()),
                    "query_cell": list(s.query),
                }
                for s in found.stages
            ],  # fmt: skip
        }
        print(json.dumps(record, indent=2))
    else:
        print(f"{image}: {found.target_name} ({100 * prob:.1f}%); figure {figure_path}")
    return 0
