"""ONNX export of a trained RetinaNet, and the check of the file against PyTorch in ONNX Runtime or OpenVINO.

The detector is exported whole, as torchvision's detection models are
(torchvision's ONNX path: PyTorch's TorchScript-based exporter, which has
torchvision's NMS in ONNX; the ``torch.export``-based one cannot trace the
data-dependent box selection): resizing and normalisation, the backbone in
its deployed form (:func:`fatvit.deploy`), FPN, head, box decoding and NMS.

The file takes one image, ``image``: 3 x H x W, float RGB in [0, 1], any H
and W. It gives ``boxes`` (N x 4, x1 y1 x2 y2 in the input's pixels),
``scores`` (N) and ``labels`` (N, class index + the metadata's
``label_offset``), N at most ``detections_per_img``. The metadata carries
the classes, category ids and image sizes of the training run, as JSON.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ...deploy import deploy
from ...errors import FatvitError
from ...export import require_onnx, write_onnx

__all__ = [
    "OPSETS",
    "check_detector_opset",
    "export_detector",
    "check_detector_onnx",
    "detector_runner",
    "check_images",
    "match_detections",
]

#: The opsets the exporter writes a detector in (torchvision's NMS needs 11).
OPSETS = (11, 23)

#: The image sizes (height, width) of the default check set: square, odd, portrait.
CHECK_SIZES: Tuple[Tuple[int, int], ...] = ((128, 128), (97, 131), (150, 96))


def check_detector_opset(opset: int, name: str = "opset") -> None:
    """Check that a detector can be exported in ``opset`` (called ``name`` in the error), before any work.

    Raises:
        FatvitError: ``opset`` is outside :data:`OPSETS`.
    """
    if not OPSETS[0] <= opset <= OPSETS[1]:
        raise FatvitError(f"{name} {opset}: a detector is exported in opsets {OPSETS[0]} to {OPSETS[1]}")


def export_detector(
    model: nn.Module, path: str | os.PathLike, *, opset: int = 18, metadata: Optional[Mapping[str, Any]] = None
) -> Path:
    """Write ``model`` (a fatvit RetinaNet), deployed, to ``path`` as ONNX, and check it with ``onnx.checker``.

    Raises:
        FatvitError: a Mask R-CNN or other model, an opset outside :data:`OPSETS`, the exporter fails, or the
            file cannot be written.
    """
    from torchvision.models.detection import RetinaNet

    onnx = require_onnx()

    if not isinstance(model, RetinaNet):
        raise FatvitError(f"{getattr(model, 'config_name', type(model).__name__)}: only RetinaNet detectors are "
                          "exported (Mask R-CNN's mask pasting is not)")  # fmt: skip
    check_detector_opset(opset)
    path = Path(path)
    deployed = deploy(model, channels_last=False, pointwise_linear=False)
    side = max(64, int(deployed.transform.min_size[0]))
    example = [torch.rand(3, side, side + side // 4, generator=torch.Generator().manual_seed(0))]
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")  # the tracer's notes on torchvision's size arithmetic
            torch.onnx.export(
                deployed,
                (example,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=["image"],
                output_names=["boxes", "scores", "labels"],
                dynamic_axes={
                    "image": {1: "height", 2: "width"},
                    "boxes": {0: "detections"},
                    "scores": {0: "detections"},
                    "labels": {0: "detections"},
                },  # fmt: skip
            )
    except Exception as err:  # the exporter raises many kinds; the first line says what failed
        raise FatvitError(f"ONNX export failed: {str(err).strip().splitlines()[0]}") from err
    return write_onnx(onnx.load_from_string(buffer.getvalue()), path, metadata)


def check_images(paths: Sequence[Path] = (), seed: int = 0) -> List[Tuple[str, torch.Tensor]]:
    """The check set: the given image files (as the detector reads them), or seeded random images of
    :data:`CHECK_SIZES`; each as (name, 3 x H x W float tensor in [0, 1]).

    Raises:
        FatvitError: a file cannot be read as an image.
    """
    from ...data import load_rgb
    from .data import detection_transform

    if paths:
        to_tensor = detection_transform(False)
        images = []
        for path in paths:
            try:
                images.append((str(path), to_tensor(load_rgb(str(path)), {})[0]))
            except Exception as err:  # truncated, corrupt or unreadable file
                raise FatvitError(f"cannot read check image {path}: {type(err).__name__}: {err}") from None
        return images
    generator = torch.Generator().manual_seed(seed)
    return [(f"random {h}x{w}", torch.rand(3, h, w, generator=generator)) for h, w in CHECK_SIZES]


def match_detections(ours: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """How far two detectors' outputs for one image are apart: the counts, whether the labels are the same
    multiset, the largest score difference (scores sorted), and the largest box difference (in pixels) between
    each of ``theirs`` and the nearest of ``ours`` with its label (ties in score may come in either order)."""
    count = len(theirs["scores"])
    record: Dict[str, Any] = dict(detections=count, count_equal=count == len(ours["scores"]))
    record["labels_equal"] = record["count_equal"] and torch.equal(theirs["labels"].sort()[0], ours["labels"].sort()[0])
    if not record["labels_equal"]:
        record.update(max_score_diff=float("inf"), max_box_diff=float("inf"))
        return record
    if not count:
        record.update(max_score_diff=0.0, max_box_diff=0.0)
        return record
    scores = (theirs["scores"].sort(descending=True)[0] - ours["scores"].sort(descending=True)[0]).abs()
    distance = (theirs["boxes"][:, None] - ours["boxes"][None]).abs().amax(-1)
    distance[theirs["labels"][:, None] != ours["labels"][None]] = float("inf")
    record.update(max_score_diff=float(scores.max()), max_box_diff=float(distance.min(1)[0].max()))
    return record


def detector_runner(path: str | os.PathLike, runtime: str = "onnxruntime") -> Callable[[torch.Tensor], List[Any]]:
    """A function running the exported detector ``path`` in ``runtime`` (``onnxruntime`` or ``openvino``) on one
    3 x H x W image: its ``boxes``, ``scores`` and ``labels`` as arrays.

    Raises:
        FatvitError: an unknown runtime, or one that is not installed or cannot load the file.
    """
    from ...runtime import RUNTIMES, openvino_model

    if runtime not in RUNTIMES:
        raise FatvitError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
    if runtime == "onnxruntime":
        from ...export import onnx_session

        session = onnx_session(path)
        return lambda image: session.run(None, {"image": image.numpy()})
    compiled = openvino_model(path)
    request = compiled.create_infer_request()

    def run(image: torch.Tensor) -> List[Any]:
        out = request.infer({"image": image.numpy()})
        return [out[compiled.output(name)] for name in ("boxes", "scores", "labels")]

    return run


def check_detector_onnx(
    path: str | os.PathLike, model: nn.Module, images: Sequence[Tuple[str, torch.Tensor]], runtime: str = "onnxruntime"
) -> List[Dict[str, Any]]:
    """Run the file in ``runtime`` (ONNX Runtime or OpenVINO) and ``model`` (eval mode) with PyTorch on
    ``images``; one :func:`match_detections` record per image, with its ``image`` and ``size``."""
    import numpy as np

    run = detector_runner(path, runtime)
    model = model.eval()
    records = []
    for name, image in images:
        with torch.no_grad():
            (expected,) = model([image])
        try:
            boxes, scores, labels = (torch.from_numpy(np.array(a, copy=True)) for a in run(image))
        except Exception as err:  # each runtime's own error types
            raise FatvitError(f"{path}: {runtime} fails on {name}: {str(err).strip().splitlines()[0]}") from err
        got = dict(boxes=boxes, scores=scores, labels=labels)
        records.append(dict(image=name, size=list(image.shape[1:]), **match_detections(expected, got)))
    return records
