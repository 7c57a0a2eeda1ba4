"""ConvFFN: the FAT block's feed-forward network, and the downsampling shortcut."""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .dwconv import DepthwiseConv2d
from .reparam import Pointwise, fold_batchnorm, pointwise_children

__all__ = ["ConvFFN", "DownsampleShortcut", "GELU", "gelu_in_memory_order"]


def gelu_in_memory_order(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GELU of a map; a channels-last one is computed as its ``(B, H, W, C)`` view, which is contiguous.

    The values are GELU's, up to float32 rounding. PyTorch's CPU
    GELU kernels, forward and backward, are faster on a contiguous tensor
    than on the strided ``(B, C, H, W)`` view of channels-last memory (about
    6 against 9 ms forward and 10 against 15 ms backward for a 32x128x56x56
    map on 2 cores).
    """
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return F.gelu(x.permute(0, 2, 3, 1), approximate=approximate).permute(0, 3, 1, 2)
    return F.gelu(x, approximate=approximate)


# a branch on the memory format: one node in FX graphs
torch.fx.wrap("gelu_in_memory_order")


class GELU(nn.GELU):
    """``nn.GELU`` computed by :func:`gelu_in_memory_order`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu_in_memory_order(x, self.approximate)


class ConvFFN(nn.Module):
    """Pointwise expand, GELU, depthwise conv, BatchNorm, pointwise project.

    With ``stride=1`` the depthwise conv is residual
    (``h = h + DWConv(h)``); with ``stride=2`` it downsamples and has no
    residual, and ``out_dim`` is the next stage's width.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        out_dim: int,
        kernel_size: int = 5,
        stride: int = 1,
    ) -> None:
        super().__init__()
        self.stride = stride
        # x + DWConv(x) at stride 1; False once the residual is folded into the conv (reparameterize)
        self.dw_residual = stride == 1
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = GELU()
        self.dwconv = DepthwiseConv2d(hidden_dim, kernel_size, stride=stride, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(hidden_dim)
        self.fc2 = nn.Conv2d(hidden_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(x))
        # stride 1: x + DWConv(x), as one convolution
        x = self.dwconv(x, residual=self.dw_residual)
        return self.fc2(self.bn(x))

    def reparameterize(self, pointwise_linear: bool = True) -> None:
        """The inference form, in place: the residual and BatchNorm (eval statistics) folded into the depthwise conv.

        With ``pointwise_linear``, ``fc1`` and ``fc2`` become :class:`Pointwise`, GELU running inside ``fc1``.
        """
        if self.dw_residual:
            self.dwconv.fold_residual()
            self.dw_residual = False
        fold_batchnorm(self.dwconv, self.bn)
        self.bn = nn.Identity()
        if pointwise_linear:
            pointwise_children(self)
            if isinstance(self.fc1, Pointwise) and not isinstance(self.act, nn.Identity):
                self.fc1.act, self.act = self.act, nn.Identity()


class DownsampleShortcut(nn.Sequential):
    """Shortcut of a stride-2 block: DWConv5x5 s2 -> BN -> Conv1x1 (keys ``0``, ``1``, ``2``)."""

    def __init__(self, dim: int, out_dim: int, kernel_size: int = 5) -> None:
        super().__init__(
            DepthwiseConv2d(dim, kernel_size, stride=2, padding=kernel_size // 2),
            nn.BatchNorm2d(dim),
            nn.Conv2d(dim, out_dim, 1),
        )

    def reparameterize(self, pointwise_linear: bool = True) -> None:
        """The inference form, in place: the BatchNorm folded into the depthwise conv (and the 1x1 conv linear)."""
        fold_batchnorm(self[0], self[1])
        self[1] = nn.Identity()
        if pointwise_linear:
            pointwise_children(self)
