"""RetinaNet's training targets and losses as mmdet's ``retinanet_r50_fpn_1x`` computes them, on torchvision's parts.

torchvision and mmdet share RetinaNet's head (four 3x3 convs per branch,
normal init std 0.01, the classifier's bias at the 0.01 prior), anchors, box
coder, focal loss (alpha 0.25, gamma 2) and L1 box loss. Where they differ,
fatvit follows mmdet:

- the losses are summed over the batch and divided by the batch's positive
  anchors (each image counting at least one: mmdet's ``avg_factor``);
  torchvision divides each image's losses by its own positives and averages
  the images, so an image with one object weighs as much as one with twenty;
- the anchors are assigned by :class:`~fatvit.tasks.detection.assign.MaxIoUAssigner`
  (0.5, 0.4, ``min_pos_iou=0``).

:func:`retinanet_head` and :func:`retinanet_assigner` give the parts to a torchvision ``RetinaNet``.
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import sigmoid_focal_loss

from .assign import MaxIoUAssigner

__all__ = ["MMDetRetinaNetHead", "retinanet_head", "retinanet_assigner", "ANCHORS_PER_LOCATION"]

#: torchvision's (and mmdet's) RetinaNet anchors: 3 scales x 3 aspect ratios at each location of each level.
ANCHORS_PER_LOCATION = 9


class MMDetRetinaNetHead(RetinaNetHead):
    """torchvision's RetinaNet head whose losses are normalised by the batch's positive anchors (mmdet's)."""

    def compute_loss(
        self, targets: List[Dict[str, Tensor]], head_outputs: Dict[str, Tensor], anchors: List[Tensor],
        matched_idxs: List[Tensor],
    ) -> Dict[str, Tensor]:  # fmt: skip
        cls_logits, deltas = head_outputs["cls_logits"], head_outputs["bbox_regression"]
        cls_sum, box_sum = cls_logits.new_zeros(()), deltas.new_zeros(())
        positives = 0
        for target, logits, regression, image_anchors, matched in zip(targets, cls_logits, deltas, anchors,
                                                                       matched_idxs):  # fmt: skip
            foreground = torch.where(matched >= 0)[0]
            positives += max(1, foreground.numel())
            classes = torch.zeros_like(logits)
            classes[foreground, target["labels"][matched[foreground]]] = 1.0
            valid = matched != MaxIoUAssigner.BETWEEN_THRESHOLDS
            cls_sum = cls_sum + sigmoid_focal_loss(logits[valid], classes[valid], reduction="sum")
            encoded = self.regression_head.box_coder.encode_single(
                target["boxes"][matched[foreground]], image_anchors[foreground]
            )
            box_sum = box_sum + F.l1_loss(regression[foreground], encoded, reduction="sum")
        return {"classification": cls_sum / positives, "bbox_regression": box_sum / positives}


def retinanet_head(channels: int, num_classes: int, mmdet: bool = True) -> RetinaNetHead:
    """RetinaNet's head on an FPN of ``channels``: with mmdet's loss normalisation, or torchvision's."""
    return (MMDetRetinaNetHead if mmdet else RetinaNetHead)(channels, ANCHORS_PER_LOCATION, num_classes)


def retinanet_assigner() -> MaxIoUAssigner:
    """mmdet's anchor assigner for RetinaNet: positive from IoU 0.5, negative under 0.4, low-quality matches at
    any IoU."""
    return MaxIoUAssigner(0.5, 0.4, min_pos_iou=0.0)
