"""What fatvit offers by name, as data that imports without torch: ``fatvit --help`` and every verb's help
list it at once, and the modules that build and run these things import it from here.

- the dense-prediction models (:data:`DETECTORS`, :data:`SEGMENTERS`), each a :class:`DenseConfig` with the
  paper's figures, and the backbones' drop path in the authors' dense setup;
- the rows of the paper's ablation and attention tables (:data:`TABLES`);
- the benchmark's execution modes and default models;
- the ONNX export's default opset and the input sizes its check runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

__all__ = [
    "BACKBONE_DROP_PATH",
    "FPN_INITS",
    "DenseConfig",
    "DETECTORS",
    "SEGMENTERS",
    "PaperRow",
    "TABLES",
    "MODES",
    "EXTRA_MODES",
    "ALL_MODES",
    "QUANTIZED_OPS",
    "DEFAULT_CALIBRATION_IMAGES",
    "DEFAULT_MAX_DROP",
    "DEFAULT_MODELS",
    "AUTHORS_PREFIX",
    "DEFAULT_OPSET",
    "CHECK_SHAPES",
]

#: How a dense model's FPN convs start: ``xavier`` (mmdet's and mmseg's: Xavier-uniform, biases 0) or ``kaiming``
#: (torchvision's: Kaiming-uniform with ``a=1``, biases 0).
FPN_INITS = ("xavier", "kaiming")

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


# --- detectors and segmenters ---

_RETINANET_PAPER = {  # params (M); AP, AP50, AP75, APs, APm, APl
    "fat_b0": (14, (40.4, 61.6, 42.7, 24.0, 44.3, 53.1)),
    "fat_b1": (17, (42.5, 64.0, 45.1, 26.9, 46.0, 56.7)),
    "fat_b2": (23, (44.0, 65.2, 47.2, 27.5, 47.7, 58.8)),
    "fat_b3": (39, (45.9, 66.9, 49.5, 29.3, 50.1, 60.9)),
}
_MASK_RCNN_PAPER = {  # params (M); box AP, AP50, AP75, mask AP, AP50, AP75
    "fat_b0": (24, (40.8, 63.3, 44.2, 37.7, 60.2, 40.0)),
    "fat_b1": (28, (43.3, 65.6, 47.4, 39.6, 61.9, 42.8)),
    "fat_b2": (33, (45.2, 67.9, 49.0, 41.3, 64.6, 44.0)),
    "fat_b3": (49, (47.6, 69.7, 52.3, 43.1, 66.4, 46.2)),
}
_BOX_KEYS = ("bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_APs", "bbox_APm", "bbox_APl")
_MASK_KEYS = ("bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75")

#: Every detector by name: the paper's (FAT-B0..B3) and the same heads on timm's resnet18, for comparison.
DETECTORS: Dict[str, DenseConfig] = {
    **{
        f"retinanet_{b}": DenseConfig("retinanet", b, p, dict(zip(_BOX_KEYS, m)))
        for b, (p, m) in _RETINANET_PAPER.items()
    },
    **{
        f"mask_rcnn_{b}": DenseConfig("mask_rcnn", b, p, dict(zip(_MASK_KEYS, m)))
        for b, (p, m) in _MASK_RCNN_PAPER.items()
    },
    "retinanet_resnet18": DenseConfig("retinanet", "resnet18"),
    "mask_rcnn_resnet18": DenseConfig("mask_rcnn", "resnet18"),
}


#: Every segmenter by name, with the paper's ADE20K mIoU where it reports one (FAT-B0, ablation table).
SEGMENTERS: Dict[str, DenseConfig] = {
    "semantic_fpn_fat_b0": DenseConfig("semantic_fpn", "fat_b0", None, {"mIoU": 41.5}),
    "semantic_fpn_fat_b1": DenseConfig("semantic_fpn", "fat_b1"),
    "semantic_fpn_fat_b2": DenseConfig("semantic_fpn", "fat_b2"),
    "semantic_fpn_fat_b3": DenseConfig("semantic_fpn", "fat_b3"),
    "semantic_fpn_resnet18": DenseConfig("semantic_fpn", "resnet18"),
}


# --- the paper's ablation and attention tables ---

_SR_NOTE = (
    "{name} reduces keys/values with a full conv of kernel and stride R (R = 8, 4, 2, 1, as {paper} uses at "
    "these resolutions), which has C^2 R^2 weights per block; matching the paper's parameters would take "
    "other ratios or another reduction than {paper}'s, so the row is left unmatched"
)


@dataclass(frozen=True)
class PaperRow:
    label: str  # as printed in the paper
    model: str  # the registered model that implements the row
    params_m: str  # the paper's figures, as printed
    gflops: str
    top1: float
    unmatched: str = ""  # why an honest implementation cannot meet the bound, if it cannot


TABLES: Dict[str, List[PaperRow]] = {
    "ablation": [
        PaperRow("add+linear", "fat_b0_add", "4.5", "0.72", 76.2),
        PaperRow("cat+linear", "fat_b0_cat", "4.8", "0.77", 76.6),
        PaperRow("mul+linear", "fat_b0_mul", "4.5", "0.72", 77.1),
        PaperRow("interaction", "fat_b0", "4.5", "0.72", 77.6),
        PaperRow("pool down", "fat_b0_kv_pool", "4.4", "0.71", 77.2),
        PaperRow("conv w/o overlap", "fat_b0_kv_conv", "4.4", "0.71", 77.2),
        PaperRow("conv w/ overlap", "fat_b0_kv_conv_overlap", "4.5", "0.71", 77.3),
        PaperRow("refined down", "fat_b0", "4.5", "0.72", 77.6),
        PaperRow("w/o conv. pos", "fat_b0_no_cpe", "4.4", "0.70", 77.4),
        PaperRow("conv. pos", "fat_b0", "4.5", "0.72", 77.6),
    ],
    "attention": [
        PaperRow("Max-SA", "fat_b0_attn_maxvit", "4.3", "0.8", 75.7),
        PaperRow("WSA/S-WSA", "fat_b0_attn_swin", "4.3", "0.8", 76.1),
        PaperRow(
            "SRA", "fat_b0_attn_pvt", "4.4", "0.7", 76.2,
            unmatched=_SR_NOTE.format(name="SRA", paper="PVT"),
        ),
        PaperRow(
            "LSA/GSA", "fat_b0_attn_twins", "4.3", "0.7", 76.6,
            unmatched=_SR_NOTE.format(name="GSA (every other block)", paper="Twins-SVT"),
        ),
        PaperRow("CSWSA", "fat_b0_attn_cswin", "4.3", "0.8", 76.8),
        PaperRow("FASA", "fat_b0", "4.5", "0.7", 77.6),
    ],
}  # fmt: skip


# --- quantize ---

#: The ONNX operators quantized by default: FAT's convolutions (stem, pointwise, depthwise, downsampling).
QUANTIZED_OPS: Tuple[str, ...] = ("Conv",)

#: Images of the calibration folder used for calibration by default; the others are held out.
DEFAULT_CALIBRATION_IMAGES = 100

#: Largest top-1 drop (percentage points) on the held-out images accepted by default.
DEFAULT_MAX_DROP = 1.0

# --- benchmark ---

MODES = ("eager", "deployed", "compiled", "onnxruntime")
#: Modes timed only when asked for (int8 quantization; OpenVINO, an optional extra).
EXTRA_MODES = ("onnxruntime-int8", "openvino", "openvino-int8")
ALL_MODES = MODES + EXTRA_MODES

DEFAULT_FAT = ("fat_b0", "fat_b1", "fat_b2")
DEFAULT_PEERS = ("mobilevit_xs", "edgenext_x_small", "edgenext_small", "efficientnet_b1", "efficientnet_b3")
DEFAULT_MODELS = DEFAULT_FAT + DEFAULT_PEERS

AUTHORS_PREFIX = "authors:"


# --- ONNX export ---

#: The ONNX opset written by default (ONNX Runtime 1.16 and later run it).
DEFAULT_OPSET = 18

#: Input sizes (batch, height, width) that :func:`check_onnx` tries by default: square, odd, batched.
CHECK_SHAPES: Tuple[Tuple[int, int, int], ...] = ((1, 224, 224), (2, 97, 131), (3, 64, 48))
