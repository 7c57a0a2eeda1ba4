"""``fatvit segment train|eval|predict|export``: Semantic FPN on FAT backbones, data in the ADE20K layout."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict

from ..catalog import SEGMENTERS
from ..config import parse_settings
from ..errors import FatvitError
from ..tasks.segmentation.config import SETTINGS, SegmentConfig
from .dense import (
    add_eval_options,
    add_export_options,
    add_predict_options,
    add_task_parsers,
    check_device,
    checked_file,
    finished_line,
    output_paths,
    predict_each,
    save_png,
    trained_line,
    workers_of,
)
from .format import render_table
from .train import add_training_arguments, run_training

DATA_HELP = (
    "a folder in the ADE20K layout: images/{training,validation}/*.jpg and annotations/{training,validation}/"
    "*.png (0 ignored, classes 1..N; class names in classes.txt or objectInfo150.txt); default: the embedded "
    "digit scenes"
)

#: The largest difference from PyTorch's logits (max abs, float32) that ``segment export``'s check accepts.
TOLERANCE = 1e-4

#: Input sizes (batch, height, width) ``segment export`` checks: square, odd, batched and small.
CHECK_SHAPES = ((1, 128, 128), (2, 97, 131), (1, 64, 48))

#: What a flag of other verbs is here: how segmentation sizes its images.
UNKNOWN_HINTS = {"--img-size": " (segmentation images are sized by the config keys scale, ratio_range and "
                               "crop_size: --set crop_size=N)"}  # fmt: skip


DESCRIPTION = (
    f"Semantic segmentation with Semantic FPN on FAT backbones: {', '.join(SEGMENTERS)}. Without --data, "
    "the embedded digit scenes (written in the ADE20K layout)."
)

#: The actions of ``fatvit segment``: their line in its --help, and their own description.
ACTIONS = {
    "train": (
        "train a segmenter",
        f"Train a segmenter on {DATA_HELP.split('; default')[0]} with the paper's ADE20K recipe, or, without "
        "--data, on the embedded digit scenes (recipe digit_scenes_segment). Launch with torchrun for DDP.",
    ),
    "eval": (
        "mIoU, mAcc, aAcc and per-class IoU of a trained segmenter",
        "The mIoU table of a trained segmenter on a split, as mmseg computes it (one confusion matrix "
        "over the split, ignore index 255); --json for scripts.",
    ),
    "predict": (
        "draw a segmenter's class map on images",
        "Run a trained segmenter on image files and folders: prints the classes found in each image with "
        "their share of the pixels, and writes each image with its predicted classes overlaid (at least 512 px on "
        "its shorter side, a colour per class, a legend) as OUTPUT/<name>.png.",
    ),
    "export": (
        "a trained segmenter as ONNX, checked against PyTorch",
        "Writes a trained Semantic FPN, its backbone in the deployed form (BatchNorm and residuals "
        "folded), as ONNX with PyTorch's torch.export-based exporter; batch, height and width are dynamic. Input "
        "'image': N x 3 x H x W, RGB normalised with the metadata's mean and std (resized as its scale says); output "
        "'logits': N x classes x H x W. The classes and preprocessing go into the file's metadata. The file is run "
        f"with ONNX Runtime on {len(CHECK_SHAPES)} input sizes against PyTorch: a difference over {TOLERANCE:g} is "
        "an error, and the file is not written.",
    ),
}


def add_parser(sub: argparse._SubParsersAction, name: str, help: str) -> None:
    parsers = add_task_parsers(sub, name, help, DESCRIPTION, ACTIONS)
    add_training_arguments(parsers["train"], SegmentConfig, ("digit_scenes_segment", "ade20k_semantic_fpn"),
                           f"one of {', '.join(SEGMENTERS)}")  # fmt: skip
    parsers["train"].set_defaults(run=run_train, unknown_hints=UNKNOWN_HINTS)
    e = parsers["eval"]
    add_eval_options(e, DATA_HELP, SETTINGS, batches=False)  # images are scored one at a time, each at its own size
    e.add_argument("--mode", choices=("whole", "slide"), help="inference: whole image or sliding window "
                   "(default: as the checkpoint records)")  # fmt: skip
    e.set_defaults(run=run_eval)
    add_predict_options(parsers["predict"], SETTINGS)
    parsers["predict"].add_argument("--draw-background", action="store_true",
                                    help="also colour the class named 'background'")  # fmt: skip
    parsers["predict"].set_defaults(run=run_predict)
    x = parsers["export"]
    add_export_options(x)
    x.set_defaults(run=run_export)


def run_train(args: argparse.Namespace) -> int:
    given_data = args.data is not None or any(o.partition("=")[0].strip() == "data" for o in args.overrides)
    recipe = None if args.resume else (args.config or ("ade20k_semantic_fpn" if given_data else "digit_scenes_segment"))
    return run_training(
        args, SegmentConfig, recipe, "fatvit segment train",
        lambda s: finished_line(s, f"mIoU {s['final_metrics']['mIoU']:.3f}", "mIoU", "mIoU"),
    )  # fmt: skip


def run_eval(args: argparse.Namespace) -> int:
    from ..tasks.segmentation.inference import evaluate_checkpoint

    settings = parse_settings(args.overrides, SETTINGS, SegmentConfig, "segment eval")
    device = check_device(args.device)
    result = evaluate_checkpoint(
        args.checkpoint, args.data, args.split, workers_of(args), device, args.ema, args.mode, args.amp, settings
    )
    classes = result.pop("classes")
    if args.json:
        per_class = dict(zip(classes, result.pop("per_class_iou")))
        result.pop("per_class_acc")
        out = {k: (None if v != v else v) for k, v in result.items()}
        out["per_class_iou"] = {k: (None if v != v else v) for k, v in per_class.items()}
        print(json.dumps(out, indent=2))
        return 0
    rows = [[name, _pct(iou), _pct(acc)] for name, iou, acc in zip(classes, result["per_class_iou"],
                                                                    result["per_class_acc"])]  # fmt: skip
    print(render_table(["class", "IoU (%)", "Acc (%)"], rows))
    skipped = f", {result['skipped_images']} unreadable" if result["skipped_images"] else ""
    print(f"mIoU {_pct(result['mIoU'])}  mAcc {_pct(result['mAcc'])}  aAcc {_pct(result['aAcc'])}  "
          f"({result['images']} images{skipped})")  # fmt: skip
    print(trained_line(args.checkpoint, result))
    return 0


def _pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.2f}"


def run_predict(args: argparse.Namespace) -> int:
    from ..tasks.segmentation.inference import load_segmenter
    from ..tasks.segmentation.predict import draw_classes, segment_image

    settings = parse_settings(args.overrides, SETTINGS, SegmentConfig, "segment predict")
    device = check_device(args.device)
    pairs = output_paths(args.inputs, args.output, args.overwrite)  # refused before the model is loaded
    model, meta = load_segmenter(args.checkpoint, args.ema, settings)
    classes = list(meta.get("classes") or [f"class_{i}" for i in range(int(meta["num_classes"]))])
    skip = [] if args.draw_background else [i for i, c in enumerate(classes) if c == "background"]

    def predict(path: Path, image: Any, drawn: Path) -> Dict[str, Any]:
        pixels, class_map = segment_image(model, meta, image, device)
        save_png(draw_classes(pixels, class_map, classes, skip), drawn)
        shares = class_shares(class_map, len(classes))
        return dict(path=str(path), drawn=str(drawn), classes={classes[c]: round(n, 4) for c, n in shares.items()})

    records = predict_each(pairs, args.output, predict, args.workers)
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        for r in records:
            top = sorted(r["classes"].items(), key=lambda kv: -kv[1])[:5]
            print(
                f"{r['path']}: " + ", ".join(f"{name} {100 * share:.1f}%" for name, share in top) + f" -> {r['drawn']}"
            )
    return 0


def class_shares(class_map, num_classes: int) -> dict:  # noqa: ANN001 - a HxW tensor
    """The share of the pixels of each class present in a class map."""
    import torch

    counts = torch.bincount(class_map.reshape(-1), minlength=num_classes).double()
    shares = counts / counts.sum()
    return {c: float(shares[c]) for c in range(num_classes) if counts[c] > 0}


def run_export(args: argparse.Namespace) -> int:
    from ..export import check_onnx, check_opset, export_onnx
    from ..files import check_output_file
    from ..tasks.segmentation.inference import load_segmenter

    output = check_output_file(args.output, "--output", args.overwrite)
    check_opset(args.opset, "--opset")
    model, meta = load_segmenter(args.checkpoint, args.ema)
    keys = ("model", "model_kwargs", "num_classes", "classes", "mean", "std", "scale", "reduce_zero_label",
            "test_mode", "crop_size", "test_stride")  # fmt: skip
    metadata = {k: meta[k] for k in keys if k in meta}
    metadata.update(task="segment", weights=str(args.checkpoint))
    with checked_file(output) as partial:
        export_onnx(model, partial, img_size=64, opset=args.opset, metadata=metadata)
        records = check_onnx(partial, model, CHECK_SHAPES)
        worst = max(r["max_abs_diff"] for r in records)
        if worst > TOLERANCE:
            raise FatvitError(f"ONNX Runtime's logits differ from PyTorch's by {worst:.2e} (over {TOLERANCE:g}); "
                              f"{output} not written")  # fmt: skip
    if args.json:
        print(json.dumps(dict(output=str(output), opset=args.opset, checks=records), indent=2))
    else:
        print(f"{output}: {meta['model']}, opset {args.opset}, dynamic batch and size")
        rows = [["x".join(map(str, r["shape"])), f"{r['max_abs_diff']:.2e}"] for r in records]
        print(render_table(["input", "max |ONNX Runtime - PyTorch|"], rows))
    return 0
