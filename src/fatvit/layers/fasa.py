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

(The code regroups the product's factors: ``X_global * X_local`` equals
``SiLU(X'_local) * SiLU(X'_global)``, which takes fewer passes over the maps.)

The authors' released code gates only the local branch
(``Y = W_2 (X'_local * sigmoid(X'_global) * X'_global)``); that variant is
selected with ``interaction="reference"`` and is the one their checkpoints
were trained with.

The paper's ablations are options too: ``interaction`` ``"add"``, ``"cat"``
or ``"mul"`` *fuse* the two branches (add, concatenate or multiply, then the
linear ``W_2``) instead of letting them interact; ``kv_downsample`` replaces
the refined downsampling of the keys and values by average pooling
(``"pool"``) or a strided depthwise conv without (``"conv"``) or with
(``"conv_overlap"``) overlap.

All tensors stay channels-first ``(B, C, H, W)``; tokens are pixels and
channel ``c`` belongs to head ``c // head_dim``.
"""

from __future__ import annotations

import math

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .dwconv import DepthwiseConv2d
from .reparam import fold_batchnorm, pointwise_children

__all__ = [
    "FASA",
    "RefinedDownsample",
    "StridedConvDownsample",
    "INTERACTIONS",
    "KV_DOWNSAMPLES",
    "make_kv_downsample",
    "pad_to_multiple",
    "to_heads",
    "from_heads",
]

#: The ways FASA can combine its local and global branches: the two interactions, then the fusions.
INTERACTIONS = ("bidirectional", "reference", "add", "cat", "mul")

#: How the key/value map is downsampled by the window size.
KV_DOWNSAMPLES = ("refined", "pool", "conv", "conv_overlap")


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
        for m in range(steps):
            self.add_module(
                f"conv{m}",
                DepthwiseConv2d(dim, kernel_size, stride=2, padding=kernel_size // 2),
            )
            self.add_module(f"bn{m}", nn.BatchNorm2d(dim))
            if m < steps - 1:
                self.add_module(f"linear{m}", nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # children are registered in application order: conv0, bn0, linear0, conv1, ...
        for layer in self.children():
            x = layer(x)
        return x

    def reparameterize(self, pointwise_linear: bool = True) -> None:
        """The inference form, in place: each BatchNorm folded into its depthwise conv (then an identity)."""
        for name, layer in list(self.named_children()):
            if name.startswith("bn"):
                conv = getattr(self, "conv" + name[2:])
                fold_batchnorm(conv, layer)
                setattr(self, name, nn.Identity())
        if pointwise_linear:
            pointwise_children(self)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad a ``(B, C, H, W)`` map at the right and bottom to multiples of ``multiple``."""
    return F.pad(x, (0, (-x.shape[-1]) % multiple, 0, (-x.shape[-2]) % multiple))


def to_heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, heads, H*W, C / heads), with unit stride in the last dim.

    In channels-last memory this is a view. SDPA's fused CPU kernel needs
    the unit stride, so a channels-first map is copied once here.
    """
    b, c = t.shape[0], t.shape[1]
    t = t.flatten(2).transpose(1, 2).reshape(b, -1, num_heads, c // num_heads).transpose(1, 2)
    return t if t.stride(-1) == 1 else t.contiguous()


def from_heads(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, heads, H*W, C / heads) -> ``like``'s shape ``(B, C, H, W)``, in ``like``'s memory format."""
    b, c, h, w = like.shape
    if like.is_contiguous(memory_format=torch.channels_last):
        return t.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)
    return t.transpose(-1, -2).reshape(b, c, h, w)


# shape- and layout-dependent helpers are single nodes in FX graphs (torch.fx / timm feature extraction)
torch.fx.wrap("pad_to_multiple")
torch.fx.wrap("to_heads")
torch.fx.wrap("from_heads")


class StridedConvDownsample(nn.Module):
    """A depthwise conv of stride ``window_size`` and BatchNorm (ablation of the refined downsample).

    Without overlap the kernel equals the stride and the input is padded
    (right, bottom) to a multiple of it; with overlap the kernel is
    ``2 * window_size - 1``. Either way the output is ``ceil(H / window_size)`` high.
    """

    def __init__(self, dim: int, window_size: int, overlap: bool) -> None:
        super().__init__()
        self.window_size = window_size
        self.overlap = overlap
        kernel = 2 * window_size - 1 if overlap else window_size
        padding = window_size - 1 if overlap else 0
        self.conv = DepthwiseConv2d(dim, kernel, stride=window_size, padding=padding)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.overlap:
            x = pad_to_multiple(x, self.window_size)
        return self.bn(self.conv(x))

    def reparameterize(self, pointwise_linear: bool = True) -> None:
        """The inference form, in place: the BatchNorm folded into the conv."""
        fold_batchnorm(self.conv, self.bn)
        self.bn = nn.Identity()


def make_kv_downsample(kind: str, dim: int, window_size: int) -> nn.Module:
    """The key/value downsampling ``kind`` (one of :data:`KV_DOWNSAMPLES`) for a window size."""
    if kind not in KV_DOWNSAMPLES:
        raise ValueError(f"kv_downsample must be one of {KV_DOWNSAMPLES}, got {kind!r}")
    if window_size == 1:
        return nn.Identity()
    if kind == "refined":
        return RefinedDownsample(dim, window_size)
    if kind == "pool":
        return nn.AvgPool2d(window_size, window_size, ceil_mode=True)
    return StridedConvDownsample(dim, window_size, overlap=kind == "conv_overlap")


class FASA(nn.Module):
    """Fully Adaptive Self-Attention on a ``(B, C, H, W)`` map.

    Args:
        dim: channels ``C``.
        num_heads: attention heads; ``C`` must be divisible by it.
        kernel_size: kernel of the local branch's depthwise conv.
        window_size: downsampling factor of the keys and values (1: none).
        interaction: ``"bidirectional"`` (the paper) or ``"reference"``
            (the authors' code: only the local branch is gated); the fusion
            ablations ``"add"``, ``"cat"``, ``"mul"``.
        kv_downsample: ``"refined"`` (the paper) or an ablation: ``"pool"``,
            ``"conv"``, ``"conv_overlap"``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int,
        window_size: int,
        interaction: str = "bidirectional",
        kv_downsample: str = "refined",
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if interaction not in INTERACTIONS:
            raise ValueError(f"interaction must be one of {INTERACTIONS}, got {interaction!r}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = window_size
        self.interaction = interaction
        # Q, K, V = W_1 X (K and V are projected from the downsampled map)
        self.q = nn.Conv2d(dim, dim, 1)
        self.kv = nn.Conv2d(dim, 2 * dim, 1)
        # Q' = DWConv(Q): the local branch
        self.local_mixer = DepthwiseConv2d(dim, kernel_size, padding=kernel_size // 2)
        # Y = W_2 (...); the "cat" fusion feeds it both branches side by side
        self.mixer = nn.Conv2d(2 * dim if interaction == "cat" else dim, dim, 1)
        self.pool = make_kv_downsample(kv_downsample, dim, window_size)
        self.kv_downsample = kv_downsample

    def global_aggregation(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """X'_global = MHSA(Q, pool(K), pool(V)), returned as ``(B, C, H, W)`` in ``q``'s memory format."""
        k, v = self.kv(self.pool(x)).chunk(2, dim=1)
        heads = self.num_heads
        out = F.scaled_dot_product_attention(to_heads(q, heads), to_heads(k, heads), to_heads(v, heads))
        return from_heads(out, q)

    def local_aggregation(self, q: torch.Tensor) -> torch.Tensor:
        """X'_local = Q' * sigmoid(Q') with Q' = DWConv(Q)."""
        return F.silu(self.local_mixer(q))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q(x)
        x_global = self.global_aggregation(q, x)
        x_local = self.local_aggregation(q)
        # bidirectional adaptive interaction
        if self.interaction == "bidirectional":
            # X_local = X'_local * sigmoid(X'_global); X_global = X'_global * sigmoid(X'_local), so that
            # X_local * X_global = (X'_local * sigmoid(X'_local)) * (X'_global * sigmoid(X'_global)):
            # the same product with its factors regrouped, computed as SiLU(X'_local) * SiLU(X'_global)
            mixed = F.silu(x_local) * F.silu(x_global)
        elif self.interaction == "reference":
            # released code: X_local * X'_global = X'_local * sigmoid(X'_global) * X'_global, the global
            # branch left ungated; computed as X'_local * SiLU(X'_global)
            mixed = x_local * F.silu(x_global)
        # fusion ablations: no gating, the branches are merged and projected
        elif self.interaction == "add":
            mixed = x_local + x_global
        elif self.interaction == "mul":
            mixed = x_local * x_global
        else:  # "cat"
            mixed = torch.cat([x_local, x_global], dim=1)
        return self.mixer(mixed)

    def reparameterize(self, pointwise_linear: bool = True) -> None:
        """The inference form, in place: with ``pointwise_linear``, ``q``, ``kv`` and ``mixer`` become linear."""
        if pointwise_linear:
            pointwise_children(self)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, interaction={self.interaction!r}, kv_downsample={self.kv_downsample!r}"
