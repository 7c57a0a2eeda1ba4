"""``fatvit quantize``: a classifier as an int8 ONNX file, calibrated on images and refused if it loses top-1."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ..catalog import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_DROP, DEFAULT_OPSET, QUANTIZED_OPS
from ..errors import FatvitError
from ..files import check_output_file
from .format import non_negative_int, positive_int


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"expected a number of 0 or more, got {text!r}")
    return value


def add_parser(sub: argparse._SubParsersAction, name: str, help: str) -> None:
    p = sub.add_parser(
        name,
        help=help,
        description=(
            "Exports the model as float32 ONNX (as fatvit export does; an .onnx file from fatvit export is taken as "
            "it is), then quantizes it with ONNX Runtime's static quantization: QDQ format, int8 weights per output "
            "channel, uint8 activations (U8S8, the fast form on x86) with min-max ranges from --calibration-images "
            "images of the calibration folder (a seeded choice). The other images of the folder are held out: both "
            "files classify each of them, and the int8 file is written only if its top-1 there is at most --max-drop "
            "points below the float32 one's; the drop is printed either way. The file keeps the model's classes and "
            "preprocessing in its metadata, with the quantization's record: fatvit eval, predict and benchmark run "
            "it. Needs pip install 'fatvit[onnx]'."
        ),
    )
    p.add_argument("--checkpoint", required=True, help="weights: .pth (fatvit or the authors') or .safetensors, or "
                   "a float32 .onnx file from fatvit export")  # fmt: skip
    p.add_argument("--ema", action="store_true", help="use the EMA weights of a training checkpoint")
    p.add_argument("--calibration", metavar="DIR", default=None,
                   help="labelled images: DIR/<class>/*, or DIR/val/<class>/* where DIR has val/, valid/, "
                   "validation/, eval/ or evaluation/ (default: the digits held-out split)")  # fmt: skip
    p.add_argument("--calibration-images", type=positive_int, default=DEFAULT_CALIBRATION_IMAGES, metavar="N",
                   help=f"images calibrated on; the rest are held out (default: "
                   f"{DEFAULT_CALIBRATION_IMAGES})")  # fmt: skip
    p.add_argument("--max-drop", type=_non_negative_float, default=DEFAULT_MAX_DROP, metavar="POINTS",
                   help="largest top-1 drop on the held-out images, in percentage points, for which the file is "
                   f"written (default: {DEFAULT_MAX_DROP:g})")  # fmt: skip
    p.add_argument("--op-types", nargs="+", default=list(QUANTIZED_OPS), metavar="OP",
                   help=f"ONNX operators to quantize (default: {' '.join(QUANTIZED_OPS)})")  # fmt: skip
    p.add_argument("--output", required=True, metavar="FILE.onnx", help="the int8 ONNX file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per batch (default: 16)")
    p.add_argument("--workers", type=non_negative_int, default=0, help="loader processes (default: 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (keys output, model, "
                   "calibration, calibration_images, op_types, images, top1_fp32, top1_int8, drop, differing, "
                   "skipped_images)")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torch.utils.data import Subset

    from ..data import ResumableSampler, SeededDataset, make_loader
    from ..export import require_onnx, write_onnx
    from ..quantize import compare_top1, quantize_onnx, split_calibration
    from ..runtime import RuntimeModel
    from ..tasks.classification.inference import is_exported, load_exported
    from .eval import check_classes, open_validation
    from .export import export_checked, load_for_export, onnx_metadata

    output = check_output_file(args.output, "--output", args.overwrite)
    onnx = require_onnx()
    val, where = open_validation(args.calibration)
    calibration, held_out = split_calibration(len(val), args.calibration_images)
    with tempfile.TemporaryDirectory(prefix="fatvit-quantize-") as tmp:
        if is_exported(args.checkpoint):
            if args.ema:
                raise FatvitError(f"{args.checkpoint} is an exported model: it holds one set of weights (--ema "
                                  "applies to training checkpoints)")  # fmt: skip
            source = Path(args.checkpoint)
        else:
            model, cfg, classes, data = load_for_export(args.checkpoint, {}, (), args.ema)
            source = Path(tmp) / "fp32.onnx"
            print(f"fatvit: exporting {cfg.model} as float32 ONNX", file=sys.stderr)
            export_checked(model, source, data, onnx_metadata(model, cfg, classes, data, args.checkpoint),
                           DEFAULT_OPSET, static=False)  # fmt: skip
        loaded = load_exported(source, purpose="quantize")
        if "quantization" in loaded.meta:
            raise FatvitError(f"{args.checkpoint} is already quantized; give the float32 file or the checkpoint")
        check_classes(loaded, val, where, args.checkpoint)
        dataset = SeededDataset(val, loaded.transform, seed=0)

        def loader(indices: list) -> object:
            part = Subset(dataset, indices)
            return make_loader(part, ResumableSampler(len(part), shuffle=False, pad=False), args.batch_size,
                               args.workers, False)  # fmt: skip

        print(f"fatvit: calibrating on {len(calibration)} images of {where}", file=sys.stderr)
        int8 = Path(tmp) / "int8.onnx"
        batches = (images.numpy() for images, _, _ in loader(calibration) if images.numel())
        quantize_onnx(source, int8, batches, args.op_types)
        print(f"fatvit: comparing float32 and int8 on the {len(held_out)} held-out images", file=sys.stderr)
        agreement = compare_top1(loaded.model, RuntimeModel(int8), loader(held_out))
        record = dict(
            output=str(output),
            model=loaded.name,
            calibration=where,
            calibration_images=len(calibration),
            op_types=list(args.op_types),
            **agreement.as_dict(),
        )
        held = f"the {agreement.images} held-out images of {where}"
        scores = f"int8 {agreement.top1_int8:.2f}%, float32 {agreement.top1_fp32:.2f}%"
        if agreement.drop > args.max_drop:
            raise FatvitError(f"the int8 model's top-1 on {held} drops by {agreement.drop:.2f} points ({scores}), "
                              f"over --max-drop {args.max_drop:g}: {output} not written")  # fmt: skip
        quantization = {k: v for k, v in record.items() if k not in ("output", "model")}
        write_onnx(onnx.load(str(int8)), output, {"quantization": quantization})
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(f"{output}: {loaded.name} in int8 (QDQ, per-channel weights; {', '.join(args.op_types)}), calibrated "
              f"on {len(calibration)} images of {where}")  # fmt: skip
        print(f"top-1 on {held}: {scores} (drop {agreement.drop:.2f} points, {agreement.differing} predictions "
              "differ)")  # fmt: skip
    return 0
