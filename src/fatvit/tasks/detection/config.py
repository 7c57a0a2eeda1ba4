"""The detection config: COCO, the 1x recipe (12 epochs, steps at 8 and 11) by default."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional

from ...config import DenseConfig

__all__ = ["DetectConfig", "BOX_LOSSES", "SETTINGS"]

#: What a detector's file records that ``detect eval`` and ``detect predict`` may change (``--set KEY=VALUE``).
SETTINGS = ("min_size", "max_size", "detections_per_img", "score_thresh")

#: Mask R-CNN's box regression losses (``box_loss``).
BOX_LOSSES = ("l1", "smooth_l1")


@dataclass
class DetectConfig(DenseConfig):
    """COCO detection: the 1x recipe (12 epochs, steps at 8 and 11) by default; ``model`` names a detector."""

    TASK: ClassVar[str] = "detect"
    BEFORE_KEYS: ClassVar[Dict[str, Any]] = dict(
        no_decay_1d=True,
        filter_empty_gt=False,
        min_image_side=0,
        group_by_aspect_ratio=False,
        box_loss="smooth_l1",
        rpn_post_nms_train=2000,
        aligned_roi=False,
        p7_relu=True,
        mmdet_targets=False,
    )
    model: str = "retinanet_fat_b0"
    epochs: Optional[int] = 12
    sched: str = "multistep"
    decay_milestones: List[float] = field(default_factory=lambda: [8.0, 11.0])
    warmup_steps: Optional[int] = 500
    warmup_lr: float = 1e-7
    min_lr: float = 0.0
    min_size: int = 800  # images are resized to this shorter side, the longer one at most max_size
    max_size: int = 1333
    filter_empty_gt: bool = True  # leave images without annotations out of training (mmdet's filter_cfg)
    min_image_side: int = 32  # with filter_empty_gt, also images whose shorter side is smaller (mmdet's min_size)
    group_by_aspect_ratio: bool = True  # each batch of landscape or of portrait images (mmdet, torchvision)
    box_loss: str = "l1"  # Mask R-CNN's RPN and box head: l1 (mmdet's) or smooth_l1 (torchvision's, beta 1/9)
    rpn_post_nms_train: int = 1000  # Mask R-CNN: proposals kept after NMS in training (mmdet's; torchvision 2000)
    aligned_roi: bool = True  # Mask R-CNN's RoIAlign: aligned, adaptive samples (mmcv's); false: torchvision's
    p7_relu: bool = False  # RetinaNet: a ReLU between P6 and P7 (torchvision's); false: mmdet's on_input
    # training targets as mmdet's: RetinaNet's losses over the batch's positive anchors, mmdet's MaxIoUAssigner
    # (low-quality matches from min_pos_iou), Mask R-CNN's mask targets by aligned RoIAlign binarised at 0.5;
    # false: torchvision's (per-image normalisation, its Matcher, soft targets of unaligned RoIAlign)
    mmdet_targets: bool = True
    detections_per_img: int = 100
    score_thresh: float = 0.05  # detections scoring less are dropped before NMS (mmdet's and torchvision's 0.05)
    # validation: run each batch as one forward padded to its largest image (faster with mixed sizes, but FAT's
    # GroupNorm(1, C) and global attention then see the padding: an image's detections depend on its partners);
    # false: one forward per image size in the batch, each image scored as alone
    pad_eval_batches: bool = False

    def check(self) -> None:
        super().check()
        need = self.need
        need(self.min_size >= 32, "min_size", "at least 32")
        need(self.max_size >= self.min_size, "max_size", f"at least min_size ({self.min_size})")
        need(self.detections_per_img >= 1, "detections_per_img", "at least 1")
        need(self.min_image_side >= 0, "min_image_side", "0 or more")
        need(self.box_loss in BOX_LOSSES, "box_loss", f"one of {', '.join(BOX_LOSSES)}")
        need(self.rpn_post_nms_train >= 1, "rpn_post_nms_train", "at least 1")
        need(0 <= self.score_thresh < 1, "score_thresh", "in [0, 1)")
