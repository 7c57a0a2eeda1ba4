"""A depthwise convolution whose weight gradient takes a faster path on CPUs.

oneDNN's depthwise weight-gradient kernel is slow for the kernels FAT uses
(5x5 to 9x9): on FAT-B0's maps at batch 32 on 2 cores it took up to five
times as long as the paths below (about as long on the smallest maps), and
for the largest map (128 channels at 56x56, channels-last) about 110 ms
against 34 ms, five times its own forward pass. The weight
gradient is itself a depthwise correlation, of each input channel with its
output gradient, summed over the batch::

    dW[c, i, j] = sum_{b, y, x} gO[b, c, y, x] * X_pad[b, c, s*y + d*i, s*x + d*j]

so :func:`depthwise_weight_grad` computes it with forward depthwise
convolutions, the output-gradient maps as kernels (dilated by the stride):

* channels-first inputs, and channels-last ones of at most
  :data:`SMALL_IMAGE` values per image: one convolution of the ``B*C``
  input maps with the ``B*C`` gradient maps, then a sum over the batch;
* larger channels-last inputs: one convolution per image, whose ``C``
  kernels are that image's gradient maps, summed over the images (this
  avoids two channels-first copies, which cost more than the convolution
  there).

Kernels of at most 3x3 keep oneDNN's own backward, which is fast for them.
The math is that of ``nn.Conv2d``; only the order of the additions differs
(float32 rounding). The input gradient and the forward pass are PyTorch's own.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

__all__ = ["DepthwiseConv2d", "depthwise_weight_grad", "centre_tap", "SMALL_IMAGE", "SMALL_KERNEL"]

#: Channels-last inputs of at most this many values per image (``C*H*W``) use the one-convolution form.
SMALL_IMAGE = 64 * 1024

#: Kernels of at most this many taps keep oneDNN's own weight gradient.
SMALL_KERNEL = 3 * 3


def depthwise_weight_grad(
    x: torch.Tensor, grad_out: torch.Tensor, kernel_size: Tuple[int, int], stride: Tuple[int, int],
    padding: Tuple[int, int], dilation: Tuple[int, int],
) -> torch.Tensor:  # fmt: skip
    """The gradient of a depthwise conv's ``(C, 1, kh, kw)`` weight, computed with forward depthwise convolutions."""
    b, c, h, w = x.shape
    kh, kw = kernel_size
    gh, gw = grad_out.shape[-2:]
    # output element (i, j) correlates the input, shifted by dilation * (i, j), with the gradient at stride steps
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() and c * h * w > SMALL_IMAGE:
        total = x.new_zeros(1, c, kh, kw)
        for image, grad in zip(x.split(1), grad_out):
            total += F.conv2d(image, grad.unsqueeze(1), None, dilation, padding, stride, c)[..., :kh, :kw]
        return total.view(c, 1, kh, kw)
    inputs = x.contiguous().view(1, b * c, h, w)
    kernels = grad_out.contiguous().view(b * c, 1, gh, gw)
    out = F.conv2d(inputs, kernels, None, dilation, padding, stride, b * c)
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


def centre_tap(weight: torch.Tensor) -> torch.Tensor:
    """A depthwise kernel of the shape of ``weight`` that is 1 at the centre tap and 0 elsewhere (the identity)."""
    kh, kw = weight.shape[-2], weight.shape[-1]
    return F.pad(torch.ones_like(weight[:, :, :1, :1]), [kw // 2, kw // 2, kh // 2, kh // 2])


def _tracing() -> bool:
    """Whether a tracer records this call: ``torch.jit.trace`` (fvcore's FLOP counts), ``torch.export``,
    ``torch.compile``. They get the plain convolution, which they know (the custom backward would be an opaque
    ``prim::PythonOp`` to ``torch.jit.trace``, uncounted by fvcore)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(dim, dim, k, groups=dim)`` (same parameters and state-dict keys) with the fast weight gradient.

    The custom backward is used when a gradient is being recorded for the
    weight on the CPU, without autocast, and the kernel has more than
    :data:`SMALL_KERNEL` taps; otherwise (GPUs, mixed precision, inference,
    TorchScript, FX tracing, ``torch.jit.trace``, ``torch.export``,
    ``torch.compile``, 3x3 kernels) it is a plain convolution.

    ``forward(x, residual=True)`` computes ``x + conv(x)`` (FAT's CPE and
    the ConvFFN's residual depthwise conv, for a stride-1 conv with odd
    kernels and "same" padding) as one convolution whose kernel has the
    identity added at its centre tap: the same function, without the
    separate addition and its gradient accumulation. It is still a call of
    this module, so hooks and FX graphs see it.
    """

    def __init__(self, dim: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = True) -> None:
        super().__init__(dim, dim, kernel_size, stride=stride, padding=padding, groups=dim, bias=bias)

    def forward(self, x: torch.Tensor, residual: bool = False) -> torch.Tensor:
        if not residual:
            return self._depthwise(x, self.weight)
        self._check_residual()
        return self._depthwise(x, self.weight + centre_tap(self.weight))

    def _check_residual(self) -> None:
        kh, kw = self.kernel_size
        if self.stride != (1, 1) or self.dilation != (1, 1) or kh % 2 == 0 or kw % 2 == 0 \
                or self.padding != (kh // 2, kw // 2):  # fmt: skip
            raise ValueError("residual=True needs a stride-1 conv with odd kernels and same padding")

    def fold_residual(self) -> None:
        """Make ``self(x)`` compute ``self(x, residual=True)``, in place: the identity added to the centre tap."""
        self._check_residual()
        with torch.no_grad():
            self.weight += centre_tap(self.weight)

    def _depthwise(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # TorchScript skips this branch (it cannot compile autograd Functions); under FX the weight is a proxy;
        # tracers (torch.jit.trace, so fvcore's counts; torch.export; torch.compile) see the plain convolution
        if not torch.jit.is_scripting():  # noqa: SIM102
            if (
                not is_fx_symbolic_tracing()
                and torch.is_grad_enabled()
                and self.weight.requires_grad
                and x.is_cpu
                and not torch.is_autocast_enabled("cpu")
                and self.kernel_size[0] * self.kernel_size[1] > SMALL_KERNEL
                and not _tracing()
            ):
                return _DepthwiseConv.apply(x, weight, self.bias, self)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
