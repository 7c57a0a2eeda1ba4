"""Mask R-CNN's two stages as mmdet's 1x configs run them, on torchvision's parts.

torchvision's Mask R-CNN and mmdet's ``mask_rcnn_r50_fpn_1x`` share their
anchors, samplers, matchers, box coders and level mapping. Where they differ,
fatvit follows mmdet:

- :class:`AlignedMultiScaleRoIAlign`: RoIAlign with ``aligned=True`` (a box's
  corners shifted by half a pixel, no minimum size of 1 pixel) and
  ``sampling_ratio=0`` (as many samples as each bin covers), as mmcv's
  ``RoIAlign``; torchvision's pooler has ``aligned=False`` and 2 samples.
- :class:`MMDetRegionProposalNetwork` and :class:`MMDetRoIHeads`: the box
  regression losses are L1 (mmdet's ``L1Loss``), normalised as torchvision's
  smooth L1 (beta 1/9) is and as mmdet's are: the RPN's by the sampled
  anchors, the box head's by the sampled proposals. ``box_loss="smooth_l1"``
  keeps torchvision's.
- The RPN keeps 1000 proposals per image after NMS in training (mmdet's
  ``max_per_img``; torchvision's default is 2000), 1000 in testing.
- With ``mmdet_targets``: the RPN's and RoI heads' boxes are assigned by
  mmdet's :class:`~fatvit.tasks.detection.assign.MaxIoUAssigner` (RPN 0.7/0.3,
  low-quality matches from IoU 0.3; RoI heads 0.5/0.5, low-quality matches
  from 0.5, which torchvision's RoI heads do not make), and the mask targets
  are cropped from the object masks by aligned RoIAlign (``aligned=True``,
  adaptive samples) and binarised at 0.5, as mmdet's ``mask_target``;
  torchvision crops with ``aligned=False`` and 2 samples and trains on the
  soft crop.
- The box head's layers start as mmdet's: the shared fully connected layers
  Xavier-uniform, the classifier normal with std 0.01 and the box regressor
  with std 0.001, biases 0 (torchvision keeps PyTorch's default for linear
  layers). The RPN head and mask head start as both libraries start them.

:func:`mmdet_two_stages` puts these parts, with the other settings of mmdet's
config written out, into a torchvision ``MaskRCNN``.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _setup_scales

from .assign import MaxIoUAssigner

__all__ = [
    "AlignedMultiScaleRoIAlign",
    "aligned_mask_loss",
    "MMDetRegionProposalNetwork",
    "MMDetRoIHeads",
    "box_regression_loss",
    "mmdet_two_stages",
]

#: The FPN levels the RoI poolers read (P2-P5).
LEVELS = ["0", "1", "2", "3"]


def box_regression_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    """The summed box regression loss: ``l1`` (mmdet's) or ``smooth_l1`` (torchvision's, beta 1/9)."""
    if kind == "l1":
        return F.l1_loss(pred, target, reduction="sum")
    return F.smooth_l1_loss(pred, target, beta=1 / 9, reduction="sum")


class AlignedMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's multi-scale RoIAlign (levels picked as mmdet's ``finest_scale=56`` picks them) with
    ``aligned=True``, as mmcv's ``RoIAlign``."""

    def forward(self, x: Dict[str, Tensor], boxes: List[Tensor], image_shapes: List[Tuple[int, int]]) -> Tensor:
        maps = [x[name] for name in self.featmap_names]
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(maps, image_shapes, self.canonical_scale, self.canonical_level)
        rois = _convert_to_roi_format(boxes)
        levels = self.map_levels(boxes)
        out = maps[0].new_zeros((rois.shape[0], maps[0].shape[1], *self.output_size))
        for level, (features, scale) in enumerate(zip(maps, self.scales)):
            at = torch.where(levels == level)[0]
            pooled = roi_align(features, rois[at], self.output_size, scale, self.sampling_ratio, aligned=True)
            out[at] = pooled.to(out.dtype)
        return out


class MMDetRegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN with the box loss ``box_loss`` (``l1`` or ``smooth_l1``)."""

    box_loss = "l1"

    def compute_loss(
        self, objectness: Tensor, pred_bbox_deltas: Tensor, labels: List[Tensor], regression_targets: List[Tensor]
    ) -> Tuple[Tensor, Tensor]:
        positive, negative = self.fg_bg_sampler(labels)
        positive = torch.where(torch.cat(positive))[0]
        sampled = torch.cat([positive, torch.where(torch.cat(negative))[0]])
        targets = torch.cat(regression_targets)
        box = box_regression_loss(pred_bbox_deltas[positive], targets[positive], self.box_loss) / sampled.numel()
        objectness_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], torch.cat(labels)[sampled])
        return objectness_loss, box


def aligned_mask_loss(
    mask_logits: Tensor, proposals: List[Tensor], gt_masks: List[Tensor], gt_labels: List[Tensor],
    matched: List[Tensor],
) -> Tensor:  # fmt: skip
    """Mask R-CNN's mask loss as mmdet's: each positive proposal's target is its object's mask cropped by aligned
    RoIAlign (adaptive samples) to the logits' size and binarised at 0.5; binary cross-entropy of the logits of
    the object's class, averaged over every pixel."""
    size = mask_logits.shape[-1]
    labels = torch.cat([lab[m] for lab, m in zip(gt_labels, matched)])
    targets = []
    for masks, boxes, objects in zip(gt_masks, proposals, matched):
        rois = torch.cat([objects[:, None].to(boxes.dtype), boxes], dim=1)
        crops = roi_align(masks[:, None].to(rois.dtype), rois, (size, size), 1.0, sampling_ratio=0, aligned=True)
        targets.append((crops[:, 0] >= 0.5).to(mask_logits.dtype))
    if labels.numel() == 0:
        return mask_logits.sum() * 0
    logits = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(logits, torch.cat(targets))


def init_box_head_as_mmdet(heads: RoIHeads) -> None:
    """The box head's layers as mmdet's ``Shared2FCBBoxHead`` starts them: Xavier-uniform shared layers, the
    classifier normal (std 0.01), the box regressor normal (std 0.001), biases 0."""
    for layer in heads.box_head.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    for layer, std in ((heads.box_predictor.cls_score, 0.01), (heads.box_predictor.bbox_pred, 0.001)):
        nn.init.normal_(layer.weight, std=std)
        nn.init.zeros_(layer.bias)


class MMDetRoIHeads(RoIHeads):
    """torchvision's box and mask heads with the box loss ``box_loss`` and, with ``aligned_mask_targets``,
    mmdet's mask targets (:func:`aligned_mask_loss`); evaluation is torchvision's."""

    box_loss = "l1"
    aligned_mask_targets = True

    def forward(
        self,
        features: Dict[str, Tensor],
        proposals: List[Tensor],
        image_shapes: List[Tuple[int, int]],
        targets: Optional[List[Dict[str, Tensor]]] = None,
    ) -> Tuple[List[Dict[str, Tensor]], Dict[str, Tensor]]:
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        if targets is None:
            raise ValueError("training needs targets")
        proposals, matched, labels, regression_targets = self.select_training_samples(proposals, targets)
        class_logits, box_regression = self.box_predictor(
            self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        )
        classes, box_targets = torch.cat(labels), torch.cat(regression_targets)
        positive = torch.where(classes > 0)[0]
        per_class = box_regression.reshape(len(classes), -1, 4)
        box = box_regression_loss(per_class[positive, classes[positive]], box_targets[positive], self.box_loss)
        losses = {"loss_classifier": F.cross_entropy(class_logits, classes), "loss_box_reg": box / classes.numel()}
        if self.has_mask():
            kept = [torch.where(image_labels > 0)[0] for image_labels in labels]
            mask_proposals = [p[k] for p, k in zip(proposals, kept)]
            mask_logits = self.mask_predictor(
                self.mask_head(self.mask_roi_pool(features, mask_proposals, image_shapes))
            )
            loss = aligned_mask_loss if self.aligned_mask_targets else maskrcnn_loss
            losses["loss_mask"] = loss(
                mask_logits, mask_proposals, [t["masks"] for t in targets], [t["labels"] for t in targets],
                [m[k] for m, k in zip(matched, kept)],
            )  # fmt: skip
        return [], losses


def mmdet_two_stages(
    model: MaskRCNN, box_loss: str = "l1", rpn_post_nms_train: int = 1000, aligned: bool = True,
    mmdet_targets: bool = True,
) -> MaskRCNN:  # fmt: skip
    """``model``'s RPN and RoI heads rebuilt as mmdet's ``mask_rcnn_r50_fpn_1x`` runs them, its layers kept
    (the same parameters and key names), the box head's layers initialised as mmdet's. ``aligned`` False keeps
    torchvision's RoIAlign (2 samples per bin, ``aligned=False``): the files trained before fatvit followed mmdet.
    ``mmdet_targets`` False keeps torchvision's box matchers and soft mask targets (runs from before they were
    mmdet's)."""
    rpn, heads = model.rpn, model.roi_heads
    model.rpn = MMDetRegionProposalNetwork(
        rpn.anchor_generator, rpn.head, fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256,
        positive_fraction=0.5, pre_nms_top_n=dict(training=2000, testing=1000),
        post_nms_top_n=dict(training=rpn_post_nms_train, testing=1000), nms_thresh=0.7,
    )  # fmt: skip
    pool = AlignedMultiScaleRoIAlign if aligned else MultiScaleRoIAlign
    samples = 0 if aligned else 2
    model.roi_heads = MMDetRoIHeads(
        pool(LEVELS, 7, samples), heads.box_head, heads.box_predictor, fg_iou_thresh=0.5, bg_iou_thresh=0.5,
        batch_size_per_image=512, positive_fraction=0.25, bbox_reg_weights=None, score_thresh=heads.score_thresh,
        nms_thresh=0.5, detections_per_img=heads.detections_per_img, mask_roi_pool=pool(LEVELS, 14, samples),
        mask_head=heads.mask_head, mask_predictor=heads.mask_predictor,
    )  # fmt: skip
    model.rpn.box_loss = model.roi_heads.box_loss = box_loss
    init_box_head_as_mmdet(model.roi_heads)
    if mmdet_targets:
        model.rpn.proposal_matcher = MaxIoUAssigner(0.7, 0.3, min_pos_iou=0.3)
        model.roi_heads.proposal_matcher = MaxIoUAssigner(0.5, 0.5, min_pos_iou=0.5)
    model.roi_heads.aligned_mask_targets = mmdet_targets
    return model
