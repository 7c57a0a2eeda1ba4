"""Building blocks of FAT: the stem, FASA and the ConvFFN."""

from .fasa import FASA, INTERACTIONS, RefinedDownsample
from .ffn import ConvFFN, DownsampleShortcut
from .stem import ConvBNAct, ConvStem

__all__ = [
    "FASA",
    "INTERACTIONS",
    "ConvBNAct",
    "ConvFFN",
    "ConvStem",
    "DownsampleShortcut",
    "RefinedDownsample",
]
