"""The attention mechanisms the paper compares FASA with, as drop-in token mixers of the FAT block.

Each takes and returns a ``(B, C, H, W)`` map, like FASA, and has the usual
``qkv``/``proj`` linear projections (4 C^2 weights, as FASA's ``q``, ``kv``
and ``mixer``). Maps of any size work: partitions are padded (right,
bottom) and the result cropped back.

* :class:`PartitionAttention` attends within ``size x size`` partitions:
  contiguous windows (Swin's W-MSA, with ``shift`` its SW-MSA; MaxViT's block
  attention; Twins' LSA without position bias) or a grid of tokens spread
  over the whole map (MaxViT's grid attention).
* :class:`SpatialReductionAttention`: PVT's SRA, also Twins' GSA: keys and
  values from the map reduced by a conv of kernel and stride ``R``.
* :class:`CrossShapedWindowAttention`: CSWin's cross-shaped windows, half
  the heads in horizontal stripes, half in vertical ones, with LePE.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models import register_notrace_module
from torch import nn

__all__ = ["PartitionAttention", "SpatialReductionAttention", "CrossShapedWindowAttention"]


def _pad_hw(x: torch.Tensor, mult_h: int, mult_w: int) -> torch.Tensor:
    """Pad a ``(B, H, W, C)`` tensor at the bottom and right to multiples of ``mult_h`` and ``mult_w``."""
    return F.pad(x, (0, 0, 0, (-x.shape[2]) % mult_w, 0, (-x.shape[1]) % mult_h))


def _to_windows(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, wh * ww, C), contiguous ``wh x ww`` windows in raster order."""
    b, h, w, c = x.shape
    x = x.view(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def _from_windows(x: torch.Tensor, b: int, h: int, w: int, wh: int, ww: int) -> torch.Tensor:
    c = x.shape[-1]
    x = x.view(b, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def _to_grid(x: torch.Tensor, g: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * cells, g * g, C): each group is a ``g x g`` grid strided over the whole map."""
    b, h, w, c = x.shape
    x = x.view(b, g, h // g, g, w // g, c).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(-1, g * g, c)


def _from_grid(x: torch.Tensor, b: int, h: int, w: int, g: int) -> torch.Tensor:
    c = x.shape[-1]
    x = x.view(b, h // g, w // g, g, g, c).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, h, w, c)


def _heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(N', tokens, C) -> (N', heads, tokens, C / heads)."""
    n, length, c = t.shape
    return t.reshape(n, length, num_heads, c // num_heads).transpose(1, 2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    n, heads, length, d = t.shape
    return t.transpose(1, 2).reshape(n, length, heads * d)


class RelativePositionBias(nn.Module):
    """A learned bias per head for every relative offset inside a ``size x size`` partition (Swin, MaxViT)."""

    def __init__(self, size: int, num_heads: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros((2 * size - 1) ** 2, num_heads))
        trunc_normal_(self.table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + size - 1
        self.register_buffer("index", rel[..., 0] * (2 * size - 1) + rel[..., 1], persistent=False)

    def forward(self) -> torch.Tensor:
        n = self.index.shape[0]
        return self.table[self.index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)  # (heads, N, N)


@register_notrace_module  # shape-dependent partitioning: one leaf of timm's FX graphs
class PartitionAttention(nn.Module):
    """Self-attention inside ``size x size`` partitions of the map.

    Args:
        mode: ``"window"`` (contiguous windows) or ``"grid"`` (a grid spread over the map).
        shift: Swin's cyclic shift of the windows (``size // 2`` on every other block), with
            the attention mask that keeps shifted-in regions apart.
        rel_pos: a learned relative position bias (Swin, MaxViT); Twins' LSA has none.
    """

    def __init__(self, dim: int, num_heads: int, size: int = 7, mode: str = "window", shift: int = 0,
                 rel_pos: bool = True) -> None:  # fmt: skip
        super().__init__()
        if mode not in ("window", "grid"):
            raise ValueError(f"mode must be 'window' or 'grid', got {mode!r}")
        if shift and mode != "window":
            raise ValueError("only window partitions shift")
        self.num_heads = num_heads
        self.size = size
        self.mode = mode
        self.shift = shift
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos = RelativePositionBias(size, num_heads) if rel_pos else None

    def _shift_mask(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """(windows, N, N) additive mask: tokens from different regions of the rolled map do not attend.

        After the roll, the last ``size`` rows (and columns) hold two regions
        that were not neighbours: ``[h - size, h - shift)`` and ``[h - shift, h)``.
        """
        rows = torch.arange(h, device=device)
        cols = torch.arange(w, device=device)
        row_region = (rows >= h - self.size).long() + (rows >= h - self.shift).long()
        col_region = (cols >= w - self.size).long() + (cols >= w - self.shift).long()
        labels = (row_region[:, None] * 3 + col_region[None, :]).reshape(1, h, w, 1)
        windows = _to_windows(labels, self.size, self.size).squeeze(-1)  # (windows, N)
        same = windows[:, :, None] == windows[:, None, :]
        return torch.zeros(same.shape, device=device).masked_fill(~same, float("-inf"))  # own region never empty

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.size
        t = _pad_hw(x.permute(0, 2, 3, 1), s, s)
        hp, wp = t.shape[1], t.shape[2]
        shift = self.shift if (hp > s or wp > s) else 0  # one window: nothing to shift
        if shift:
            t = torch.roll(t, (-shift, -shift), dims=(1, 2))
        parts = _to_windows(t, s, s) if self.mode == "window" else _to_grid(t, s)
        q, k, v = self.qkv(parts).chunk(3, dim=-1)
        mask: Optional[torch.Tensor] = None
        if self.rel_pos is not None:
            mask = self.rel_pos()  # (heads, N, N)
        if shift:
            shift_mask = self._shift_mask(hp, wp, x.device)[:, None]  # (windows, 1, N, N)
            if mask is not None:
                shift_mask = shift_mask + mask
            mask = shift_mask.repeat(b, 1, 1, 1)  # windows of every image, in the order of `parts`
        out = F.scaled_dot_product_attention(
            _heads(q, self.num_heads), _heads(k, self.num_heads), _heads(v, self.num_heads),
            attn_mask=None if mask is None else mask.to(q.dtype),
        )  # fmt: skip
        out = self.proj(_merge_heads(out))
        t = _from_windows(out, b, hp, wp, s, s) if self.mode == "window" else _from_grid(out, b, hp, wp, s)
        if shift:
            t = torch.roll(t, (shift, shift), dims=(1, 2))
        return t[:, :h, :w].permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, size={self.size}, mode={self.mode!r}, shift={self.shift}"


@register_notrace_module  # shape-dependent partitioning: one leaf of timm's FX graphs
class SpatialReductionAttention(nn.Module):
    """PVT's spatial-reduction attention (Twins' global sub-sampled attention is the same operator).

    Queries are every token; keys and values come from the map reduced by a
    conv of kernel and stride ``sr_ratio`` followed by LayerNorm.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        reduce = sr_ratio > 1
        self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio) if reduce else nn.Identity()
        self.norm = nn.LayerNorm(dim) if reduce else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        if self.sr_ratio > 1:
            r = self.sr_ratio
            reduced = self.sr(F.pad(x, (0, (-w) % r, 0, (-h) % r)))
            reduced = self.norm(reduced.flatten(2).transpose(1, 2))
        else:
            reduced = tokens
        k, v = self.kv(reduced).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(
            _heads(self.q(tokens), self.num_heads), _heads(k, self.num_heads), _heads(v, self.num_heads)
        )
        return self.proj(_merge_heads(out)).transpose(1, 2).reshape(b, c, h, w)


class StripeAttention(nn.Module):
    """One branch of CSWin: attention within ``wh x ww`` windows of its channels, plus LePE."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.lepe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, qkv: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
        """(B, H, W, 3, C') -> (B, H, W, C'), attending within ``wh x ww`` windows."""
        b, h, w, _, c = qkv.shape
        padded = _pad_hw(qkv.reshape(b, h, w, 3 * c), wh, ww)
        hp, wp = padded.shape[1], padded.shape[2]
        q, k, v = _to_windows(padded, wh, ww).chunk(3, dim=-1)  # (B * windows, wh * ww, C')
        pos = self.lepe(v.transpose(1, 2).reshape(-1, c, wh, ww)).flatten(2).transpose(1, 2)
        mask: Optional[torch.Tensor] = None
        if hp != h or wp != w:  # padded keys must not enter the softmax (every window holds a real one)
            real = _pad_hw(torch.ones(1, h, w, 1, device=qkv.device), wh, ww)
            keep = _to_windows(real, wh, ww).squeeze(-1) > 0  # (windows, wh * ww)
            mask = torch.zeros(keep.shape, device=qkv.device).masked_fill(~keep, float("-inf"))
            mask = mask[:, None, None, :].repeat(b, 1, 1, 1).to(q.dtype)  # (B * windows, 1, 1, N)
        out = F.scaled_dot_product_attention(
            _heads(q, self.num_heads), _heads(k, self.num_heads), _heads(v, self.num_heads), attn_mask=mask
        )
        out = _merge_heads(out) + pos
        return _from_windows(out, b, hp, wp, wh, ww)[:, :h, :w]


@register_notrace_module  # shape-dependent partitioning: one leaf of timm's FX graphs
class CrossShapedWindowAttention(nn.Module):
    """CSWin's cross-shaped window self-attention with locally-enhanced positional encoding (LePE).

    Half of the channels (and heads) attend within horizontal stripes of
    ``split_size`` rows, the other half within vertical stripes of
    ``split_size`` columns. In the last stage (``full=True``) one branch
    attends over the whole map. LePE adds a depthwise 3x3 conv of ``V``,
    computed inside each stripe, to the attention output.
    """

    def __init__(self, dim: int, num_heads: int, split_size: int, full: bool = False) -> None:
        super().__init__()
        self.split_size = split_size
        self.full = full
        branches = 1 if full else 2
        self.branch_dim = dim // branches
        branch_heads = num_heads if full else max(num_heads // 2, 1)
        if self.branch_dim % branch_heads:
            raise ValueError(f"{self.branch_dim} channels per branch do not split into {branch_heads} heads")
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # full: one branch over the whole map; else horizontal stripes, then vertical stripes
        self.branches = nn.ModuleList([StripeAttention(self.branch_dim, branch_heads) for _ in range(branches)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(x.permute(0, 2, 3, 1)).reshape(b, h, w, 3, c)
        sw = self.split_size
        outs = []
        for i, branch in enumerate(self.branches):
            if self.full:
                outs.append(branch(qkv, h, w))
            elif i == 0:
                outs.append(branch(qkv[..., : self.branch_dim], sw, w))  # stripes of sw rows
            else:
                outs.append(branch(qkv[..., self.branch_dim :], h, sw))  # stripes of sw columns
        return self.proj(torch.cat(outs, dim=-1)).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"split_size={self.split_size}, full={self.full}"
