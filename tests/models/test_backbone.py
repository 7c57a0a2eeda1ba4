"""The stage features that the dense tasks build on: FAT's and the ResNet-18 peer's."""

from __future__ import annotations

import torch

from fatvit.models.backbone import StageFeatures


def test_backbone_maps_and_resnet18_peer():
    fat = StageFeatures("fat_b0")
    maps = fat(torch.rand(1, 3, 128, 128))
    assert [m.shape[1] for m in maps.values()] == fat.out_channels == [32, 80, 160, 256]
    assert [m.shape[-1] for m in maps.values()] == [32, 16, 8, 4]
    res = StageFeatures("resnet18", (1, 2, 3))
    maps = res(torch.rand(1, 3, 128, 128))
    assert res.out_channels == [128, 256, 512] and [m.shape[-1] for m in maps.values()] == [16, 8, 4]
