"""ONNX export of FAT models, and the check of the file against PyTorch through ONNX Runtime.

The model is exported in its deployed form (:func:`fatvit.deploy`: BatchNorm
and residuals folded into convs; 1x1 convs stay convolutions, which ONNX
Runtime's layout transforms handle best) with PyTorch's ``torch.export``-based
exporter, batch, height and width left dynamic. What is needed to use the
file travels in its metadata (``metadata_props``): the model name, the
preprocessing (input size, crop, interpolation, mean, std) and, when known,
the class names, each as JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .catalog import CHECK_SHAPES, DEFAULT_OPSET
from .deploy import deploy
from .errors import FatvitError, require
from .files import atomic_write

__all__ = [
    "DEFAULT_OPSET",
    "require_onnx",
    "check_opset",
    "opset_range",
    "export_onnx",
    "write_onnx",
    "name_dynamic_dims",
    "onnx_session",
    "check_onnx",
    "read_onnx_metadata",
]


def require_onnx() -> Any:
    """The ``onnx`` module, once the ``onnx`` extra (onnx, onnxscript for PyTorch's exporter, onnxruntime) is
    known to be installed.

    Raises:
        FatvitError: a module of the extra is missing (one line naming the extra).
    """
    for module in ("onnxscript", "onnxruntime"):
        require(module, "onnx")
    return require("onnx", "onnx")


def opset_range() -> Tuple[int, int]:
    """The opsets the ONNX exporter can write: from its own implementations' (torchlib's) to the newest the
    installed ``onnx`` defines."""
    onnx = require_onnx()
    from torch.onnx._internal.exporter import _constants

    return int(_constants.TORCHLIB_OPSET), int(onnx.defs.onnx_opset_version())


def check_opset(opset: int, name: str = "opset") -> None:
    """Check that the exporter can write ``opset`` (called ``name`` in the error), before any export work.

    Raises:
        FatvitError: ``opset`` is outside :func:`opset_range`.
    """
    low, high = opset_range()
    if not low <= opset <= high:
        raise FatvitError(f"{name} {opset} cannot be written: the ONNX exporter writes opsets {low} to {high}")


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """The exporter's and onnxscript's log lines (warnings with tracebacks on a failed opset conversion) held
    back: a failure is one :class:`FatvitError`."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    img_size: int | Tuple[int, int] = 224,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    batch: int = 1,
    fuse: bool = True,
    metadata: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write ``model`` (in eval mode) to ``path`` as ONNX and check the file with ``onnx.checker``.

    Args:
        model: a FAT model, or any model the exporter takes.
        img_size: the side (or height and width) of the example input the export traces.
        dynamic: batch, height and width dynamic; otherwise fixed to ``batch`` and ``img_size``.
        fuse: export the deployed form (:func:`fatvit.deploy`, 1x1 convs kept) rather than the model as it is.
        metadata: values stored in the file's ``metadata_props`` (as JSON).

    Raises:
        FatvitError: the opset is outside :func:`opset_range`, the exporter fails (or cannot write ``opset``
            for this model), or the file cannot be written.
    """
    check_opset(opset)
    path = Path(path)
    model = deploy(model, channels_last=False, pointwise_linear=False) if fuse else model.eval()
    # batch 2, so that the exporter does not specialise the batch dimension to 1
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    if dynamic:
        # the exporter specialises dimensions of size 1: trace at a size where every map (stride 32, the
        # downsampled keys) has at least 2 cells; the file takes any size
        height, width = max(height, 64), max(width, 64)
    example = torch.randn(2 if dynamic else batch, model_in_chans(model), height, width)
    dims = {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet_exporter_logs():
            warnings.simplefilter("ignore")  # the exporter's notes on its own internals
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                dynamic_shapes=(dims,) if dynamic else None,
                input_names=["image"],
                output_names=["logits"],
                opset_version=opset,
                verbose=False,
            )
    except Exception as err:  # the exporter raises many kinds; the first line says what failed
        raise FatvitError(f"ONNX export failed: {str(err).strip().splitlines()[0]}") from err
    proto = program.model_proto
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:  # the exporter moves an opset it cannot write to one it can, and only warns
        raise FatvitError(f"the ONNX exporter cannot write opset {opset} (it would write {written}); "
                          f"give an opset of at least {written}")  # fmt: skip
    if dynamic:
        name_dynamic_dims(proto, {0: "batch", 2: "height", 3: "width"})
    return write_onnx(proto, path, metadata)


def write_onnx(proto: Any, path: str | os.PathLike, metadata: Optional[Mapping[str, Any]] = None) -> Path:
    """Write an ONNX ``ModelProto`` to ``path`` (atomically), with ``metadata`` as JSON in its
    ``metadata_props``, and check the file with ``onnx.checker``.

    Raises:
        FatvitError: the file cannot be written, or fails the checker.
    """
    onnx = require_onnx()
    path = Path(path)
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=str(key), value=json.dumps(value))
    with atomic_write(path) as f:
        f.write(proto.SerializeToString())
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as err:
        raise FatvitError(f"{path}: the exported model fails onnx.checker: {err}") from err
    return path


def name_dynamic_dims(proto: Any, names: Mapping[int, str]) -> None:
    """Give the first input's dynamic dimensions readable names (``names``: axis -> name) in place of the
    exporter's symbols (``s77``), everywhere they appear: inputs, outputs and the shapes inferred between
    (``((s0 - 1)//32) + 1`` becomes ``((width - 1)//32) + 1``)."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    rename = {dims[axis].dim_param: name for axis, name in names.items() if axis < len(dims) and dims[axis].dim_param}
    if not rename:
        return
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in rename) + r")\b")
    for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: rename[m.group(1)], dim.dim_param)


def model_in_chans(model: nn.Module) -> int:
    """Input channels of a model's first convolution (3 if none is found)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return 3


def onnx_session(path: str | os.PathLike, threads: Optional[int] = None, spinning: bool = True) -> Any:
    """An ONNX Runtime CPU session for ``path``, with ``threads`` intra-op threads (default: torch's count).

    ``spinning=False`` keeps idle worker threads from busy-waiting, which
    matters when several sessions (or PyTorch) share the cores in turn.
    """
    ort = require("onnxruntime", "onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise FatvitError(f"{path}: ONNX Runtime cannot load it: {str(err).strip().splitlines()[0]}") from err


def read_onnx_metadata(path: str | os.PathLike) -> Dict[str, Any]:
    """The ``metadata_props`` of an ONNX file written by :func:`export_onnx`, decoded from JSON.

    Raises:
        FatvitError: the file cannot be read as ONNX, or a value is not JSON.
    """
    onnx = require_onnx()
    try:
        props = onnx.load(str(path), load_external_data=False).metadata_props
    except Exception as err:  # OSError, protobuf's DecodeError
        raise FatvitError(f"{path}: cannot be read as an ONNX file: {str(err).strip().splitlines()[0]}") from err
    try:
        return {p.key: json.loads(p.value) for p in props}
    except json.JSONDecodeError as err:
        raise FatvitError(f"{path}: its metadata is not fatvit's (a value is not JSON: {err})") from None


def check_onnx(
    path: str | os.PathLike,
    model: nn.Module,
    shapes: Sequence[Tuple[int, int, int]] = CHECK_SHAPES,
    seed: int = 0,
) -> List[Dict[str, Any]]:
    """Run the file with ONNX Runtime and ``model`` (eval mode) with PyTorch on random inputs of ``shapes``.

    Returns one record per shape: ``shape`` (B, C, H, W) and ``max_abs_diff``
    between the two outputs (float32).
    """
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    generator = torch.Generator().manual_seed(seed)
    model = model.eval()
    records = []
    for batch, height, width in shapes:
        x = torch.randn(batch, model_in_chans(model), height, width, generator=generator)
        with torch.no_grad():
            expected = model(x)
        try:
            got = torch.from_numpy(session.run(None, {name: x.numpy()})[0])
        except Exception as err:  # onnxruntime's own error types
            raise FatvitError(f"{path}: ONNX Runtime fails on input {tuple(x.shape)}: "
                              f"{str(err).strip().splitlines()[0]}") from err  # fmt: skip
        if got.shape != expected.shape:
            raise FatvitError(f"{path}: output shape {tuple(got.shape)} for input {tuple(x.shape)}, "
                              f"PyTorch gives {tuple(expected.shape)}")  # fmt: skip
        records.append(dict(shape=list(x.shape), max_abs_diff=float((got - expected).abs().max())))
    return records
