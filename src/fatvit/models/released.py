"""The authors' released forward pass, run on a fatvit model's weights: the speed baseline.

fatvit's FAT with ``interaction="reference"`` computes what the released FAT
computes. :class:`ReleasedFAT` runs the same modules through the *operations*
of the released code, in its order, so that benchmarks can put fatvit's
implementation beside the authors' on identical weights without their code:

* channels-first maps throughout;
* attention as ``softmax(scale * q @ k^T) @ v`` on contiguous per-head
  copies of ``q``, ``k`` and ``v`` (no fused kernel), with the released
  code's reshapes;
* the local branch's gate computed as in the released code, including the
  ``sigmoid`` of the local branch that it computes and never uses;
* BatchNorm as a separate op after each conv; ``x + CPE(x)`` and the
  ConvFFN's ``h + DWConv(h)`` as adds;
* PyTorch's own depthwise-conv backward (``nn.Conv2d``);
* the head as adaptive average pooling of the normed map, then the linear.

Its outputs equal the model's (a test checks); only the time differs.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import FASA, ConvFFN, RefinedDownsample
from ..layers.dwconv import DepthwiseConv2d
from .fat import FAT, FATBlock

__all__ = ["ReleasedFAT"]


def _released_fasa(attn: FASA, x: torch.Tensor) -> torch.Tensor:
    """FASA as the released code computes it (reference interaction)."""
    b, c, h, w = x.shape
    d = attn.head_dim
    kv_h, kv_w = math.ceil(h / attn.window_size), math.ceil(w / attn.window_size)
    q_map = attn.q(x)
    q = q_map.reshape(b, -1, d, h * w).transpose(-1, -2).contiguous()
    kv = attn.kv(attn.pool(x)).reshape(b, 2, -1, d, kv_h * kv_w).permute(1, 0, 2, 4, 3).contiguous()
    k, v = kv[0], kv[1]
    weights = torch.softmax(d**-0.5 * q @ k.transpose(-1, -2), -1)
    x_global = (weights @ v).transpose(-1, -2).reshape(b, c, h, w)
    x_local = attn.local_mixer(q_map)
    x_local = x_local * torch.sigmoid(x_local)
    local_gate = torch.sigmoid(x_global)
    torch.sigmoid(x_local)  # computed by the released code, unused
    x_local = x_local * local_gate
    return attn.mixer(x_local * x_global)


def _released_ffn(ffn: ConvFFN, x: torch.Tensor) -> torch.Tensor:
    """The ConvFFN as the released code computes it: the residual ``x + DWConv(x)`` as an add."""
    x = ffn.act(ffn.fc1(x))
    x = x + ffn.dwconv(x) if ffn.stride == 1 else ffn.dwconv(x)
    return ffn.fc2(ffn.bn(x))


def _released_block(block: FATBlock, x: torch.Tensor) -> torch.Tensor:
    x = x + block.cpe(x)
    x = x + block.drop_path1(_released_fasa(block.attn, block.norm1(x)))
    return block.downsample(x) + block.drop_path2(_released_ffn(block.ffn, block.norm2(x)))


class ReleasedFAT(nn.Module):
    """A copy of a FAT model (reference interaction, FASA with refined downsampling, CPE) run as the released code.

    The copy's depthwise convolutions are plain ``nn.Conv2d`` (fatvit's
    :class:`~fatvit.layers.dwconv.DepthwiseConv2d` has a faster backward);
    its state dict is the model's under ``model.``.
    """

    def __init__(self, model: FAT) -> None:
        super().__init__()
        model = copy.deepcopy(model)
        blocks = [block for stage in model.layers for block in stage.blocks]
        if (
            model.interaction != "reference"
            or not all(isinstance(b, FATBlock) and isinstance(b.attn, FASA) and b.use_cpe for b in blocks)
            or not all(isinstance(b.attn.pool, (RefinedDownsample, nn.Identity)) for b in blocks)
            or model.global_pool != "avg"
        ):
            raise ValueError(
                "the released code has only FASA with the reference interaction, refined downsampling, "
                "CPE and average pooling"
            )
        # the released code's depthwise convs are plain nn.Conv2d (PyTorch's own backward)
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, DepthwiseConv2d):
                    plain = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                      child.padding, child.dilation, child.groups, child.bias is not None)  # fmt: skip
                    plain.weight, plain.bias = child.weight, child.bias
                    setattr(module, name, plain)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self.model
        x = model.patch_embed(x)
        for stage in model.layers:
            for block in stage.blocks:
                x = _released_block(block, x)
        x = F.adaptive_avg_pool2d(model.norm(x), 1).flatten(1)
        return model.head(model.head_drop(x))
