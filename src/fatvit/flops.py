"""Parameter and FLOP counts, in the two conventions the paper's tables use.

* ``conv_linear_gmacs``: multiply-accumulates of convolutions and linear
  layers only, the convention of the authors' released code and of most of
  the paper's FLOPs figures;
* ``full_gflops``: fvcore's full count, attention matmuls and norms included.

Both are counted by fvcore on a traced forward pass (fvcore counts one
multiply-accumulate as one "flop"). fvcore has no rule for
``scaled_dot_product_attention``; :func:`sdpa_flop_jit` supplies it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, List, Sequence

import torch
from torch import nn

with warnings.catch_warnings():  # fvcore scripts a helper at import time, which torch now warns about
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

__all__ = ["ModelCost", "count_params", "model_cost", "sdpa_flop_jit"]

#: fvcore operator groups that make up the conv+linear convention.
CONV_LINEAR_OPS = ("conv", "linear", "addmm")


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """Multiply-accumulates of ``softmax(q k^T) v``: ``B*h*N*n*(d_qk + d_v)``."""
    q_shape, k_shape, v_shape = (get_shape(v) for v in inputs[:3])
    batch = math.prod(q_shape[:-2])
    n_q, d_qk = q_shape[-2:]
    n_kv, d_v = k_shape[-2], v_shape[-1]
    return batch * n_q * n_kv * (d_qk + d_v)


@dataclass(frozen=True)
class ModelCost:
    """What a model costs at one input size."""

    params_m: float
    conv_linear_gmacs: float
    full_gflops: float


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def model_cost(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> ModelCost:
    """Count parameters and FLOPs of ``model`` on one image of ``input_size``."""
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, *input_size)
        analysis = FlopCountAnalysis(model, x)
        analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        by_op = analysis.by_operator()
        conv_linear = sum(by_op.get(op, 0) for op in CONV_LINEAR_OPS)
        return ModelCost(count_params(model) / 1e6, conv_linear / 1e9, analysis.total() / 1e9)
    finally:
        model.train(was_training)


def matches_paper(measured: float, printed: str, rel_tol: float) -> bool:
    """Whether ``measured`` agrees with a figure the paper prints as ``printed``.

    It agrees when it is within ``rel_tol`` of the figure, or when it would be
    printed the same at the paper's precision (``29.32`` is the paper's ``"29"``):
    a figure printed with two significant digits cannot be held to 1%.
    """
    paper = float(printed)
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return abs(measured / paper - 1) <= rel_tol or round(measured, decimals) == paper
