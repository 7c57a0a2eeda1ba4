"""The Semantic FPN: any input size in train and eval mode, every parameter trained, the head as mmseg's."""

from __future__ import annotations

import torch

from fatvit.tasks.segmentation.models import build_segmenter


def test_semantic_fpn_any_size_train_and_eval():
    torch.manual_seed(0)
    model = build_segmenter("semantic_fpn_fat_b0", num_classes=7)
    model.train()
    for shape in [(2, 3, 64, 64), (1, 3, 97, 131)]:
        out = model(torch.rand(*shape))
        assert out.shape == (shape[0], 7, *shape[2:])
    out.logsumexp(1).mean().backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    head = model.decode_head
    assert [len([m for m in h if isinstance(m, torch.nn.Upsample)]) for h in head.scale_heads] == [0, 1, 2, 3]
    assert head.classifier.in_channels == 128 and head.dropout.p == 0.1
    model.eval()
    assert model(torch.rand(1, 3, 45, 71)).shape == (1, 7, 45, 71)


def test_segmentation_evaluation_scores_each_image_alone_whatever_its_batch():
    """Semantic FPN's evaluation runs one image per forward at its own size: a landscape and a portrait image
    read together score what they score read one at a time (no padding to a partner's size)."""
    from fatvit.tasks.segmentation.task import evaluate_segmenter

    torch.manual_seed(0)
    model = build_segmenter("semantic_fpn_fat_b0", num_classes=4).eval()
    images = [torch.rand(3, 64, 96), torch.rand(3, 96, 64)]
    labels = [torch.randint(0, 4, (64, 96)), torch.randint(0, 4, (96, 64))]
    cpu = torch.device("cpu")
    together = evaluate_segmenter(model, [(images, labels, 0)], 4, cpu)
    apart = evaluate_segmenter(model, [([i], [lab], 0) for i, lab in zip(images, labels)], 4, cpu)
    assert together["images"] == apart["images"] == 2
    for key in ("mIoU", "mAcc", "aAcc"):
        assert together[key] == apart[key], key
    assert torch.equal(torch.tensor(together["per_class_iou"]), torch.tensor(apart["per_class_iou"]))
