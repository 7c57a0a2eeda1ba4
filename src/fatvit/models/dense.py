"""What dense-prediction models share: their backbone's drop path and the configuration record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

__all__ = ["DenseConfig", "BACKBONE_DROP_PATH"]

#: Stochastic depth of FAT backbones in the authors' dense setup (their Semantic FPN configs).
BACKBONE_DROP_PATH: Dict[str, float] = {"fat_b0": 0.05, "fat_b1": 0.0, "fat_b2": 0.1, "fat_b3": 0.12}


@dataclass(frozen=True)
class DenseConfig:
    """A dense-prediction model: its head, its backbone, and the paper's figures for it (if reported).

    ``paper_metrics`` holds the paper's COCO val2017 or ADE20K figures, in percent.
    """

    head: str  # "retinanet", "mask_rcnn" or "semantic_fpn"
    backbone: str  # a FAT size or any timm model with features_only
    paper_params_m: Optional[float] = None
    paper_metrics: Dict[str, float] = field(default_factory=dict)

    @property
    def drop_path_rate(self) -> Optional[float]:
        return BACKBONE_DROP_PATH.get(self.backbone)

    def backbone_kwargs(self, given: Dict[str, Any]) -> Dict[str, Any]:
        """The backbone's model arguments: ``given``, with the dense setup's drop path where none is given."""
        kwargs = dict(given)
        if self.drop_path_rate is not None:
            kwargs.setdefault("drop_path_rate", self.drop_path_rate)
        return kwargs
