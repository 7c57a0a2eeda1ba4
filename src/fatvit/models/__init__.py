"""FAT models; importing this registers them with timm."""

from .fat import FAT, MODEL_CONFIGS, FATBlock, FATConfig, FATStage, model_names

__all__ = ["FAT", "FATBlock", "FATConfig", "FATStage", "MODEL_CONFIGS", "model_names"]
