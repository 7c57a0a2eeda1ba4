"""The paper's ablation variants and attention comparisons, registered as timm models.

Each is FAT-B0 with one change, so ``timm.create_model("fat_b0_attn_swin")``
and ``fatvit train --model fat_b0_add`` work. The same changes are options of
any size: ``timm.create_model("fat_b2", interaction="add")``.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict

from timm.models import generate_default_cfgs, register_model

from .fat import FAT, _cfg, _create_fat

__all__ = ["VARIANTS"]

#: Variant name -> the FAT-B0 arguments it changes.
VARIANTS: Dict[str, Dict[str, Any]] = {
    # fusion of the local and global branches instead of the interaction
    "fat_b0_add": dict(interaction="add"),
    "fat_b0_cat": dict(interaction="cat"),
    "fat_b0_mul": dict(interaction="mul"),
    # key/value downsampling instead of the refined downsample
    "fat_b0_kv_pool": dict(kv_downsample="pool"),
    "fat_b0_kv_conv": dict(kv_downsample="conv"),
    "fat_b0_kv_conv_overlap": dict(kv_downsample="conv_overlap"),
    # no conditional positional encoding
    "fat_b0_no_cpe": dict(cpe=False),
    # other attention mechanisms in place of FASA
    "fat_b0_attn_maxvit": dict(attention="maxvit"),
    "fat_b0_attn_swin": dict(attention="swin"),
    "fat_b0_attn_pvt": dict(attention="pvt"),
    "fat_b0_attn_twins": dict(attention="twins"),
    "fat_b0_attn_cswin": dict(attention="cswin"),
}

default_cfgs = generate_default_cfgs({name: _cfg() for name in VARIANTS})


def _entrypoint(name: str, changes: Dict[str, Any]) -> Callable[..., FAT]:
    def create(pretrained: bool = False, **kwargs: Any) -> FAT:
        return _create_fat("fat_b0", pretrained, variant=name, **{**changes, **kwargs})

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"FAT-B0 with {', '.join(f'{k}={v!r}' for k, v in changes.items())}."
    return create


for _name, _changes in VARIANTS.items():
    setattr(sys.modules[__name__], _name, register_model(_entrypoint(_name, _changes)))
