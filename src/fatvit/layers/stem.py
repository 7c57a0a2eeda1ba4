"""The convolutional stem of FAT (overall stride 4)."""

from __future__ import annotations

import torch
from timm.layers import GroupNorm1
from torch import nn

from .reparam import fold_batchnorm, pointwise_children

__all__ = ["ConvBNAct", "ConvStem"]


class ConvBNAct(nn.Module):
    """Conv3x3 (with bias) -> BatchNorm -> ReLU, stored as ``conv.0`` and ``conv.1``."""

    def __init__(self, in_dim: int, out_dim: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_dim, out_dim, 3, stride=stride, padding=1),
            nn.BatchNorm2d(out_dim),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def reparameterize(self, pointwise_linear: bool = True) -> None:
        """The inference form, in place: the BatchNorm folded into the conv (``conv.1`` becomes an identity)."""
        fold_batchnorm(self.conv[0], self.conv[1])
        self.conv[1] = nn.Identity()


class ConvStem(nn.Module):
    """Two stride-2 and two stride-1 conv units, a pointwise conv and a GroupNorm(1, C).

    Maps ``(B, in_chans, H, W)`` to ``(B, dim, ceil(H/4), ceil(W/4))``.
    """

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(in_chans, dim // 2, stride=2)
        self.conv2 = ConvBNAct(dim // 2, dim, stride=2)
        self.conv3 = ConvBNAct(dim, dim)
        self.conv4 = ConvBNAct(dim, dim)
        self.conv5 = nn.Conv2d(dim, dim, 1)
        self.layernorm = GroupNorm1(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        x = self.conv4(self.conv3(x))
        return self.layernorm(self.conv5(x))

    def reparameterize(self, pointwise_linear: bool = True) -> None:
        """The inference form, in place: with ``pointwise_linear``, ``conv5`` runs as a :class:`Pointwise`."""
        if pointwise_linear:
            pointwise_children(self)
