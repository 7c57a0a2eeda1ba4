"""Our FAT reproduces the authors' implementation on their checkpoints' layout."""

from __future__ import annotations

import pytest
import torch

from conftest import load_reference
from fatvit import FAT


@pytest.fixture(scope="module", params=["tiny", "fat_b0"])
def reference(request):
    return load_reference(request.param)


def test_reference_keys_load_strictly_and_in_order(reference):
    manifest, state_dict, _ = reference
    model = FAT(**manifest["config"], interaction="reference")
    model.load_state_dict(state_dict, strict=True)
    ours = [[k, list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()]
    assert ours == manifest["keys"]


@torch.no_grad()
def test_reference_outputs_reproduced(reference):
    manifest, state_dict, cases = reference
    model = FAT(**manifest["config"], interaction="reference").eval()
    model.load_state_dict(state_dict, strict=True)
    for x, case in cases:
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        logits = model(x)
        assert logits.shape == case["logits"].shape
        assert (pooled - case["pooled_features"]).abs().max() <= 1e-4, case["input_shape"]
        assert (logits - case["logits"]).abs().max() <= 1e-4, case["input_shape"]


@torch.no_grad()
def test_bidirectional_interaction_differs_from_reference(reference):
    manifest, state_dict, cases = reference
    model = FAT(**manifest["config"], interaction="bidirectional").eval()
    model.load_state_dict(state_dict, strict=True)  # same weights: the interaction has no parameters
    x, case = cases[0]
    assert (model(x) - case["logits"]).abs().max() > 1e-2
