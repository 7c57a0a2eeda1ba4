"""ConvFFN: the FAT block's feed-forward network, and the downsampling shortcut."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvFFN", "DownsampleShortcut"]


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
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.dwconv = nn.Conv2d(
            hidden_dim,
            hidden_dim,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=hidden_dim,
        )
        self.bn = nn.BatchNorm2d(hidden_dim)
        self.fc2 = nn.Conv2d(hidden_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(x))
        if self.stride == 1:
            x = x + self.dwconv(x)
        else:
            x = self.dwconv(x)
        return self.fc2(self.bn(x))


class DownsampleShortcut(nn.Sequential):
    """Shortcut of a stride-2 block: DWConv5x5 s2 -> BN -> Conv1x1 (keys ``0``, ``1``, ``2``)."""

    def __init__(self, dim: int, out_dim: int, kernel_size: int = 5) -> None:
        super().__init__(
            nn.Conv2d(dim, dim, kernel_size, stride=2, padding=kernel_size // 2, groups=dim),
            nn.BatchNorm2d(dim),
            nn.Conv2d(dim, out_dim, 1),
        )
