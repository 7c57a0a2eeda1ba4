"""The detectors: every parameter trained at any size, RetinaNet's P6/P7, Mask R-CNN's RoI Align and losses
as mmdet has them, and box decoding in float32 under bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from fatvit.models.backbone import features_autocast
from fatvit.tasks.detection.models import build_detector

SMALL = dict(min_size=96, max_size=128)


def _targets(with_masks: bool, offset: int):
    boxes = torch.tensor([[8.0, 10.0, 60.0, 70.0], [50.0, 20.0, 90.0, 50.0]])
    target = dict(boxes=boxes, labels=torch.tensor([2, 5]) + offset)
    if with_masks:
        masks = torch.zeros(2, 81, 103, dtype=torch.uint8)
        masks[0, 10:70, 8:60] = 1
        masks[1, 20:50, 50:90] = 1
        target["masks"] = masks
    return [target]


@pytest.mark.parametrize("name", ["retinanet_fat_b0", "mask_rcnn_fat_b0"])
def test_detector_trains_every_parameter_on_odd_sizes(name):
    torch.manual_seed(0)
    model = build_detector(name, num_classes=6, **SMALL)
    model.train()
    masks = name.startswith("mask")
    losses = model([torch.rand(3, 81, 103)], _targets(masks, model.label_offset))
    assert set(losses) == (
        {"classification", "bbox_regression"}
        if not masks
        else {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    )
    sum(losses.values()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, unused
    # the last stage's final block (its FFN included) is part of the graph
    last = model.backbone.body.body.layers[-1].blocks[-1]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in last.ffn.parameters())
    model.eval()
    with torch.no_grad():
        for size in [(3, 64, 64), (3, 97, 131), (3, 200, 45)]:
            (det,) = model([torch.rand(*size)])
            assert det["boxes"].shape[1] == 4 and len(det["scores"]) == len(det["labels"]) <= 100
            if masks:
                assert det["masks"].shape[-2:] == size[1:]


def test_retinanet_p6_p7_come_from_c5_even_at_fpn_width():
    model = build_detector("retinanet_fat_b0", **SMALL)  # FAT-B0's C5 has 256 channels, as the FPN
    seen = {}
    model.backbone.fpn.extra_blocks.p6.register_forward_hook(lambda m, i, o: seen.update(p6_in=i[0]))
    model.backbone.body.register_forward_hook(lambda m, i, o: seen.update(c5=list(o.values())[-1]))
    model.backbone(torch.rand(1, 3, 128, 128))
    assert torch.equal(seen["p6_in"], seen["c5"])
    maps = model.backbone(torch.rand(1, 3, 128, 128))
    assert [m.shape[-1] for m in maps.values()] == [16, 8, 4, 2, 1]  # P3..P7


def test_retinanet_p7_is_a_conv_of_p6_without_relu():
    model = build_detector("retinanet_fat_b0", **SMALL)
    extra = model.backbone.fpn.extra_blocks
    seen = {}
    extra.p7.register_forward_hook(lambda m, i, o: seen.update(p7_in=i[0]))
    maps = list(model.backbone(torch.rand(1, 3, 128, 128)).values())
    p6, p7 = maps[-2], maps[-1]
    assert (p6 < 0).any()  # a ReLU would change the input of P7
    assert torch.equal(seen["p7_in"], p6)
    torch.testing.assert_close(p7, extra.p7(p6))
    torchvision_like = build_detector("retinanet_fat_b0", p7_relu=True, **SMALL).backbone
    torchvision_like.fpn.extra_blocks.p7.register_forward_hook(lambda m, i, o: seen.update(p7_in=i[0]))
    p6 = list(torchvision_like(torch.rand(1, 3, 128, 128)).values())[-2]
    assert torch.equal(seen["p7_in"], torch.relu(p6))


@pytest.mark.parametrize("name", ["retinanet_fat_b0", "mask_rcnn_fat_b0"])
def test_bf16_autocast_decodes_boxes_in_float32(name):
    """Under bf16 (a user's own ``torch.autocast`` or the engine's policy) the backbone and neck run in bf16, and
    everything after them in float32: given the same (bf16-computed) features, the boxes are those of the float32
    path exactly."""
    torch.manual_seed(0)
    model = build_detector(name, num_classes=3, min_size=128, max_size=128, score_thresh=0.0).eval()
    images = [torch.rand(3, 120, 131)]
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):  # a user's own autocast: the detector keeps it to the neck
            (plain,) = model(images)
            assert model.backbone.amp_dtype is None  # restored after the forward
        assert plain["boxes"].dtype == plain["scores"].dtype == torch.float32
        assert not torch.equal(plain["boxes"], plain["boxes"].bfloat16().float())  # not on bf16's grid
        captured = {}
        hook = model.backbone.register_forward_hook(lambda m, i, o: captured.update(maps=o))
        with features_autocast(model, torch.bfloat16):
            (mixed,) = model(images)
            assert model.backbone.amp_dtype == torch.bfloat16
        hook.remove()
        assert model.backbone.amp_dtype is None  # restored
        maps = captured["maps"]
        assert all(m.dtype == torch.float32 for m in maps.values())
        assert all(torch.equal(m, m.bfloat16().float()) for m in maps.values())  # computed in bf16
        boxes = mixed["boxes"]
        assert boxes.dtype == mixed["scores"].dtype == torch.float32 and len(boxes) > 10
        assert not torch.equal(boxes, boxes.bfloat16().float())  # not rounded to bf16
        model.backbone.register_forward_hook(lambda m, i, o: maps)  # the float32 path on the same features
        (fp32,) = model(images)
    for key in mixed:
        assert torch.equal(mixed[key], fp32[key]), key
        assert torch.equal(plain[key], mixed[key]), key  # the user's autocast is the engine's policy


def test_mask_rcnn_roi_align_is_aligned_with_adaptive_sampling():
    from torchvision.ops import MultiScaleRoIAlign, roi_align

    from fatvit.tasks.detection.rcnn import AlignedMultiScaleRoIAlign

    heads = build_detector("mask_rcnn_fat_b0", **SMALL).roi_heads
    for pool, size in ((heads.box_roi_pool, 7), (heads.mask_roi_pool, 14)):
        assert isinstance(pool, AlignedMultiScaleRoIAlign) and pool.sampling_ratio == 0
        assert pool.output_size == (size, size)
    torch.manual_seed(0)
    maps = {str(i): torch.randn(1, 8, 64 // 2**i, 64 // 2**i) for i in range(4)}  # strides 4..32 of 256 px
    boxes = [torch.tensor([[10.3, 20.7, 40.1, 51.9], [0.0, 0.0, 250.0, 230.0]])]  # levels 0 (P2) and 2 (P4)
    pooled = AlignedMultiScaleRoIAlign(["0", "1", "2", "3"], 7, 0)(maps, boxes, [(256, 256)])
    rois = torch.cat([torch.zeros(2, 1), boxes[0]], dim=1)
    for row, level in ((0, 0), (1, 2)):
        expected = roi_align(maps[str(level)], rois[row : row + 1], 7, 1 / 4 / 2**level, 0, aligned=True)
        torch.testing.assert_close(pooled[row : row + 1], expected)
    unaligned = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 0)(maps, boxes, [(256, 256)])
    assert not torch.allclose(pooled, unaligned)


def test_mask_rcnn_rpn_box_loss_is_l1_over_the_sampled_anchors():
    rpn = build_detector("mask_rcnn_fat_b0", **SMALL).rpn
    assert rpn._post_nms_top_n == dict(training=1000, testing=1000)
    assert rpn._pre_nms_top_n == dict(training=2000, testing=1000)
    torch.manual_seed(0)
    labels = [torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0, -1.0, -1.0])]  # all 7 are sampled (256 max)
    deltas, targets = torch.randn(10, 4), [torch.randn(10, 4)]
    objectness = torch.randn(10, 1)
    fn = torch.nn.functional
    expected = dict(
        l1=fn.l1_loss(deltas[:3], targets[0][:3], reduction="sum"),
        smooth_l1=fn.smooth_l1_loss(deltas[:3], targets[0][:3], beta=1 / 9, reduction="sum"),
    )
    for kind, summed in expected.items():
        rpn.box_loss = kind
        cls_loss, box_loss = rpn.compute_loss(objectness, deltas, labels, targets)
        torch.testing.assert_close(box_loss, summed / 7)
        torch.testing.assert_close(cls_loss, fn.binary_cross_entropy_with_logits(objectness[:7, 0], labels[0][:7]))


def test_mask_rcnn_box_head_loss_is_l1_and_smooth_l1_is_torchvision_s():
    """With ``box_loss=smooth_l1`` (and torchvision's matchers and mask targets: ``mmdet_targets=False``) the heads'
    training losses are torchvision's exactly; with ``l1`` only the box regression loss changes."""
    from torchvision.models.detection.roi_heads import RoIHeads

    torch.manual_seed(0)
    model = build_detector("mask_rcnn_fat_b0", num_classes=6, mmdet_targets=False, **SMALL).train()
    images, targets = model.transform([torch.rand(3, 81, 103)], _targets(True, model.label_offset))
    features = model.backbone(images.tensors)
    proposals, _ = model.rpn(images, features, targets)
    heads = model.roi_heads

    def losses(fn, kind):
        heads.box_loss = kind
        torch.manual_seed(1)  # the proposal sampler draws
        return fn(heads, features, [p.detach() for p in proposals], images.image_sizes, targets)[1]

    theirs = losses(RoIHeads.forward, "smooth_l1")
    smooth, l1 = losses(type(heads).forward, "smooth_l1"), losses(type(heads).forward, "l1")
    assert set(theirs) == set(smooth) == set(l1) == {"loss_classifier", "loss_box_reg", "loss_mask"}
    for key in theirs:
        torch.testing.assert_close(smooth[key], theirs[key])
        if key != "loss_box_reg":
            torch.testing.assert_close(l1[key], theirs[key])
    assert not torch.allclose(l1["loss_box_reg"], smooth["loss_box_reg"])


@pytest.mark.parametrize("name", ["retinanet_fat_b0", "mask_rcnn_fat_b0"])
def test_evaluation_scores_an_image_as_alone_beside_a_differently_shaped_partner(name, monkeypatch):
    """evaluate_detector runs the images of a batch one size at a time: a landscape image's detections (boxes,
    scores, labels, masks) are those it gets alone, also with a portrait partner; one padded forward changes them."""
    from fatvit.tasks.detection import task

    torch.manual_seed(0)
    model = build_detector(name, num_classes=3, min_size=64, max_size=96, score_thresh=0.0).eval()
    landscape, portrait = torch.rand(3, 64, 96), torch.rand(3, 96, 64)
    seen = []
    monkeypatch.setattr(task.CocoEvaluator, "update", lambda self, ids, outputs: seen.append(outputs))
    monkeypatch.setattr(task.CocoEvaluator, "compute", lambda self: {})
    batches = [([landscape, portrait], [dict(image_id=i) for i in range(2)], 0)]
    for padded in (False, True):
        task.evaluate_detector(model, batches, None, [1, 2, 3], torch.device("cpu"), padded_batches=padded)
    (grouped, padded) = seen
    with torch.no_grad():
        alone = [model([image])[0] for image in (landscape, portrait)]
    assert len(alone[0]["boxes"]) > 10
    for output, expected in zip(grouped, alone):
        assert output.keys() == expected.keys()
        for key in expected:
            assert torch.equal(output[key], expected[key]), key
    assert padded[0]["boxes"].shape != alone[0]["boxes"].shape or not torch.allclose(
        padded[0]["boxes"], alone[0]["boxes"]
    )
