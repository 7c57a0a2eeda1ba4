"""Re-parameterisation for inference: the exact rewrites behind :func:`fatvit.deploy`.

Each rewrite gives the same function with fewer or faster ops:

* an eval-mode BatchNorm after a conv is folded into the conv's weights
  (``torch.nn.utils.fusion.fuse_conv_bn_eval``);
* a residual around a stride-1 depthwise conv with "same" padding,
  ``x + DWConv(x)``, is the conv with 1 added to its centre tap;
* a 1x1 convolution is a linear map of the channels at each pixel:
  :class:`Pointwise` runs it as one matrix product over a channels-last map,
  which is faster on a CPU than the convolution kernels for these shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["Pointwise", "fuse_conv_bn", "add_identity", "is_pointwise_conv"]


class Pointwise(nn.Module):
    """A 1x1 convolution computed as ``F.linear`` over the channels of a ``(B, C, H, W)`` map.

    The output is ``(B, out, H, W)`` in channels-last memory (a permuted view
    of the linear's ``(B, H, W, out)`` result); any input memory format works,
    a channels-last one without a copy. An elementwise ``act`` that follows
    the conv runs inside, on the contiguous ``(B, H, W, out)`` tensor, where
    CPU kernels such as GELU's are faster than on the permuted view.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, act: nn.Module | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.act = act if act is not None else nn.Identity()

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> Pointwise:
        """The same map as ``conv`` (a 1x1, stride-1, ungrouped convolution), sharing no storage with it."""
        if not is_pointwise_conv(conv):
            raise ValueError(f"not a 1x1 stride-1 ungrouped convolution: {conv}")
        out = cls(conv.in_channels, conv.out_channels, bias=conv.bias is not None)
        with torch.no_grad():
            out.weight.copy_(conv.weight.flatten(1))
            if conv.bias is not None:
                out.bias.copy_(conv.bias)
        return out.to(conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(F.linear(x.permute(0, 2, 3, 1), self.weight, self.bias)).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, bias={self.bias is not None}"


def is_pointwise_conv(module: nn.Module) -> bool:
    """Whether ``module`` is an ``nn.Conv2d`` that is a per-pixel linear map (1x1, stride 1, no groups, no padding)."""
    return (
        type(module) is nn.Conv2d
        and module.kernel_size == (1, 1)
        and module.stride == (1, 1)
        and module.padding in ((0, 0), "valid")
        and module.dilation == (1, 1)
        and module.groups == 1
    )


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` as one convolution, with ``bn``'s running statistics (a new module; inputs untouched)."""
    return fuse_conv_bn_eval(conv.eval(), bn.eval())


def add_identity(conv: nn.Conv2d) -> nn.Conv2d:
    """``x + conv(x)`` as one convolution, for a stride-1 depthwise ``conv`` with odd "same" padding (a new module)."""
    k = conv.kernel_size
    if not (
        conv.groups == conv.in_channels == conv.out_channels
        and conv.stride == (1, 1)
        and k[0] % 2 == 1
        and k[1] % 2 == 1
        and conv.padding == (k[0] // 2, k[1] // 2)
        and conv.dilation == (1, 1)
    ):
        raise ValueError(f"the identity folds only into a stride-1 depthwise conv with same padding: {conv}")
    out = nn.Conv2d(conv.in_channels, conv.out_channels, k, padding=conv.padding, groups=conv.groups,
                    bias=conv.bias is not None).to(conv.weight)  # fmt: skip
    with torch.no_grad():
        out.weight.copy_(conv.weight)
        out.weight[:, 0, k[0] // 2, k[1] // 2] += 1
        if conv.bias is not None:
            out.bias.copy_(conv.bias)
    return out
