"""The classification config: the paper's ImageNet recipe by default (ARCHITECTURE.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional

from ...config import RunConfig, parse_recipe_file
from ...errors import FatvitError

__all__ = ["ClassifyConfig", "TrainConfig", "INFERENCE_KEYS", "RECORD_KEYS", "INTERPOLATIONS", "ERASE_MODES"]

INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "random")
ERASE_MODES = ("pixel", "rand", "const")

#: Config keys that apply to inference (flags and --set KEY=VALUE); a file's own record fills them first.
INFERENCE_KEYS = ("model", "model_kwargs", "img_size", "crop_pct", "interpolation", "batch_size", "workers", "device",
                  "channels_last", "data")  # fmt: skip
#: What a file's record may say about the model and its preprocessing.
RECORD_KEYS = ("model", "model_kwargs", "img_size", "crop_pct", "interpolation")


@dataclass
class ClassifyConfig(RunConfig):
    """Classification: the paper's ImageNet recipe by default (ARCHITECTURE.md)."""

    TASK: ClassVar[str] = "classify"
    BEFORE_KEYS: ClassVar[Dict[str, Any]] = dict(no_decay_1d=True)
    img_size: int = 224
    smoothing: float = 0.1
    # augmentation
    hflip: float = 0.5
    scale: List[float] = field(default_factory=lambda: [0.08, 1.0])
    auto_augment: Optional[str] = "rand-m9-mstd0.5-inc1"
    color_jitter: float = 0.4
    reprob: float = 0.25
    remode: str = "pixel"
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_switch_prob: float = 0.5
    interpolation: str = "bicubic"
    crop_pct: float = 0.875

    MODEL_RECIPES: ClassVar[str] = "for every FAT size NAME ('fatvit summary' lists them), NAME and NAME_released"

    def check(self) -> None:
        super().check()
        need = self.need
        need(self.img_size >= 1, "img_size", "at least 1")
        for key in ("color_jitter", "mixup", "cutmix"):
            need(getattr(self, key) >= 0, key, "0 or more")
        for key in ("hflip", "reprob", "mixup_switch_prob"):
            need(0 <= getattr(self, key) <= 1, key, "between 0 and 1")
        need(0 <= self.smoothing < 1, "smoothing", "in [0, 1)")
        need(0 < self.crop_pct <= 1, "crop_pct", "in (0, 1]")
        need(
            len(self.scale) == 2
            and all(isinstance(s, (int, float)) for s in self.scale)
            and 0 < self.scale[0] <= self.scale[1] <= 1,
            "scale",
            "[min, max] with 0 < min <= max <= 1",
        )
        need(self.remode in ERASE_MODES, "remode", f"one of {', '.join(ERASE_MODES)}")
        need(self.interpolation in INTERPOLATIONS, "interpolation", f"one of {', '.join(INTERPOLATIONS)}")

    @classmethod
    def model_recipe_names(cls) -> List[str]:
        """Per FAT size, ``fat_bN`` (the ``imagenet`` recipe with that model) and ``fat_bN_released``."""
        from ...models.fat import MODEL_CONFIGS

        return [name for size in MODEL_CONFIGS for name in (size, f"{size}_released")]

    @classmethod
    def model_recipe(cls, name: str) -> Optional[Dict[str, Any]]:
        from ...models.fat import MODEL_CONFIGS

        size, released = (name[: -len("_released")], True) if name.endswith("_released") else (name, False)
        if size not in MODEL_CONFIGS:
            return None
        base = "released" if released else "imagenet"
        values = parse_recipe_file(base, cls)
        if values is None:
            raise FatvitError(f"recipe {base!r} is missing from the installed package (fatvit/recipes/{base}.yaml)")
        return {**values, "model": size}


#: The name classification's config had before the tasks were given one vocabulary.
TrainConfig = ClassifyConfig
