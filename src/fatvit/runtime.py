"""Exported models run outside PyTorch: an ONNX file in ONNX Runtime or OpenVINO, as a module.

:class:`RuntimeModel` wraps a session of either runtime in an ``nn.Module``
whose ``forward`` takes a float32 CPU tensor and returns the logits as one,
so that the evaluation loop, the predictions and the benchmarks run an
exported file exactly as they run a PyTorch model. :func:`load_exported`
reads the file's metadata (written by ``fatvit export``: model, class
names, preprocessing) into a :class:`~fatvit.tasks.classification.inference.Classifier`.

OpenVINO is an optional extra (``pip install 'fatvit[openvino]'``); it is
compiled for the CPU with the latency hint and float32 inference precision
(its default on CPUs with bfloat16 units is bfloat16, which would not
match PyTorch).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .errors import FatvitError, require

__all__ = ["RUNTIMES", "RuntimeModel", "require", "openvino_model"]

#: The runtimes an exported file runs in.
RUNTIMES = ("onnxruntime", "openvino")


@functools.cache
def _openvino_core(ov: Any) -> Any:
    """The process's one OpenVINO ``Core``, never freed.

    Each ``Core`` loads a CPU plugin of its own, which gives the calling thread an alternate signal stack and, when
    it is freed, puts back the stack it found. Two Cores freed in the order they were made leave the thread on the
    first one's freed stack, and the next signal handled there (Python runs every signal handler on it, SIGCHLD
    included) writes into whatever memory is mapped there now: a crash or a corrupted object much later, in
    unrelated code. One Core kept for the process keeps the stack valid.
    """
    return ov.Core()


def openvino_model(path: str | os.PathLike, threads: Optional[int] = None) -> Any:
    """``path`` (ONNX) compiled by OpenVINO for the CPU: latency hint, float32, ``threads`` inference threads
    (default: torch's count).

    Raises:
        FatvitError: OpenVINO is not installed, or cannot read or compile the file.
    """
    core = _openvino_core(require("openvino", "openvino"))  # the import is checked on every call, the Core made once
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
    }
    try:
        return core.compile_model(str(path), "CPU", config)
    except Exception as err:  # OpenVINO raises RuntimeError subclasses of its own
        raise FatvitError(f"{path}: OpenVINO cannot compile it: {str(err).strip().splitlines()[0]}") from err


class RuntimeModel(nn.Module):
    """An ONNX file run by ONNX Runtime or OpenVINO on the CPU, called as a PyTorch module.

    Args:
        path: the ONNX file (one image input, the logits as first output).
        runtime: ``onnxruntime`` or ``openvino``.
        threads: intra-op threads (default: torch's count).

    Raises:
        FatvitError: an unknown runtime, a runtime that is not installed, or a file it cannot load.
    """

    def __init__(self, path: str | os.PathLike, runtime: str = "onnxruntime", threads: Optional[int] = None) -> None:
        super().__init__()
        if runtime not in RUNTIMES:
            raise FatvitError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
        self.path, self.runtime = str(path), runtime
        if runtime == "onnxruntime":
            from .export import onnx_session

            self._session = onnx_session(path, threads)
            first = self._session.get_inputs()[0]
            self._input_name, shape = first.name, first.shape
        else:
            self._compiled = openvino_model(path, threads)
            self._request = self._compiled.create_infer_request()
            shape = [d.get_length() if d.is_static else None for d in self._compiled.input(0).get_partial_shape()]
        #: the input's fixed (batch, channels, height, width) sizes; None where the file takes any size
        self.input_shape: Tuple[Optional[int], ...] = tuple(d if isinstance(d, int) else None for d in shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The file's first output for ``x``; a file exported for a fixed batch is run on chunks of that batch
        (the last one padded)."""
        if x.device.type != "cpu":
            raise FatvitError(f"{self.path} runs on the CPU ({self.runtime}); the input is on {x.device}")
        array = np.ascontiguousarray(x.detach().float().numpy())
        for axis, (want, got) in enumerate(zip(self.input_shape[1:], array.shape[1:]), start=1):
            if want is not None and want != got:
                raise FatvitError(
                    f"{self.path} takes inputs of shape {_shape_text(self.input_shape)} (axis {axis}: {want}); "
                    f"got {tuple(array.shape)}"
                )
        batch = self.input_shape[0]
        if batch is None or batch == len(array):
            return self._run(array)
        chunks = []
        for start in range(0, len(array), batch):
            chunk = array[start : start + batch]
            if len(chunk) < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            chunks.append(self._run(chunk))
        return torch.cat(chunks)[: len(array)]

    def _run(self, array: np.ndarray) -> torch.Tensor:
        try:
            if self.runtime == "onnxruntime":
                out = self._session.run(None, {self._input_name: array})[0]
            else:
                out = self._request.infer({0: array})[self._compiled.output(0)]
        except Exception as err:  # each runtime's own error types
            raise FatvitError(f"{self.path}: {self.runtime} fails on input {tuple(array.shape)}: "
                              f"{str(err).strip().splitlines()[0]}") from err  # fmt: skip
        return torch.from_numpy(np.array(out, dtype=np.float32, copy=True))

    def extra_repr(self) -> str:
        return f"{self.path!r}, runtime={self.runtime!r}, input={_shape_text(self.input_shape)}"


def _shape_text(shape: Tuple[Optional[int], ...]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)
