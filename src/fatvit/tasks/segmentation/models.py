"""Semantic FPN (Kirillov et al., "Panoptic Feature Pyramid Networks", 2019) on FAT backbones.

As mmseg's ``FPN`` + ``FPNHead``, the paper's ADE20K setup: the four stage
maps through an FPN at 256 channels; each level goes through
conv3x3-BN-ReLU blocks at 128 channels, each block followed by a x2
bilinear upsampling, as many as bring it to stride 4 (one block for P2);
the four are summed, then dropout 0.1 and a 1x1 conv give the class
scores, upsampled to the input's size. The layers start as mmseg's: the
FPN's convs Xavier-uniform, the head's conv blocks Kaiming-normal (fan_out,
ReLU), the classifier (``conv_seg``) normal with std 0.01, biases 0.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from ...catalog import SEGMENTERS
from ...errors import FatvitError, unknown_choice
from ...models.backbone import FPNFeatures, StageFeatures, load_backbone_weights

__all__ = ["FPNHead", "SemanticFPN", "SEGMENTERS", "build_segmenter", "segmenter_names"]


class FPNHead(nn.Module):
    """Semantic FPN's head: every FPN level brought to the finest level's stride, summed, classified.

    Args:
        in_channels: the FPN's width.
        strides: the levels' strides, finest first (4, 8, 16, 32).
    """

    def __init__(
        self,
        in_channels: int,
        strides: List[int],
        num_classes: int,
        channels: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for stride in strides:
            steps = int(round(math.log2(stride / strides[0])))
            layers: List[nn.Module] = []
            for k in range(max(1, steps)):
                layers.append(Conv2dNormActivation(in_channels if k == 0 else channels, channels, 3))
                if steps:
                    layers.append(nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        # as mmseg starts them: ConvModules Kaiming-normal (fan_out, ReLU), conv_seg normal with std 0.01
        for layer in self.scale_heads.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        out = self.scale_heads[0](features[0])
        for head, x in zip(self.scale_heads[1:], features[1:]):
            # resized to the finest level's size as mmseg's FPNHead does: at odd input sizes the upsampled map
            # overshoots by a pixel, elsewhere the resize is exact (and an export needs no branch on the size)
            out = out + F.interpolate(head(x), size=out.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.dropout(out))


class SemanticFPN(nn.Module):
    """Backbone, FPN and :class:`FPNHead`; returns class scores ``(N, num_classes, H, W)`` at the input's size."""

    def __init__(self, backbone: StageFeatures, num_classes: int, fpn_channels: int = 256, fpn_init: str = "xavier"
                 ) -> None:  # fmt: skip
        super().__init__()
        self.backbone = FPNFeatures(backbone, fpn_channels, init=fpn_init)
        strides = [2 ** (i + 2) for i in backbone.out_indices]
        self.decode_head = FPNHead(fpn_channels, strides, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.decode_head(list(self.backbone(x).values()))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def segmenter_names() -> list[str]:
    return list(SEGMENTERS)


def build_segmenter(
    name: str, num_classes: int = 150, backbone_weights: Optional[str] = None, fpn_init: str = "xavier",
    **backbone_kwargs: Any,
) -> SemanticFPN:  # fmt: skip
    """Segmenter ``name`` for ``num_classes`` classes (150 for ADE20K).

    Args:
        backbone_weights: a classification checkpoint of the backbone (fatvit's or the authors').
        fpn_init: how the FPN's convs start: ``xavier`` (mmseg's) or ``kaiming`` (torchvision's).
        backbone_kwargs: model arguments of the backbone (``interaction``, ``drop_path_rate`` ...).

    Raises:
        FatvitError: an unknown name, or a bad argument.
    """
    if name not in SEGMENTERS:
        raise unknown_choice("segmenter", name, SEGMENTERS)
    if num_classes < 2:
        raise FatvitError(f"num_classes must be at least 2, got {num_classes}")
    cfg = SEGMENTERS[name]
    kwargs = cfg.backbone_kwargs(backbone_kwargs)
    stages = StageFeatures(cfg.backbone, (0, 1, 2, 3), **kwargs)
    if backbone_weights:
        load_backbone_weights(stages, backbone_weights)
    model = SemanticFPN(stages, num_classes, fpn_init=fpn_init)
    model.config_name = name
    return model
