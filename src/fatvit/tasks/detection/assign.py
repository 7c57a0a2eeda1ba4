"""mmdet's ``MaxIoUAssigner``, in the form torchvision's detectors call a proposal matcher.

torchvision's ``Matcher`` and mmdet's assigner agree on the thresholds: a box
whose best IoU with the ground truth is at least ``pos_iou`` is matched to that
object, below ``neg_iou`` it is background, in between it is ignored. They
differ on low-quality matches, which keep an object whose boxes all overlap it
less than ``pos_iou`` from going unmatched:

- mmdet (``match_low_quality=True``): for each object whose best IoU is at
  least ``min_pos_iou``, the boxes with that IoU (ties included) are matched
  to that object, later objects overriding earlier ones;
- torchvision: those boxes are matched to the object each overlaps most, at
  any IoU (RPN and RetinaNet), or there are no low-quality matches at all (the
  RoI heads).

mmdet's 1x configs: the RPN's assigner is (0.7, 0.3, ``min_pos_iou=0.3``), the
RoI heads' (0.5, 0.5, ``min_pos_iou=0.5``), RetinaNet's (0.5, 0.4,
``min_pos_iou=0``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MaxIoUAssigner"]


class MaxIoUAssigner:
    """Called on an ``(objects, boxes)`` IoU matrix, returns for each box the index of its object, -1 for the
    background or -2 for an ignored box, as torchvision's ``Matcher`` does."""

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, pos_iou: float, neg_iou: float, min_pos_iou: float, match_low_quality: bool = True) -> None:
        if neg_iou > pos_iou:
            raise ValueError(f"neg_iou ({neg_iou}) must not exceed pos_iou ({pos_iou})")
        self.pos_iou, self.neg_iou = pos_iou, neg_iou
        self.min_pos_iou, self.match_low_quality = min_pos_iou, match_low_quality

    def __call__(self, iou: Tensor) -> Tensor:
        if iou.shape[0] == 0:
            return torch.full((iou.shape[1],), self.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=iou.device)
        best, matches = iou.max(dim=0)
        matches = matches.clone()
        matches[best < self.pos_iou] = self.BETWEEN_THRESHOLDS
        matches[best < self.neg_iou] = self.BELOW_LOW_THRESHOLD
        if self.match_low_quality:
            highest = iou.max(dim=1).values
            # object i takes the boxes at its best IoU if that is at least min_pos_iou; the last such object wins
            takes = (iou == highest[:, None]) & (highest[:, None] >= self.min_pos_iou)
            taken = takes.any(dim=0)
            last = takes.shape[0] - 1 - takes.flip(0).int().argmax(dim=0)
            matches[taken] = last[taken]
        return matches
