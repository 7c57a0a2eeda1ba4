"""FAT models; importing this registers them with timm.

:func:`create_model` builds a FAT model or any other timm model (to compare
FAT with its peers under one recipe) and turns a bad name or argument into
one :class:`~fatvit.errors.FatvitError`.
"""

from __future__ import annotations

from typing import Any, List

import timm
from torch import nn

from ..errors import FatvitError, unknown_choice
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
    "is_fat",
    "model_names",
    "registered_names",
]


def registered_names() -> List[str]:
    """Every model name fatvit registers with timm (sizes and variants)."""
    return sorted(name for name in timm.list_models() if name.startswith("fat_"))


def is_fat(name: str) -> bool:
    """Whether ``name`` is one of fatvit's models (a FAT size or variant)."""
    return name in registered_names()


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` for fatvit's models and any other timm model, never from the internet.

    Raises:
        FatvitError: an unknown name (the closest suggested) or a bad model argument.
    """
    if not timm.is_model(name):
        fat = registered_names()
        close = unknown_choice("model", name, fat)
        if "did you mean" not in str(close):
            close = unknown_choice("model", name, timm.list_models())
            if "did you mean" not in str(close):
                close = FatvitError(f"unknown model {name!r}: not a FAT model ({', '.join(fat)}) nor a timm model")
        raise close
    kwargs.pop("pretrained", None)  # weights come from local files only (checkpoint, finetune)
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError) as err:
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise FatvitError(f"cannot build {name}({args}): {err}") from None
