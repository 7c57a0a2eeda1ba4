"""``fatvit detect train|eval|predict|export``: RetinaNet and Mask R-CNN on FAT backbones, COCO data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict

from ..catalog import DETECTORS
from ..config import parse_settings
from ..errors import FatvitError
from ..tasks.detection.config import SETTINGS, DetectConfig
from .dense import (
    add_eval_options,
    add_export_options,
    add_predict_options,
    add_task_parsers,
    check_device,
    checked_file,
    finished_line,
    model_of,
    output_paths,
    predict_each,
    save_png,
    trained_line,
    workers_of,
)  # fmt: skip
from .format import render_table
from .train import add_training_arguments, run_training

DATA_HELP = (
    "a COCO root: train2017/, val2017/ and annotations/instances_{train,val}2017.json (or train/, val/ and "
    "instances_{train,val}.json); default: the embedded digit scenes"
)

#: The largest differences from PyTorch that ``detect export``'s check accepts: scores, and boxes in pixels.
SCORE_TOLERANCE, BOX_TOLERANCE = 1e-4, 1e-2

#: What a flag of other verbs is here: how detection sizes its images.
UNKNOWN_HINTS = {"--img-size": " (detection images are resized by the config keys min_size and max_size: "
                               "--set min_size=N --set max_size=N)"}  # fmt: skip


DESCRIPTION = (
    "COCO object detection and instance segmentation with the paper's detectors on FAT backbones: "
    f"{', '.join(DETECTORS)}. Without --data, the embedded digit scenes (scikit-learn's handwritten "
    "digits pasted on canvases, written in COCO format)."
)

#: The actions of ``fatvit detect``: their line in its --help, and their own description.
ACTIONS = {
    "train": (
        "train a detector",
        f"Train a detector on a COCO data set ({DATA_HELP}) with the paper's 1x recipe, or, without --data, "
        "on the embedded digit scenes (recipe digit_scenes_detect). Launch with torchrun for DDP.",
    ),
    "eval": (
        "COCO box (and mask) AP of a trained detector",
        "COCOeval's tables (pycocotools) for a trained detector on a COCO split; --json for scripts.",
    ),
    "predict": (
        "draw a detector's boxes, labels, scores and masks on images",
        "Run a trained detector on image files and folders: prints each detection (image, class, score, "
        "box corners in pixels of the image; --json: one record per image), and writes each image with its "
        "detections drawn (at least 512 px on its shorter side, a colour per class, a legend) as OUTPUT/<name>.png.",
    ),
    "export": (
        "a trained RetinaNet as ONNX, checked against PyTorch",
        "Writes a trained RetinaNet as ONNX by torchvision's ONNX path (PyTorch's TorchScript-based "
        "exporter), whole: resizing and normalisation, the backbone in its deployed form (BatchNorm and residuals "
        "folded), FPN, head, box decoding and NMS. Input 'image': one 3 x H x W RGB image in [0, 1], any size; "
        "outputs 'boxes' (x1 y1 x2 y2 in the input's pixels), 'scores', 'labels'. The classes, category ids and "
        "image sizes go into the file's metadata. The file is run with ONNX Runtime on a fixed image set (--images, "
        "else seeded random images of three sizes) against PyTorch: the same detections, scores within "
        f"{SCORE_TOLERANCE:g} and boxes within {BOX_TOLERANCE:g} px, or it is not written. Mask R-CNN is not "
        "exported.",
    ),
}


def add_parser(sub: argparse._SubParsersAction, name: str, help: str) -> None:
    parsers = add_task_parsers(sub, name, help, DESCRIPTION, ACTIONS)
    add_training_arguments(parsers["train"], DetectConfig, ("digit_scenes_detect", "coco_retinanet_1x"),
                           f"one of {', '.join(DETECTORS)}",
                           "coco_retinanet_1x, or coco_mask_rcnn_1x for a mask_rcnn model,")  # fmt: skip
    parsers["train"].set_defaults(run=run_train, unknown_hints=UNKNOWN_HINTS)
    add_eval_options(parsers["eval"], DATA_HELP, SETTINGS)
    parsers["eval"].add_argument(
        "--padded-batches", action="store_true",
        help="run each batch as one forward, its images padded to the largest (faster with mixed sizes; FAT's "
        "global norm and attention then see the padding, so an image's detections depend on the images batched "
        "with it). Default: one forward per image size in a batch, each image scored as alone",
    )  # fmt: skip
    parsers["eval"].set_defaults(run=run_eval)
    add_predict_options(parsers["predict"], SETTINGS)
    parsers["predict"].add_argument("--score-threshold", type=float, default=0.5, metavar="SCORE",
                                    help="draw and list the detections scoring at least this, in [0, 1] (default: "
                                    "0.5)")  # fmt: skip
    parsers["predict"].set_defaults(run=run_predict)
    add_export_options(parsers["export"])
    parsers["export"].add_argument("--images", nargs="+", metavar="IMAGE_OR_DIR",
                                   help="image files and folders to check on")  # fmt: skip
    parsers["export"].set_defaults(run=run_export)


def default_recipe(args: argparse.Namespace) -> str:
    if args.data is None and not any(o.partition("=")[0].strip() == "data" for o in args.overrides):
        return "digit_scenes_detect"
    model = model_of(args) or "retinanet"
    return "coco_mask_rcnn_1x" if model.startswith("mask_rcnn") else "coco_retinanet_1x"


def run_train(args: argparse.Namespace) -> int:
    recipe = None if args.resume else (args.config or default_recipe(args))
    return run_training(
        args, DetectConfig, recipe, "fatvit detect train",
        lambda s: finished_line(
            s, f"box AP {s['final_metrics']['bbox_AP']:.3f} AP50 {s['final_metrics']['bbox_AP50']:.3f}"
            + (f", mask AP {s['final_metrics']['segm_AP']:.3f}" if "segm_AP" in s["final_metrics"] else ""),
            "bbox_AP", "box AP",
        ),
    )  # fmt: skip


def run_eval(args: argparse.Namespace) -> int:
    from ..tasks.detection.inference import evaluate_checkpoint

    settings = parse_settings(args.overrides, SETTINGS, DetectConfig, "detect eval")
    device = check_device(args.device)
    metrics, text = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        args.split,
        args.batch_size,
        workers_of(args),
        device,
        args.ema,
        args.amp,
        settings,
        args.padded_batches,
    )
    if args.json:
        print(json.dumps({k: (None if v != v else v) for k, v in metrics.items()}, indent=2))
    else:
        print(text)
        print(
            f"{metrics['images']} images"
            + (f", {metrics['skipped_images']} unreadable" if metrics["skipped_images"] else "")
        )
        print(trained_line(args.checkpoint, metrics))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from torchvision.transforms.v2.functional import pil_to_tensor

    from ..errors import FatvitError
    from ..tasks.detection.inference import load_detector
    from ..tasks.detection.predict import detect_images, draw_detections

    if not 0 <= args.score_threshold <= 1:
        raise FatvitError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    settings = parse_settings(args.overrides, SETTINGS, DetectConfig, "detect predict")
    device = check_device(args.device)
    pairs = output_paths(args.inputs, args.output, args.overwrite)  # refused before the model is loaded
    model, meta = load_detector(args.checkpoint, args.ema, settings)
    classes, offset, threshold = meta["classes"], model.label_offset, args.score_threshold

    def predict(path: Path, image: Any, drawn: Path) -> Dict[str, Any]:
        (output,) = detect_images(model, [image], device)
        save_png(draw_detections(pil_to_tensor(image), output, classes, offset, threshold), drawn)
        keep = output["scores"] >= threshold
        found = zip(output["labels"][keep], output["scores"][keep], output["boxes"][keep])
        return dict(path=str(path), drawn=str(drawn), detections=[
            dict(label=classes[int(lab) - offset], score=round(float(s), 4), box=[round(float(v), 1) for v in box])
            for lab, s, box in found
        ])  # fmt: skip

    records = predict_each(pairs, args.output, predict, args.workers)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    rows = [[r["path"], d["label"], f"{d['score']:.2f}", *(f"{v:.1f}" for v in d["box"])]
            for r in records for d in r["detections"]]  # fmt: skip
    if rows:
        print(render_table(["image", "class", "score", "x0", "y0", "x1", "y1"], rows))
    for r in records:
        if not r["detections"]:
            print(f"{r['path']}: no detection scoring at least {args.score_threshold:g}")
    print(f"{len(rows)} detections in {len(records)} images; drawn in {args.output}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..files import check_output_file
    from ..tasks.classification.predict import find_images
    from ..tasks.detection.export import check_detector_onnx, check_detector_opset, check_images, export_detector
    from ..tasks.detection.inference import load_detector

    # everything that can be refused is, before the model is loaded and exported
    output = check_output_file(args.output, "--output", args.overwrite)
    check_detector_opset(args.opset, "--opset")
    images = check_images(find_images(args.images) if args.images else [])
    model, meta = load_detector(args.checkpoint, args.ema)
    keys = ("model", "model_kwargs", "num_classes", "classes", "category_ids", "min_size", "max_size",
            "detections_per_img", "score_thresh", "mean", "std")  # fmt: skip
    metadata = {k: meta[k] for k in keys if k in meta}
    metadata.update(task="detect", label_offset=model.label_offset, weights=str(args.checkpoint))
    with checked_file(output) as partial:
        export_detector(model, partial, opset=args.opset, metadata=metadata)
        records = check_detector_onnx(partial, model, images)
        bad = [r for r in records if not r["labels_equal"] or r["max_score_diff"] > SCORE_TOLERANCE
               or r["max_box_diff"] > BOX_TOLERANCE]  # fmt: skip
        if bad:
            r = bad[0]
            raise FatvitError(
                f"ONNX Runtime's detections differ from PyTorch's on {r['image']} ({r['detections']} detections, "
                f"labels {'equal' if r['labels_equal'] else 'differ'}, scores by {r['max_score_diff']:.2e}, boxes by "
                f"{r['max_box_diff']:.2e} px); {output} not written"
            )
    if args.json:
        print(json.dumps(dict(output=str(output), opset=args.opset, checks=records), indent=2))
    else:
        print(f"{output}: {meta['model']}, opset {args.opset}, one image of any size")
        rows = [[r["image"], "x".join(map(str, r["size"])), r["detections"], f"{r['max_score_diff']:.2e}",
                 f"{r['max_box_diff']:.2e}"] for r in records]  # fmt: skip
        print(render_table(["image", "HxW", "detections", "max |score diff|", "max |box diff| (px)"], rows))
    return 0
