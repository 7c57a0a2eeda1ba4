"""What the dense model builders share: backbone weights from a classification checkpoint, bad names and
arguments."""

from __future__ import annotations

import pytest
import torch

from fatvit.checkpoint import CheckpointError, save_safetensors
from fatvit.errors import FatvitError
from fatvit.models import create_model
from fatvit.models.backbone import StageFeatures
from fatvit.tasks.detection.models import build_detector
from fatvit.tasks.segmentation.models import build_segmenter


def test_backbone_weights_from_a_classification_checkpoint(tmp_path):
    classifier = create_model("fat_b0", num_classes=10)
    path = tmp_path / "fat_b0.safetensors"
    save_safetensors(classifier, path)
    model = build_detector("mask_rcnn_fat_b0", backbone_weights=str(path), min_size=96, max_size=128)
    body = model.backbone.body.body
    for key, value in body.state_dict().items():
        assert torch.equal(value, classifier.state_dict()[key]), key
    seg = build_segmenter("semantic_fpn_fat_b0", backbone_weights=str(path))
    seg_state = seg.backbone.body.body.state_dict()
    assert all(torch.equal(v, classifier.state_dict()[k]) for k, v in seg_state.items())
    other = tmp_path / "fat_b1.safetensors"
    save_safetensors(create_model("fat_b1"), other)
    with pytest.raises(CheckpointError, match="does not fit"):
        build_detector("retinanet_fat_b0", backbone_weights=str(other))


def test_bad_names_and_arguments():
    with pytest.raises(FatvitError, match="did you mean 'retinanet_fat_b"):
        build_detector("retinanet_fat_bo")
    with pytest.raises(FatvitError, match="num_classes"):
        build_detector("retinanet_fat_b0", num_classes=0)
    with pytest.raises(FatvitError, match="did you mean 'semantic_fpn_fat_b"):
        build_segmenter("semantic_fpn_fat_b")
    with pytest.raises(FatvitError, match="stride"):
        StageFeatures("resnet18", (4,))
