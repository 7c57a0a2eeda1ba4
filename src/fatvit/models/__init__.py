"""FAT models; importing this registers them with timm."""

from __future__ import annotations

from typing import Any, List

import timm
from torch import nn

from ..errors import unknown_choice
from .fat import ATTENTIONS, FAT, MODEL_CONFIGS, FATBlock, FATConfig, FATStage, model_names
from .variants import VARIANTS

__all__ = [
    "ATTENTIONS",
    "VARIANTS",
    "FAT",
    "FATBlock",
    "FATConfig",
    "FATStage",
    "MODEL_CONFIGS",
    "create_model",
    "model_names",
    "registered_names",
]


def registered_names() -> List[str]:
    """Every model name fatvit registers with timm (sizes and variants)."""
    return sorted(name for name in timm.list_models() if name.startswith("fat_"))


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` for fatvit's models, with a clear error for unknown names."""
    names = registered_names()
    if name not in names:
        raise unknown_choice("model", name, names)
    return timm.create_model(name, **kwargs)
