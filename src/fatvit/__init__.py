"""fatvit: the Fully Adaptive Transformer (FAT) family in PyTorch.

Importing the package registers ``fat_b0`` ... ``fat_b5`` and ``fat_b3_st``
with timm, so ``timm.create_model("fat_b0")`` works.
"""

from .checkpoint import CheckpointError, load_checkpoint, read_state_dict, save_safetensors
from .deploy import compile_inference, deploy
from .explain import explain_image
from .export import export_onnx
from .inference import load_classifier
from .models import FAT, MODEL_CONFIGS, model_names
from .predictions import predict

__version__ = "0.1.0"

__all__ = [
    "FAT",
    "MODEL_CONFIGS",
    "CheckpointError",
    "compile_inference",
    "deploy",
    "explain_image",
    "export_onnx",
    "load_checkpoint",
    "load_classifier",
    "model_names",
    "predict",
    "read_state_dict",
    "save_safetensors",
    "__version__",
]
