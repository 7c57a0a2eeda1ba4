"""The segmentation config: ADE20K, the paper's Semantic FPN recipe (80k iterations, poly) by default."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional

from ...config import DenseConfig

__all__ = ["SegmentConfig", "SETTINGS"]

#: What a segmenter's file records that ``segment eval`` and ``segment predict`` may change (``--set KEY=VALUE``).
SETTINGS = ("scale", "crop_size", "test_mode", "test_stride")


@dataclass
class SegmentConfig(DenseConfig):
    """ADE20K semantic segmentation: the paper's Semantic FPN recipe (80k iterations, poly) by default."""

    TASK: ClassVar[str] = "segment"
    BEFORE_KEYS: ClassVar[Dict[str, Any]] = dict(no_decay_1d=True, avg_non_ignore=True)
    model: str = "semantic_fpn_fat_b0"
    num_classes: Optional[int] = None  # None: the data set's classes.txt, or 150 (ADE20K)
    reduce_zero_label: bool = True  # label 0 is "other" (ignored), classes are 1..N
    epochs: Optional[int] = None
    iterations: Optional[int] = 80000
    sched: str = "poly"
    warmup_lr: float = 1e-6
    min_lr: float = 1e-6
    scale: List[int] = field(default_factory=lambda: [2048, 512])  # (long, short) of the keep-ratio resize
    ratio_range: List[float] = field(default_factory=lambda: [0.5, 2.0])
    crop_size: int = 512
    cat_max_ratio: float = 0.75
    photometric: bool = True
    avg_non_ignore: bool = False  # cross-entropy over every pixel (mmseg's default); true: over the labelled ones
    test_mode: str = "whole"  # whole or slide
    test_stride: int = 341  # slide: window stride (the window is crop_size)

    def check(self) -> None:
        super().check()
        need = self.need
        need(self.num_classes is None or 2 <= self.num_classes <= 254, "num_classes", "2..254 or null")
        need(len(self.scale) == 2 and all(isinstance(s, int) and s >= 16 for s in self.scale), "scale",
             "[long, short] in pixels (integers of at least 16)")  # fmt: skip
        need(
            len(self.ratio_range) == 2
            and all(isinstance(r, (int, float)) for r in self.ratio_range)
            and 0 < self.ratio_range[0] <= self.ratio_range[1],
            "ratio_range",
            "[min, max] with 0 < min <= max",
        )
        need(self.crop_size >= 32, "crop_size", "at least 32")
        need(0 < self.cat_max_ratio <= 1, "cat_max_ratio", "in (0, 1]")
        need(self.test_mode in ("whole", "slide"), "test_mode", "whole or slide")
        need(1 <= self.test_stride <= self.crop_size, "test_stride", f"in 1..crop_size ({self.crop_size})")
