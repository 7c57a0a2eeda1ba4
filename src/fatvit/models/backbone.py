"""Backbones for dense prediction: a classification model's stage maps, with an FPN, in torchvision's interface.

torchvision's detectors take a ``backbone`` module with an ``out_channels``
attribute whose forward returns an ordered dict of feature maps. Here:

- :class:`StageFeatures`: the stage maps (strides 4, 8, 16, 32) of a FAT model
  or of any timm model with ``features_only``. A FAT backbone follows the
  authors' dense setup: each stage's feature is taken before the stage
  downsamples (see ``FATStage.forward_to_feature``) and is followed by an
  extra ``GroupNorm(1, C)``; the classifier and the final norm are dropped,
  so every backbone parameter is used.
- :class:`FPNFeatures`: those maps through torchvision's
  ``FeaturePyramidNetwork`` (256 channels), with an optional extra block,
  its convs initialised as mmdet's and mmseg's FPN (Xavier-uniform, biases 0)
  or, with ``init="kaiming"``, as torchvision's (Kaiming-uniform, ``a=1``).
  Under mixed precision only this part runs in the low dtype (see
  :func:`features_autocast`): what follows it (heads, anchors, box decoding,
  NMS) runs in float32.
- :class:`LastLevelP6P7FromC5`: RetinaNet's P6/P7 computed from C5 always
  (mmdet's ``add_extra_convs='on_input'``), without a ReLU between them
  (``relu_before_extra_convs=False``). torchvision's ``LastLevelP6P7``
  takes P5 instead when C5 already has the FPN's width, as FAT-B0's has,
  and puts a ReLU before P7.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from timm.layers import GroupNorm1
from torch import nn
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork, LastLevelP6P7

from ..catalog import FPN_INITS
from ..checkpoint import CheckpointError, apply_state_dict, read_checkpoint
from ..errors import FatvitError
from . import create_model, is_fat

__all__ = [
    "StageFeatures", "FPNFeatures", "LastLevelP6P7FromC5", "features_autocast", "load_backbone_weights",
]  # fmt: skip

#: The classification parts of a FAT checkpoint that a backbone has no use for.
CLASSIFIER_KEYS = ("head.", "norm.")


class StageFeatures(nn.Module):
    """The stage maps ``out_indices`` (0..3: strides 4..32) of classification model ``name``.

    Returns an ordered dict ``{"0": map, "1": map, ...}`` in the order of
    ``out_indices``; ``out_channels`` lists their widths.

    Args:
        name: a FAT model (``fat_b0`` ...) or any timm model with ``features_only``.
        out_indices: which stages.
        extra_norm: follow each map by ``GroupNorm(1, C)`` (default: for FAT models, as the authors do).
        model_kwargs: passed to the model (``drop_path_rate``, ``interaction`` ...).
    """

    def __init__(
        self,
        name: str,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        extra_norm: Optional[bool] = None,
        **model_kwargs: Any,
    ) -> None:
        super().__init__()
        self.name = name
        self.out_indices = [int(i) for i in out_indices]
        self.is_fat = is_fat(name)
        if self.is_fat:
            body = create_model(name, num_classes=0, **model_kwargs)
            body.prune_intermediate_layers(self.out_indices, prune_norm=True, prune_head=True)
            channels = [body.feature_info[i]["num_chs"] for i in self.out_indices]
        else:  # the feature at stride 2 ** (i + 2), whatever index the model gives it
            reductions = create_model(name, features_only=True, **model_kwargs).feature_info.reduction()
            wanted = [2 ** (i + 2) for i in self.out_indices]
            missing = [r for r in wanted if r not in reductions]
            if missing:
                raise FatvitError(f"{name} has no feature map at stride {missing[0]} (it has {reductions})")
            indices = [len(reductions) - 1 - reductions[::-1].index(r) for r in wanted]  # the deepest at that stride
            body = create_model(name, features_only=True, out_indices=indices, **model_kwargs)
            channels = list(body.feature_info.channels())
        self.body = body
        self.out_channels = channels
        if extra_norm is None:
            extra_norm = self.is_fat
        self.norms = nn.ModuleList(GroupNorm1(c) if extra_norm else nn.Identity() for c in channels)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if self.is_fat:
            maps = self.body.forward_intermediates(x, indices=self.out_indices, intermediates_only=True)
        else:
            maps = self.body(x)
        return OrderedDict((str(i), norm(m)) for i, (norm, m) in enumerate(zip(self.norms, maps)))


class LastLevelP6P7FromC5(LastLevelP6P7):
    """RetinaNet's P6 (3x3 stride-2 conv of C5) and P7 (3x3 stride-2 conv of P6, no ReLU between), from C5 at
    any width: mmdet's ``add_extra_convs='on_input'`` with ``relu_before_extra_convs=False``. ``relu`` puts
    torchvision's ReLU before P7."""

    def __init__(self, in_channels: int, out_channels: int, relu: bool = False) -> None:
        super().__init__(in_channels, out_channels)
        self.use_P5 = False
        self.relu = relu

    def forward(
        self, p: List[torch.Tensor], c: List[torch.Tensor], names: List[str]
    ) -> Tuple[List[torch.Tensor], List[str]]:
        p6 = self.p6(c[-1])
        p.extend([p6, self.p7(torch.relu(p6) if self.relu else p6)])
        names.extend(["p6", "p7"])
        return p, names


class FPNFeatures(nn.Module):
    """``backbone``'s maps through torchvision's ``FeaturePyramidNetwork``; ``out_channels`` is the FPN's width.

    With :attr:`amp_dtype` set (by :func:`features_autocast`) the backbone and
    the FPN run under autocast to that dtype and their maps come out as float32.
    """

    def __init__(
        self, backbone: StageFeatures, out_channels: int = 256, extra_blocks: Optional[ExtraFPNBlock] = None,
        init: str = "xavier",
    ) -> None:  # fmt: skip
        super().__init__()
        if init not in FPN_INITS:
            raise FatvitError(f"fpn_init must be one of {', '.join(FPN_INITS)}, got {init!r}")
        self.body = backbone
        self.fpn = FeaturePyramidNetwork(list(backbone.out_channels), out_channels, extra_blocks=extra_blocks)
        if init == "xavier":  # as mmdet's and mmseg's FPN (init_cfg Xavier, uniform), extra convs too
            for layer in self.fpn.modules():
                if isinstance(layer, nn.Conv2d):
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.zeros_(layer.bias)
        self.out_channels = out_channels
        self.amp_dtype: Optional[torch.dtype] = None

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if self.amp_dtype is None:
            return self.fpn(self.body(x))
        with torch.autocast(x.device.type, dtype=self.amp_dtype):
            maps = self.fpn(self.body(x))
        return OrderedDict((k, m.float()) for k, m in maps.items())


@contextmanager
def features_autocast(model: nn.Module, dtype: Optional[torch.dtype]) -> Iterator[None]:
    """Mixed precision as mmdet's fp16 runs a detector: ``model``'s backbone and neck (its
    :class:`FPNFeatures`) in ``dtype``, everything after them in float32, with autocast off.

    Under plain autocast torchvision's detectors build anchors, decode boxes and
    rescale them to the image in the features' dtype: in bf16 a box
    (1000.3, 700.7, 1033.1, 733.9) comes out as (1000, 700, 1032, 732).
    ``model`` may be wrapped (DDP's ``module``, ``torch.compile``'s ``_orig_mod``);
    ``dtype`` None runs everything in float32.
    """
    inner = model
    while not isinstance(getattr(inner, "backbone", None), FPNFeatures):
        unwrapped = getattr(inner, "module", None) or getattr(inner, "_orig_mod", None)
        if unwrapped is None:
            raise TypeError(f"{type(model).__name__} has no FPNFeatures backbone")
        inner = unwrapped
    neck = inner.backbone
    before = neck.amp_dtype
    neck.amp_dtype = dtype
    try:
        with torch.autocast(next(neck.parameters()).device.type, enabled=False):
            yield
    finally:
        neck.amp_dtype = before


def load_backbone_weights(backbone: StageFeatures, path: str | Path) -> None:
    """Load a classification checkpoint of ``backbone``'s model (fatvit's or the authors' layout) into it.

    The classifier and final norm of the checkpoint are left out; every
    other key must fit, or a :class:`CheckpointError` names the ones that do not.
    """
    if not backbone.is_fat:
        raise CheckpointError(f"backbone weights load into FAT backbones only, not {backbone.name}")
    state_dict, meta = read_checkpoint(path)
    own = backbone.body.state_dict()
    kept = OrderedDict((k, v) for k, v in state_dict.items() if k in own or not k.startswith(CLASSIFIER_KEYS))
    apply_state_dict(backbone.body, kept, path, strict=True, meta=meta)
