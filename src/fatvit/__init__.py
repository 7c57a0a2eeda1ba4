"""fatvit: the Fully Adaptive Transformer (FAT) family in PyTorch.

Importing the package registers ``fat_b0`` ... ``fat_b5`` and ``fat_b3_st``
with timm, so ``timm.create_model("fat_b0")`` works.

The package itself is light: torch, timm and the models load on first use,
so that ``fatvit --help`` and argument errors answer without them. The names
below load their module when first read (``fatvit.FAT``, ``from fatvit import
deploy``). Registration with timm happens as soon as timm is imported: at once
if it already is, else when the program imports it (``import timm`` or any
module that does), before that import returns.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any, List

__version__ = "0.1.0"

#: The public names and the module each comes from.
_EXPORTS = {
    "CheckpointError": "checkpoint",
    "ClassifyConfig": "tasks.classification.config",
    "TrainConfig": "tasks.classification.config",
    "DetectConfig": "tasks.detection.config",
    "SegmentConfig": "tasks.segmentation.config",
    "load_checkpoint": "checkpoint",
    "read_state_dict": "checkpoint",
    "save_safetensors": "checkpoint",
    "compile_inference": "deploy",
    "deploy": "deploy",
    "explain_image": "explain",
    "export_onnx": "export",
    "load_classifier": "tasks.classification.inference",
    "FAT": "models",
    "MODEL_CONFIGS": "models",
    "model_names": "models",
    "predict": "tasks.classification.predict",
}

__all__ = [
    "FAT",
    "MODEL_CONFIGS",
    "CheckpointError",
    "ClassifyConfig",
    "DetectConfig",
    "SegmentConfig",
    "TrainConfig",
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

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names load lazily
    from .checkpoint import CheckpointError, load_checkpoint, read_state_dict, save_safetensors
    from .deploy import compile_inference, deploy
    from .explain import explain_image
    from .export import export_onnx
    from .models import FAT, MODEL_CONFIGS, model_names
    from .tasks.classification.config import ClassifyConfig, TrainConfig
    from .tasks.classification.inference import load_classifier
    from .tasks.classification.predict import predict
    from .tasks.detection.config import DetectConfig
    from .tasks.segmentation.config import SegmentConfig


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fatvit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later reads skip this function
    return value


def __dir__() -> List[str]:
    return sorted({*globals(), *_EXPORTS})


class _Package(types.ModuleType):
    """The package's module type: importing a submodule named as one of its public names (``fatvit.deploy``)
    binds that name to the submodule's function of that name, not to the submodule, as an eager
    ``from .deploy import deploy`` would."""

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            isinstance(value, types.ModuleType)
            and _EXPORTS.get(name) == name
            and value.__name__ == f"{__name__}.{name}"
        ):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


class _RegisterWithTimm(importlib.abc.MetaPathFinder):
    """Imports ``fatvit.models`` (which registers the models with timm) once timm is imported and no fatvit
    module is half-way through its own import: after the import of timm, or of the outermost fatvit module
    that imported it. Removes itself when done."""

    def __init__(self) -> None:
        self.loading = 0  # fatvit modules (and timm) being executed now, nested

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "timm" and not fullname.startswith(f"{__name__}."):
            return None
        for finder in sys.meta_path:  # the other finders' answer
            find = getattr(finder, "find_spec", None) if finder is not self else None
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            self.loading += 1
            try:
                run(module)
            finally:
                self.loading -= 1
            if self.loading == 0 and "timm" in sys.modules and self in sys.meta_path:
                sys.meta_path.remove(self)
                importlib.import_module(".models", __name__)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if "timm" in sys.modules:
    importlib.import_module(".models", __name__)
elif not any(isinstance(finder, _RegisterWithTimm) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithTimm())
