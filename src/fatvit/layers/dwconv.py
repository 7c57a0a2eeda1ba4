"""A depthwise convolution whose weight gradient takes a faster path on small CPU maps.

oneDNN's depthwise weight-gradient kernel is slow on small maps (FAT's stages
3 and 4: 14x14 and 7x7 at 224): its backward took 2 to 5 times as long as
the path below there, at batch 32 on 2 cores, while on 28x28 and 56x56 maps
the comparison was mixed (from 2x faster to 5x slower). The weight gradient
is itself a depthwise correlation, of each input channel with its output
gradient, summed over the batch::

    dW[c, i, j] = sum_{b, y, x} gO[b, c, y, x] * X_pad[b, c, s*y + d*i, s*x + d*j]

so on maps of at most :data:`SMALL_MAP` pixels :class:`DepthwiseConv2d`
computes it as one forward depthwise convolution of the ``B*C`` input maps
with the ``B*C`` output-gradient maps as kernels (dilated by the stride),
then a sum over the batch; larger maps use PyTorch's own backward. The math
is that of ``nn.Conv2d``; only the order of the additions differs (float32
rounding). The input gradient and the forward pass are PyTorch's own.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

__all__ = ["DepthwiseConv2d", "depthwise_weight_grad", "SMALL_MAP"]

#: Input maps of at most this many pixels take the weight-gradient path above.
SMALL_MAP = 16 * 16


def depthwise_weight_grad(
    x: torch.Tensor, grad_out: torch.Tensor, kernel_size: Tuple[int, int], stride: Tuple[int, int],
    padding: Tuple[int, int], dilation: Tuple[int, int],
) -> torch.Tensor:  # fmt: skip
    """The gradient of a depthwise conv's ``(C, 1, kh, kw)`` weight, as one forward depthwise convolution."""
    b, c, h, w = x.shape
    inputs = x.contiguous().view(1, b * c, h, w)
    kernels = grad_out.contiguous().view(b * c, 1, grad_out.shape[-2], grad_out.shape[-1])
    # output element (i, j) correlates the input, shifted by dilation * (i, j), with the gradient at stride steps
    out = F.conv2d(inputs, kernels, None, dilation, padding, stride, b * c)
    kh, kw = kernel_size
    return out[..., :kh, :kw].reshape(b, c, kh, kw).sum(0).unsqueeze(1)


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], conv: DepthwiseConv2d):  # noqa: ANN205
        ctx.save_for_backward(x, weight)
        ctx.conv = (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups, bias is not None)
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        x, weight = ctx.saved_tensors
        kernel_size, stride, padding, dilation, groups, has_bias = ctx.conv
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, stride, padding, dilation, False, [0, 0], groups, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad(x, grad_out, kernel_size, stride, padding, dilation)
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(dim, dim, k, groups=dim)`` (same parameters and state-dict keys) with the fast weight gradient.

    The custom backward is used when a gradient is being recorded for the
    weight of a small map (:data:`SMALL_MAP`) on the CPU, without autocast;
    otherwise (GPUs, mixed precision, inference, TorchScript, FX tracing) it
    is a plain convolution.
    """

    def __init__(self, dim: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = True) -> None:
        super().__init__(dim, dim, kernel_size, stride=stride, padding=padding, groups=dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # TorchScript skips this branch (it cannot compile autograd Functions); under FX the weight is a proxy
        if not torch.jit.is_scripting():  # noqa: SIM102
            if (
                not is_fx_symbolic_tracing()
                and torch.is_grad_enabled()
                and self.weight.requires_grad
                and x.is_cpu
                and not torch.is_autocast_enabled("cpu")
                and x.shape[-2] * x.shape[-1] <= SMALL_MAP
            ):
                return _DepthwiseConv.apply(x, self.weight, self.bias, self)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
