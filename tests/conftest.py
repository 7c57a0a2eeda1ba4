"""Shared fixtures: the authors' reference outputs beside the repository (../shared/reference)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO.parent / "shared" / "reference"

torch.set_num_threads(2)


def _reference_module():
    path = REFERENCE_DIR / "reference_weights.py"
    if not path.is_file():
        pytest.fail(f"reference data not found at {REFERENCE_DIR}: ../shared must sit beside the repository")
    spec = importlib.util.spec_from_file_location("reference_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_reference(name: str):
    """(manifest, state_dict, [(input, case), ...]) of reference model ``name``."""
    ref = _reference_module()
    manifest = json.loads((REFERENCE_DIR / f"{name}_manifest.json").read_text())
    state_dict = ref.make_state_dict(manifest["keys"], manifest["seed"])
    cases = torch.load(REFERENCE_DIR / f"{name}_outputs.pt", weights_only=True)
    g = torch.Generator().manual_seed(manifest["seed"] + 1)
    inputs = [torch.randn(case["input_shape"], generator=g) for case in cases]
    return manifest, state_dict, list(zip(inputs, cases))


@pytest.fixture(scope="session")
def tiny_reference():
    return load_reference("tiny")


# a small FAT for fast behavioural tests (the reference 'tiny' configuration)
TINY_ARGS = dict(
    embed_dims=(16, 32, 48, 64),
    depths=(1, 2, 2, 1),
    num_heads=(1, 2, 3, 4),
    num_classes=10,
)
