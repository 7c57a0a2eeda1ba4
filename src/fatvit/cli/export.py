"""``fatvit export``: a FAT model (random or trained weights) as ONNX, checked against PyTorch with ONNX Runtime."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..catalog import CHECK_SHAPES, DEFAULT_OPSET
from ..errors import FatvitError
from ..files import check_output_file
from .format import add_set_option, positive_int, render_table

#: Config keys that apply to an export: the model and its preprocessing (recorded in the file's metadata).
EXPORT_KEYS = ("model", "model_kwargs", "img_size", "crop_pct", "interpolation")

#: Largest difference from PyTorch's output (max abs, float32) that the check accepts.
TOLERANCE = 1e-4


def add_parser(sub: argparse._SubParsersAction, name: str, help: str) -> None:
    p = sub.add_parser(
        name,
        help=help,
        description=(
            "Writes the model's deployed form (BatchNorm and residuals folded) as ONNX, with batch, height and width "
            "dynamic (unless --static), and its preprocessing and class names in the file's metadata. The file is "
            "checked with onnx.checker, then run with ONNX Runtime on several input sizes against PyTorch: a "
            f"difference over {TOLERANCE:g} is an error and the file is removed. With --format timm, writes timm's "
            "hub format instead: a folder with model.safetensors and config.json (architecture, num_classes, "
            "label_names, pretrained_cfg with the preprocessing), which timm.create_model('local-dir:FOLDER', "
            "pretrained=True) builds."
        ),
    )
    p.add_argument("--model", default=None, help="FAT size (default: the checkpoint's record, else fat_b0)")
    p.add_argument("--checkpoint", default=None, help="weights: .pth (fatvit or the authors') or .safetensors "
                   "(default: none, random weights)")  # fmt: skip
    p.add_argument("--ema", action="store_true", help="use the EMA weights of a training checkpoint")
    p.add_argument("--output", required=True, metavar="FILE.onnx|DIR",
                   help="the ONNX file to write (with --format timm: the folder)")  # fmt: skip
    p.add_argument("--format", choices=("onnx", "timm"), default="onnx",
                   help="onnx (default), or timm's hub format (a folder: model.safetensors, config.json)")  # fmt: skip
    p.add_argument("--img-size", dest="img_size", type=positive_int, default=None,
                   help="input side traced and recorded (default: the record's, else the model's)")  # fmt: skip
    p.add_argument(
        "--opset",
        type=positive_int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset: {DEFAULT_OPSET} (the exporter's lowest) or more, up to the newest the installed onnx "
        f"defines (default: {DEFAULT_OPSET})",
    )
    p.add_argument("--static", action="store_true", help="fix the input to 1 x 3 x img-size x img-size")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output file (--format timm: the folder's model.safetensors and "
                   "config.json)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the check's records as JSON")
    add_set_option(p, f"set a config key ({', '.join(EXPORT_KEYS)}; model_kwargs.NAME for model arguments)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.format == "timm":
        output = _check_timm_folder(args.output, args.overwrite)
    else:
        from ..export import check_opset

        output = check_output_file(args.output, "--output", args.overwrite)
        check_opset(args.opset, "--opset")  # before loading or exporting anything
    typed = {k: getattr(args, k) for k in ("model", "img_size") if getattr(args, k) is not None}
    model, cfg, classes, data = load_for_export(args.checkpoint, typed, args.overrides, args.ema)
    if args.format == "timm":
        return _write_timm(args, output, model, cfg, classes, data)
    metadata = onnx_metadata(model, cfg, classes, data, args.checkpoint)
    records = export_checked(model, output, data, metadata, args.opset, args.static)
    if args.json:
        print(json.dumps(dict(output=str(output), opset=args.opset, dynamic=not args.static, checks=records), indent=2))
    else:
        print(f"{output}: {cfg.model}, opset {args.opset}, {'static' if args.static else 'dynamic batch and size'}")
        rows = [["x".join(map(str, r["shape"])), f"{r['max_abs_diff']:.2e}"] for r in records]
        print(render_table(["input", "max |ONNX Runtime - PyTorch|"], rows))
    return 0


def load_for_export(
    checkpoint: Optional[str], typed: Dict[str, Any], overrides: Sequence[str], ema: bool
) -> Tuple[Any, Any, Optional[List[str]], Dict[str, Any]]:
    """The FAT model to export (the checkpoint's, else random weights), its config, class names and
    preprocessing (timm's data config: the record's values, else the model's).

    Raises:
        FatvitError: an unreadable checkpoint, bad settings, ``ema`` without a checkpoint, or a model that is
            not FAT.
    """
    from timm.data import resolve_data_config

    from ..models import FAT, create_model
    from ..tasks.classification.inference import inference_config, load_classifier

    if checkpoint:
        classifier = load_classifier(checkpoint, typed, overrides, ema, None, EXPORT_KEYS, "export")
        model, cfg, given, classes = classifier.model, classifier.config, classifier.given, classifier.classes
    else:
        if ema:
            raise FatvitError("--ema needs --checkpoint")
        cfg, given = inference_config({}, typed, overrides, EXPORT_KEYS, "export")
        model, classes = create_model(cfg.model, **cfg.model_kwargs).eval(), None
        print("fatvit: no --checkpoint: the exported weights are random", file=sys.stderr)
    if not isinstance(model, FAT):
        raise FatvitError(f"{cfg.model} is not a FAT model; fatvit export takes FAT models")
    data = resolve_data_config(
        {
            "input_size": (3, cfg.img_size, cfg.img_size) if "img_size" in given else None,
            "crop_pct": cfg.crop_pct if "crop_pct" in given else None,
            "interpolation": cfg.interpolation if "interpolation" in given else None,
        },
        model=model,
    )
    if checkpoint and classifier.meta.get("mean"):
        data["mean"], data["std"] = tuple(classifier.meta["mean"]), tuple(classifier.meta["std"])
    return model, cfg, classes, data


def onnx_metadata(
    model: Any, cfg: Any, classes: Optional[Sequence[str]], data: Mapping[str, Any], weights: Optional[str]
) -> Dict[str, Any]:
    """What an exported file records in its metadata: the model, its classes and its preprocessing."""
    return {
        "model": cfg.model,
        "model_kwargs": cfg.model_kwargs,
        "num_classes": model.num_classes,
        "classes": classes,
        "input_size": list(data["input_size"]),
        "crop_pct": data["crop_pct"],
        "crop_mode": data.get("crop_mode", "center"),
        "interpolation": data["interpolation"],
        "mean": list(data["mean"]),
        "std": list(data["std"]),
        "weights": str(weights) if weights else None,
    }


def export_checked(
    model: Any, output: Path, data: Mapping[str, Any], metadata: Mapping[str, Any], opset: int, static: bool
) -> List[Dict[str, Any]]:
    """Export ``model`` to ``output`` and check the file against PyTorch in ONNX Runtime; returns the check's
    records.

    Raises:
        FatvitError: the export fails, or the file's outputs differ by more than :data:`TOLERANCE` (it is
            removed).
    """
    from ..export import check_onnx, export_onnx

    img_size = data["input_size"][-1]
    export_onnx(model, output, img_size=img_size, opset=opset, dynamic=not static, metadata=metadata)
    shapes = ((1, img_size, img_size),) if static else tuple(dict.fromkeys(((1, img_size, img_size), *CHECK_SHAPES)))
    records = check_onnx(output, model, shapes)
    worst = max(r["max_abs_diff"] for r in records)
    if worst > TOLERANCE:
        output.unlink()
        raise FatvitError(f"ONNX Runtime's outputs differ from PyTorch's by {worst:.2e} (over {TOLERANCE:g}); "
                          f"{output} removed")  # fmt: skip
    return records


def _check_timm_folder(path: str, overwrite: bool) -> Path:
    """The folder ``--format timm`` writes: new, empty, or holding the two files and ``--overwrite``."""
    from ..files import check_output_dir
    from ..hub import TIMM_CONFIG

    folder = check_output_dir(path)
    held = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if not held:
        return folder
    ours = [name for name in held if name in ("model.safetensors", TIMM_CONFIG)]
    if ours and not overwrite:
        raise FatvitError(f"--output {folder} holds {', '.join(ours)}; give --overwrite to replace them")
    return folder


def _write_timm(args: argparse.Namespace, folder: Path, model: Any, cfg: Any, classes: Any, data: dict) -> int:
    from ..hub import save_timm_folder

    meta = {
        "model": cfg.model,
        "model_kwargs": dict(cfg.model_kwargs),
        "num_classes": model.num_classes,
        "classes": list(classes) if classes else None,
        "img_size": int(data["input_size"][-1]),
        "crop_pct": float(data["crop_pct"]),
        "interpolation": data["interpolation"],
        "mean": [float(m) for m in data["mean"]],
        "std": [float(s) for s in data["std"]],
    }
    save_timm_folder(model, folder, meta)
    if args.json:
        print(json.dumps(dict(output=str(folder), format="timm", files=["model.safetensors", "config.json"])))
    else:
        print(f"{folder}: {cfg.model} in timm's format (model.safetensors, config.json); load it with "
              f"timm.create_model('local-dir:{folder}', pretrained=True) after import fatvit")  # fmt: skip
    return 0
