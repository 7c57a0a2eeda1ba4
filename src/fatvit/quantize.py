"""int8 ONNX models: ONNX Runtime's static quantization, calibrated on images and checked on others held out.

:func:`quantize_onnx` turns a float32 ONNX file (from ``fatvit export``)
into an int8 one in the QDQ format (QuantizeLinear/DequantizeLinear pairs
around the quantized operators, which ONNX Runtime fuses into its int8
kernels): weights int8 per output channel, activations 8-bit per tensor (uint8: the
activation type of ONNX Runtime's fast x86 kernels, U8S8; int8 activations ran
FAT-B0 about twice as slow on this project's CPU), with
ranges from the min and max seen on calibration batches (ONNX Runtime's
``quant_pre_process`` runs first, as its documentation asks). Only the
operators of ``op_types`` are quantized: by default the convolutions
(:data:`QUANTIZED_OPS`), every one of them pointwise or depthwise; FASA's
attention (its matmuls and softmax), the norms and GELU stay float32.

:func:`split_calibration` divides a labelled set into the calibration images
and the held-out ones on which :func:`compare_top1` measures what the int8
file loses against the float32 one, image by image.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .catalog import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_DROP, QUANTIZED_OPS
from .errors import FatvitError, require

__all__ = [
    "CalibrationSizeError",
    "QUANTIZED_OPS",
    "DEFAULT_CALIBRATION_IMAGES",
    "DEFAULT_MAX_DROP",
    "split_calibration",
    "quantize_onnx",
    "Agreement",
    "compare_top1",
]


class CalibrationSizeError(FatvitError):
    """A number of calibration images below 1, or one that leaves no image of the set held out."""

    def __init__(self, requested: int, count: int) -> None:
        self.requested = requested
        self.count = count
        if requested < 1:
            text = f"calibration_images must be at least 1, got {requested}"
        else:
            text = f"the calibration set has {count} images: calibration_images={requested} leaves none held out to " \
                   "measure the top-1 drop on"  # fmt: skip
        super().__init__(text)


def split_calibration(count: int, calibration_images: int, seed: int = 0) -> Tuple[List[int], List[int]]:
    """Indices of ``count`` images in a permutation fixed by ``seed``: the first ``calibration_images`` to
    calibrate on, the rest held out.

    Raises:
        CalibrationSizeError: ``calibration_images`` is below 1 or leaves no image held out.
    """
    if not 1 <= calibration_images < count:
        raise CalibrationSizeError(calibration_images, count)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return order[:calibration_images], order[calibration_images:]


@contextlib.contextmanager
def _quiet_quantizer_logs() -> Iterator[None]:
    """ONNX Runtime's quantizer logs notes through the root logger (tensors it leaves float, ranges it skips);
    they are held back, as the exporter's are."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_onnx(
    source: str | os.PathLike,
    output: str | os.PathLike,
    batches: Iterable[np.ndarray],
    op_types: Sequence[str] = QUANTIZED_OPS,
    metadata: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write ``source`` (a float32 ONNX file with one image input) quantized to int8 to ``output``.

    Args:
        batches: calibration inputs (float32 arrays, N x C x H x W, preprocessed as the model expects).
        op_types: the ONNX operators to quantize.
        metadata: values stored in the file's ``metadata_props`` over ``source``'s (as JSON).

    Raises:
        FatvitError: ONNX Runtime is missing, no calibration batch, or the quantizer fails.
    """
    from .export import read_onnx_metadata, require_onnx, write_onnx

    onnx = require_onnx()
    require("onnxruntime", "onnx")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not op_types:
        raise FatvitError("no operator types to quantize")
    kept = {**read_onnx_metadata(source), **(metadata or {})}
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise FatvitError("no calibration images")

    class Reader(CalibrationDataReader):
        def __init__(self, name: str) -> None:
            self.name, self.pending = name, first

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            batch, self.pending = self.pending, None
            batch = next(batches, None) if batch is None else batch
            return None if batch is None else {self.name: np.ascontiguousarray(batch, dtype=np.float32)}

    name = onnx.load(str(source), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="fatvit-quantize-") as tmp, _quiet_quantizer_logs():
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(quantized),
                Reader(name),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                # no CalibMaxIntermediateOutputs: ONNX Runtime 1.32 drops every full chunk of it unread; what the
                # calibrator keeps per batch is each tensor's min and max, not the tensor
                op_types_to_quantize=list(op_types),
            )
        except FatvitError:
            raise
        except Exception as err:  # ONNX Runtime's quantizer raises many kinds
            raise FatvitError(f"{source}: ONNX Runtime cannot quantize it: {str(err).strip().splitlines()[0]}") from err
        proto = onnx.load(str(quantized))
    del proto.metadata_props[:]
    return write_onnx(proto, output, kept)


@dataclass
class Agreement:
    """Top-1 (%) of a float32 model and its int8 file on the same held-out images, compared image by image."""

    images: int
    top1_fp32: float
    top1_int8: float
    #: images whose predicted class differs between the two
    differing: int
    #: unreadable images, skipped by both
    skipped_images: int = 0

    @property
    def drop(self) -> float:
        """Percentage points of top-1 the int8 file loses (negative: it gains)."""
        return self.top1_fp32 - self.top1_int8

    def as_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "drop": self.drop}


def compare_top1(reference: nn.Module, quantized: nn.Module, loader: Iterable[Tuple[Any, Any, int]]) -> Agreement:
    """Run both models on every batch of ``loader`` (``(images, targets, skipped)``, as fatvit's loaders give)
    and compare their top-1.

    Raises:
        FatvitError: the loader gives no readable image.
    """
    images = hits_fp32 = hits_int8 = differing = skipped = 0
    with torch.inference_mode():
        for batch, targets, dropped in loader:
            skipped += dropped
            if batch.numel() == 0:
                continue
            ours, theirs = reference(batch).argmax(1), quantized(batch).argmax(1)
            images += len(targets)
            hits_fp32 += int((ours == targets).sum())
            hits_int8 += int((theirs == targets).sum())
            differing += int((ours != theirs).sum())
    if not images:
        raise FatvitError("no readable held-out image to compare the int8 model on")
    return Agreement(images, 100.0 * hits_fp32 / images, 100.0 * hits_int8 / images, differing, skipped)
