"""Building blocks of FAT: the stem, FASA, the ConvFFN, and the attentions FASA is compared with."""

from .attention import CrossShapedWindowAttention, PartitionAttention, SpatialReductionAttention
from .fasa import FASA, INTERACTIONS, KV_DOWNSAMPLES, RefinedDownsample, StridedConvDownsample, make_kv_downsample
from .ffn import ConvFFN, DownsampleShortcut
from .stem import ConvBNAct, ConvStem

__all__ = [
    "FASA",
    "INTERACTIONS",
    "KV_DOWNSAMPLES",
    "ConvBNAct",
    "ConvFFN",
    "ConvStem",
    "CrossShapedWindowAttention",
    "DownsampleShortcut",
    "PartitionAttention",
    "RefinedDownsample",
    "SpatialReductionAttention",
    "StridedConvDownsample",
    "make_kv_downsample",
]
