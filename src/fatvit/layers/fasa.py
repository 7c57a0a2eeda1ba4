"""Fully Adaptive Self-Attention (FASA).

FASA mixes tokens with two branches computed from one query map ``Q``:

* global adaptive aggregation: multi-head attention of ``Q`` over keys and
  values taken from a *refined-downsampled* copy of the input (paper, eq.
  "X'_global = MHSA(Q, pool(K), pool(V))");
* local adaptive aggregation: a depthwise conv of ``Q`` modulated by itself,
  ``X'_local = Q' * sigmoid(Q')`` with ``Q' = DWConv(Q)``;

and then lets each branch gate the other (the *bidirectional adaptive
interaction*)::

    X_local  = X'_local  * sigmoid(X'_global)
    X_global = X'_global * sigmoid(X'_local)
    Y        = W_2 (X_global * X_local)

The authors' released code gates only the local branch
(``Y = W_2 (X'_local * sigmoid(X'_global) * X'_global)``); that variant is
selected with ``interaction="reference"`` and is the one their checkpoints
were trained with.

All tensors stay channels-first ``(B, C, H, W)``; tokens are pixels and
channel ``c`` belongs to head ``c // head_dim``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FASA", "RefinedDownsample", "INTERACTIONS"]

#: The ways FASA can combine its local and global branches.
INTERACTIONS = ("bidirectional", "reference")


class RefinedDownsample(nn.Module):
    """The paper's "refined downsample" of the key/value input.

    ``pool(X) = BN(DWConv(BaseUnit^(n-1)(X)))`` with
    ``BaseUnit(X) = Conv1x1(BN(DWConv(X)))`` and ``n = log2(window_size)``:
    ``n`` depthwise 5x5 stride-2 convolutions, each followed by BatchNorm, with
    a pointwise conv between consecutive steps. Every step maps a side of
    length ``s`` to ``ceil(s / 2)``, so the output is ``ceil(H / window_size)``
    high whatever the input size. Keys follow the reference layout:
    ``conv{m}``, ``bn{m}``, ``linear{m}``.
    """

    def __init__(self, dim: int, window_size: int, kernel_size: int = 5) -> None:
        super().__init__()
        steps = int(round(math.log2(window_size)))
        if window_size < 2 or 2**steps != window_size:
            raise ValueError(f"window_size must be a power of two >= 2, got {window_size}")
        self.steps = steps
        for m in range(steps):
            self.add_module(
                f"conv{m}",
                nn.Conv2d(dim, dim, kernel_size, stride=2, padding=kernel_size // 2, groups=dim),
            )
            self.add_module(f"bn{m}", nn.BatchNorm2d(dim))
            if m < steps - 1:
                self.add_module(f"linear{m}", nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # children are registered in application order: conv0, bn0, linear0, conv1, ...
        for layer in self.children():
            x = layer(x)
        return x


class FASA(nn.Module):
    """Fully Adaptive Self-Attention on a ``(B, C, H, W)`` map.

    Args:
        dim: channels ``C``.
        num_heads: attention heads; ``C`` must be divisible by it.
        kernel_size: kernel of the local branch's depthwise conv.
        window_size: downsampling factor of the keys and values (1: none).
        interaction: ``"bidirectional"`` (the paper) or ``"reference"``
            (the authors' code: only the local branch is gated).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int,
        window_size: int,
        interaction: str = "bidirectional",
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if interaction not in INTERACTIONS:
            raise ValueError(f"interaction must be one of {INTERACTIONS}, got {interaction!r}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.interaction = interaction
        # Q, K, V = W_1 X (K and V are projected from the downsampled map)
        self.q = nn.Conv2d(dim, dim, 1)
        self.kv = nn.Conv2d(dim, 2 * dim, 1)
        # Q' = DWConv(Q): the local branch
        self.local_mixer = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        # Y = W_2 (...)
        self.mixer = nn.Conv2d(dim, dim, 1)
        self.pool = RefinedDownsample(dim, window_size) if window_size > 1 else nn.Identity()

    def _to_heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, heads, H*W, head_dim), with unit stride in the last dim.

        In channels-last memory this is a view. SDPA's fused CPU kernel needs
        the unit stride, so a channels-first map is copied once here.
        """
        b = t.shape[0]
        t = t.flatten(2).transpose(1, 2).reshape(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
        return t if t.stride(-1) == 1 else t.contiguous()

    def global_aggregation(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """X'_global = MHSA(Q, pool(K), pool(V)), returned as ``(B, C, H, W)`` in ``q``'s memory format."""
        b, c, h, w = q.shape
        k, v = self.kv(self.pool(x)).chunk(2, dim=1)
        out = F.scaled_dot_product_attention(self._to_heads(q), self._to_heads(k), self._to_heads(v))
        if q.is_contiguous(memory_format=torch.channels_last):
            return out.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)
        return out.transpose(-1, -2).reshape(b, c, h, w)

    def local_aggregation(self, q: torch.Tensor) -> torch.Tensor:
        """X'_local = Q' * sigmoid(Q') with Q' = DWConv(Q)."""
        return F.silu(self.local_mixer(q))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q(x)
        x_global = self.global_aggregation(q, x)
        x_local = self.local_aggregation(q)
        # bidirectional adaptive interaction
        if self.interaction == "reference":
            # released code: X_local * X'_global, the global branch left ungated
            mixed = x_local * torch.sigmoid(x_global) * x_global
        else:
            # X_local = X'_local * sigmoid(X'_global); X_global = X'_global * sigmoid(X'_local)
            mixed = (x_local * torch.sigmoid(x_global)) * (x_global * torch.sigmoid(x_local))
        return self.mixer(mixed)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, interaction={self.interaction!r}"
