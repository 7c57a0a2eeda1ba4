"""Re-parameterisation for inference: the exact rewrites behind the ``reparameterize()`` methods of FAT's modules.

Each rewrite gives the same function with fewer or faster ops, in place:

* an eval-mode BatchNorm after a conv is folded into the conv's weights
  (:func:`fold_batchnorm`, with ``torch.nn.utils.fusion.fuse_conv_bn_weights``),
  and the BatchNorm becomes an ``nn.Identity``;
* a residual around a stride-1 depthwise conv with "same" padding,
  ``x + DWConv(x)``, is the conv with 1 added to its centre tap
  (:meth:`~fatvit.layers.dwconv.DepthwiseConv2d.fold_residual`);
* a 1x1 convolution is a linear map of the channels at each pixel:
  :class:`Pointwise` runs it as one matrix product over a channels-last map,
  which is faster on a CPU than the convolution kernels for these shapes
  (:func:`pointwise_children`).

A module's ``reparameterize(pointwise_linear=True)`` rewrites its own
direct children only, so the order in which a walker visits the modules does
not matter (timm's ``reparameterize_model`` visits parents first), and a
second call changes nothing. Attribute names stay, so a re-parameterised
model's state-dict keys are the original's less the BatchNorms'.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["Pointwise", "fold_batchnorm", "is_pointwise_conv", "pointwise_children"]


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


def pointwise_children(module: nn.Module) -> None:
    """Replace, in place, every direct child of ``module`` that is a 1x1 convolution by its :class:`Pointwise`."""
    for name, child in list(module.named_children()):
        if is_pointwise_conv(child):
            setattr(module, name, Pointwise.from_conv(child))


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, bn: nn.Module) -> None:
    """Make ``conv`` compute ``bn(conv(x))`` with ``bn``'s running statistics, in place (``bn`` is left as it is).

    Does nothing when ``bn`` is not a BatchNorm (already folded: an ``nn.Identity``).
    """
    if not isinstance(bn, nn.BatchNorm2d):
        return
    weight, bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    conv.weight, conv.bias = weight, bias
