"""The paper's COCO detectors on FAT backbones, built from torchvision's RetinaNet and Mask R-CNN.

- RetinaNet: the backbone's C3-C5, FPN at 256 channels, P6/P7 from C5
  (mmdet's ``add_extra_convs='on_input'``), torchvision's head and anchors
  (3 scales x 3 ratios per level, sizes 32 to 512).
- Mask R-CNN: C2-C5, FPN at 256 channels with P6 by max pooling, torchvision's
  RPN, box and mask heads run as mmdet's 1x runs them (aligned RoIAlign, L1
  box losses, 1000 proposals in training: :mod:`fatvit.tasks.detection.rcnn`);
  ``num_classes`` objects plus the background.

``num_classes`` counts object classes (80 for COCO). A detector predicts
labels ``class index + label_offset``: RetinaNet scores classes 0..K-1,
Mask R-CNN reserves 0 for the background.

The configurations (:data:`DETECTORS`, kept in :mod:`fatvit.catalog`) are data:
one per head and backbone, with the paper's parameter counts and COCO val2017
figures.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN, RetinaNet
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ...catalog import DETECTORS
from ...errors import FatvitError, unknown_choice
from ...models.backbone import FPNFeatures, LastLevelP6P7FromC5, StageFeatures, features_autocast, load_backbone_weights
from .config import BOX_LOSSES
from .rcnn import mmdet_two_stages
from .retinanet import retinanet_assigner, retinanet_head

__all__ = ["DETECTORS", "build_detector", "detector_names", "FP32HeadsRetinaNet", "FP32HeadsMaskRCNN"]


class FP32Heads:
    """A torchvision detector whose forward keeps an active autocast to the backbone and neck.

    Under ``with torch.autocast(device, dtype=...): model(images)``, the way most
    inference code runs a model in mixed precision, a plain torchvision detector
    builds anchors, decodes boxes and rescales them to the image in the
    autocast dtype (bf16 boxes on bf16's grid). Here the backbone and neck run in
    that dtype and everything after them in float32
    (:func:`fatvit.models.backbone.features_autocast`), as fatvit's engine runs them.
    """

    def forward(self, images: List[torch.Tensor], targets: Optional[List[Dict[str, torch.Tensor]]] = None) -> Any:
        device_type = images[0].device.type if len(images) else "cpu"
        if not torch.is_autocast_enabled(device_type):
            return super().forward(images, targets)
        with features_autocast(self, torch.get_autocast_dtype(device_type)):
            return super().forward(images, targets)


class FP32HeadsRetinaNet(FP32Heads, RetinaNet):
    """torchvision's RetinaNet whose heads and box decoding stay in float32 under autocast (:class:`FP32Heads`)."""


class FP32HeadsMaskRCNN(FP32Heads, MaskRCNN):
    """torchvision's Mask R-CNN whose RPN, RoI heads and box decoding stay in float32 under autocast
    (:class:`FP32Heads`)."""


def detector_names() -> list[str]:
    return list(DETECTORS)


def build_detector(
    name: str,
    num_classes: int = 80,
    min_size: int = 800,
    max_size: int = 1333,
    backbone_weights: Optional[str] = None,
    detections_per_img: int = 100,
    score_thresh: float = 0.05,
    box_loss: str = "l1",
    rpn_post_nms_train: int = 1000,
    aligned_roi: bool = True,
    p7_relu: bool = False,
    mmdet_targets: bool = True,
    fpn_init: str = "xavier",
    **backbone_kwargs: Any,
) -> nn.Module:
    """Detector ``name`` for ``num_classes`` object classes, resizing images to ``min_size``/``max_size``.

    Args:
        backbone_weights: a classification checkpoint of the backbone (fatvit's or the authors').
        detections_per_img: kept per image after NMS (mmdet's 100; torchvision's RetinaNet default is 300).
        score_thresh: detections scoring less are dropped before NMS.
        box_loss: Mask R-CNN's box regression losses, ``l1`` (mmdet's) or ``smooth_l1`` (torchvision's).
        rpn_post_nms_train: Mask R-CNN's proposals kept after NMS in training (mmdet's 1000).
        aligned_roi: Mask R-CNN's RoIAlign as mmcv's (``aligned=True``, adaptive samples), else torchvision's.
        p7_relu: RetinaNet's ReLU between P6 and P7 (torchvision's), else none (mmdet's).
        mmdet_targets: training targets and loss normalisation as mmdet's (RetinaNet: losses over the batch's
            positives, mmdet's assigner; Mask R-CNN: mmdet's assigners, aligned binary mask targets), else
            torchvision's.
        fpn_init: how the FPN's convs start: ``xavier`` (mmdet's) or ``kaiming`` (torchvision's).
        backbone_kwargs: model arguments of the backbone (``interaction``, ``drop_path_rate`` ...).

    Raises:
        FatvitError: an unknown name, or a bad argument.
    """
    if name not in DETECTORS:
        raise unknown_choice("detector", name, DETECTORS)
    if num_classes < 1:
        raise FatvitError(f"num_classes must be at least 1, got {num_classes}")
    if box_loss not in BOX_LOSSES:
        raise FatvitError(f"box_loss must be one of {', '.join(BOX_LOSSES)}, got {box_loss!r}")
    if min_size < 32 or max_size < min_size:
        raise FatvitError(f"need 32 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}")
    cfg = DETECTORS[name]
    kwargs = cfg.backbone_kwargs(backbone_kwargs)
    common = dict(min_size=min_size, max_size=max_size, detections_per_img=detections_per_img)
    if cfg.head == "retinanet":
        stages = StageFeatures(cfg.backbone, (1, 2, 3), **kwargs)
        neck = FPNFeatures(stages, 256, LastLevelP6P7FromC5(stages.out_channels[-1], 256, p7_relu), fpn_init)
        head = retinanet_head(neck.out_channels, num_classes, mmdet_targets)
        model: nn.Module = FP32HeadsRetinaNet(neck, num_classes, head=head, score_thresh=score_thresh, **common)
        if mmdet_targets:
            model.proposal_matcher = retinanet_assigner()
        model.label_offset = 0
    else:
        stages = StageFeatures(cfg.backbone, (0, 1, 2, 3), **kwargs)
        neck = FPNFeatures(stages, 256, LastLevelMaxPool(), fpn_init)
        model = FP32HeadsMaskRCNN(neck, num_classes=num_classes + 1, box_detections_per_img=detections_per_img,
                         box_score_thresh=score_thresh, min_size=min_size, max_size=max_size)  # fmt: skip
        model = mmdet_two_stages(model, box_loss, rpn_post_nms_train, aligned_roi, mmdet_targets)
        model.label_offset = 1
    if backbone_weights:
        load_backbone_weights(stages, backbone_weights)
    model.num_classes = num_classes
    model.config_name = name
    return model
