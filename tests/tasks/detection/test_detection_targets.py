"""Training targets and initialisation as mmdet's: MaxIoUAssigner's low-quality matches, RetinaNet's losses over
the batch's positives, Mask R-CNN's aligned binary mask targets and mask binarisation, and the heads' and FPNs'
initial weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import roi_align

from fatvit.tasks.detection.assign import MaxIoUAssigner
from fatvit.tasks.detection.metrics import detections_to_coco
from fatvit.tasks.detection.models import build_detector
from fatvit.tasks.detection.rcnn import aligned_mask_loss
from fatvit.tasks.detection.retinanet import MMDetRetinaNetHead
from fatvit.tasks.segmentation.models import build_segmenter


def test_assigner_matches_low_quality_boxes_to_the_object_they_best_fit_from_min_pos_iou():
    iou = torch.tensor([
        [0.90, 0.45, 0.20, 0.35, 0.00],  # object 0: box 0 is a match by threshold
        [0.10, 0.45, 0.30, 0.00, 0.00],  # object 1: its best box (1, IoU 0.45) overlaps object 0 as much
        [0.00, 0.00, 0.00, 0.25, 0.05],  # object 2: best IoU 0.25, under min_pos_iou 0.3: no low-quality match
    ])  # fmt: skip
    matches = MaxIoUAssigner(0.5, 0.3, min_pos_iou=0.3)(iou)
    # box 1 goes to object 1 (the object it is best for, the later one), box 2 is ignored (0.3 <= IoU < 0.5),
    # box 3's best IoU 0.35 is ignored too (object 2's 0.25 is under min_pos_iou), box 4 is background
    assert matches.tolist() == [0, 1, -2, -2, -1]
    assert MaxIoUAssigner(0.5, 0.3, min_pos_iou=0.2)(iou).tolist() == [0, 1, -2, 2, -1]
    assert MaxIoUAssigner(0.5, 0.3, min_pos_iou=0.3, match_low_quality=False)(iou).tolist() == [0, -2, -2, -2, -1]
    assert MaxIoUAssigner(0.5, 0.4, 0.0)(torch.zeros(0, 3)).tolist() == [-1, -1, -1]


def test_detectors_use_mmdets_assigners_unless_told_otherwise():
    retina = build_detector("retinanet_fat_b0", num_classes=3, min_size=64, max_size=64)
    rcnn = build_detector("mask_rcnn_fat_b0", num_classes=3, min_size=64, max_size=64)
    found = [(m.pos_iou, m.neg_iou, m.min_pos_iou) for m in
             (retina.proposal_matcher, rcnn.rpn.proposal_matcher, rcnn.roi_heads.proposal_matcher)]  # fmt: skip
    assert found == [(0.5, 0.4, 0.0), (0.7, 0.3, 0.3), (0.5, 0.5, 0.5)]
    assert isinstance(retina.head, MMDetRetinaNetHead) and rcnn.roi_heads.aligned_mask_targets
    old = build_detector("mask_rcnn_fat_b0", num_classes=3, min_size=64, max_size=64, mmdet_targets=False)
    assert not isinstance(old.roi_heads.proposal_matcher, MaxIoUAssigner) and not old.roi_heads.aligned_mask_targets
    assert type(build_detector("retinanet_fat_b0", num_classes=3, mmdet_targets=False).head) is RetinaNetHead


def test_retinanet_losses_are_divided_by_the_batchs_positive_anchors():
    """mmdet's avg_factor: the images' summed losses over the positives of the whole batch (each image at least
    one); torchvision averages per-image means, so an image with few objects weighs as much as a crowded one."""
    torch.manual_seed(0)
    head = MMDetRetinaNetHead(8, 9, 3)
    anchors = [torch.rand(40, 2) * 50 for _ in range(3)]
    anchors = [torch.cat([a, a + 10 + torch.rand(40, 2) * 20], dim=1) for a in anchors]
    outputs = dict(cls_logits=torch.randn(3, 40, 3), bbox_regression=torch.randn(3, 40, 4))
    matched = [torch.randint(-2, 2, (40,)), torch.full((40,), -1), torch.randint(-2, 5, (40,))]
    targets = [dict(boxes=a[:5] + 1.0, labels=torch.randint(0, 3, (5,))) for a in anchors]
    ours = head.compute_loss(targets, outputs, anchors, matched)
    theirs = RetinaNetHead.compute_loss(head, targets, outputs, anchors, matched)
    positives = [max(1, int((m >= 0).sum())) for m in matched]
    for key in ("classification", "bbox_regression"):
        # torchvision's loss of one image alone is that image's summed loss over its own positives
        summed = sum(
            RetinaNetHead.compute_loss(head, [t], {k: v[i : i + 1] for k, v in outputs.items()}, [a], [m])[key] * p
            for i, (t, a, m, p) in enumerate(zip(targets, anchors, matched, positives))
        )
        torch.testing.assert_close(ours[key], summed / sum(positives))
        assert not torch.allclose(ours[key], theirs[key])


def test_mask_targets_are_aligned_crops_binarised_at_one_half():
    """A proposal on an object's box gets that object's mask exactly (aligned RoIAlign, then >= 0.5); the loss is
    the mean binary cross-entropy of the object's class logits against it."""
    masks = torch.zeros(1, 40, 40, dtype=torch.uint8)
    masks[0, 8:24, 4:36] = 1  # the box (4, 8, 36, 24): 32 x 16 pixels, 2 x 1 per cell of a 16 x 16 target
    box = torch.tensor([[4.0, 8.0, 36.0, 24.0], [0.0, 0.0, 20.0, 20.0]])
    logits = torch.randn(2, 3, 16, 16)
    labels, matched = [torch.tensor([2])], [torch.tensor([0, 0])]
    loss = aligned_mask_loss(logits, [box], [masks], labels, matched)
    targets = torch.zeros(2, 16, 16)
    targets[0] = 1.0  # the whole crop is the object
    crop = roi_align(masks[:, None].float(), torch.tensor([[0.0, 0, 0, 20, 20]]), (16, 16), 1.0, 0, aligned=True)
    targets[1] = (crop[0, 0] >= 0.5).float()
    assert set(targets[1].unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits[:, 2], targets))
    soft = roi_align(masks[:, None].float(), torch.tensor([[0.0, 0, 0, 20, 20]]), (16, 16), 1.0, 2, aligned=False)
    assert not torch.equal(soft[0, 0], targets[1])  # torchvision's targets: unaligned and soft


def test_predicted_masks_are_binarised_at_and_above_one_half():
    masks = torch.tensor([0.5, 0.49, 0.51, 0.0]).reshape(1, 1, 2, 2)
    output = dict(boxes=torch.tensor([[0.0, 0, 2, 2]]), scores=torch.tensor([0.9]), labels=torch.tensor([1]),
                  masks=masks)  # fmt: skip
    (record,) = detections_to_coco(7, output, [11, 12], 1)
    from pycocotools import mask as mask_utils

    rle = dict(size=record["segmentation"]["size"], counts=record["segmentation"]["counts"].encode())
    assert mask_utils.decode(rle).tolist() == [[1, 0], [1, 0]]


def _std(t: torch.Tensor) -> float:
    return float(t.std())


def test_heads_and_fpns_start_as_mmdets_and_mmsegs():
    torch.manual_seed(0)
    rcnn = build_detector("mask_rcnn_fat_b0", num_classes=80, min_size=64, max_size=64)
    predictor, box_head = rcnn.roi_heads.box_predictor, rcnn.roi_heads.box_head
    assert _std(predictor.cls_score.weight) == pytest.approx(0.01, rel=0.05)
    assert _std(predictor.bbox_pred.weight) == pytest.approx(0.001, rel=0.05)
    for layer in (box_head.fc6, box_head.fc7):
        bound = math.sqrt(6 / (layer.in_features + layer.out_features))  # Xavier-uniform
        assert float(layer.weight.abs().max()) <= bound * (1 + 1e-6) and _std(layer.weight) == pytest.approx(
            bound / 3**0.5, 0.05
        )
    for layer in (predictor.cls_score, predictor.bbox_pred, box_head.fc6):
        assert not layer.bias.any()
    retina = build_detector("retinanet_fat_b0", num_classes=80, min_size=64, max_size=64)
    cls = retina.head.classification_head.cls_logits
    assert _std(cls.weight) == pytest.approx(0.01, rel=0.05)
    assert torch.allclose(cls.bias, torch.tensor(-math.log(99.0)))  # the focal loss's prior 0.01
    segmenter = build_segmenter("semantic_fpn_fat_b0", num_classes=150)
    assert _std(segmenter.decode_head.classifier.weight) == pytest.approx(0.01, rel=0.05)
    conv = segmenter.decode_head.scale_heads[0][0][0]  # a ConvModule's conv: Kaiming-normal, fan_out, ReLU
    assert _std(conv.weight) == pytest.approx(math.sqrt(2 / (conv.out_channels * 9)), rel=0.05)
    for model in (rcnn, retina, segmenter):
        for name, layer in model.backbone.fpn.named_modules():
            if isinstance(layer, torch.nn.Conv2d):  # Xavier-uniform, extra convs (P6, P7) included
                fan_in, fan_out = (
                    layer.in_channels * layer.kernel_size[0] ** 2,
                    layer.out_channels * layer.kernel_size[0] ** 2,
                )
                assert float(layer.weight.abs().max()) <= math.sqrt(6 / (fan_in + fan_out)) * (1 + 1e-6), name
                assert not layer.bias.any(), name


def test_fpn_init_kaiming_keeps_torchvisions_and_other_values_are_refused():
    from fatvit.config import load_config
    from fatvit.errors import FatvitError
    from fatvit.tasks.detection.config import DetectConfig

    torch.manual_seed(0)
    retina = build_detector("retinanet_fat_b0", num_classes=3, min_size=64, max_size=64, fpn_init="kaiming")
    lateral = retina.backbone.fpn.inner_blocks[0][0]  # 1x1 from C3 (64 channels): torchvision's bound sqrt(3/64)
    bound = math.sqrt(3 / lateral.in_channels)
    assert float(lateral.weight.abs().max()) > math.sqrt(6 / (lateral.in_channels + lateral.out_channels))
    assert float(lateral.weight.abs().max()) <= bound * (1 + 1e-6)
    assert (
        _std(build_segmenter("semantic_fpn_fat_b0", 4, fpn_init="kaiming").backbone.fpn.inner_blocks[0][0].weight) > 0
    )
    with pytest.raises(FatvitError, match="fpn_init must be one of xavier, kaiming"):
        build_detector("retinanet_fat_b0", num_classes=3, fpn_init="he")
    with pytest.raises(FatvitError, match="fpn_init"):
        load_config(None, ["fpn_init=he"], cls=DetectConfig)
