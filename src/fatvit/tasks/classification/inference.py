"""A trained classifier read back from a file: its model, preprocessing and class names.

``fatvit eval``, ``fatvit predict`` and ``fatvit explain`` all start here.
The file's own record (see :func:`fatvit.checkpoint.model_meta`) says which
model to build and how images were preprocessed; settings given by the user
(flags, ``--set KEY=VALUE``) win over it, and the model's ``pretrained_cfg``
fills whatever neither gives. The authors' files carry no record: they need
the model's name (``fat_b0`` is assumed otherwise) and, for predictions, the
class names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set

from torch import nn

from ...checkpoint import PathLike, apply_state_dict, read_checkpoint
from ...config import apply_overrides, make_config
from ...data import default_workers
from ...errors import FatvitError
from ...models import create_model
from .config import INFERENCE_KEYS, RECORD_KEYS, ClassifyConfig
from .metrics import eval_transform

__all__ = [
    "INFERENCE_KEYS",
    "Classifier",
    "NoClassNamesError",
    "OptionNotForFileError",
    "inference_config",
    "load_classifier",
    "is_exported",
    "load_exported",
    "read_class_names",
]


class NoClassNamesError(FatvitError):
    """A file that records no class names (an authors' file, a bare state dict), asked for them."""

    def __init__(self, source: str, num_classes: int) -> None:
        self.source = source
        self.num_classes = num_classes
        super().__init__(f"{source} records no class names (an authors' file or a bare state dict); give them with "
                         f"load_classifier(..., classes=names), {num_classes} names in output order")  # fmt: skip


class OptionNotForFileError(FatvitError):
    """An argument of :func:`load_classifier` that does not apply to the file given: ``use_ema`` for an exported
    model (one set of weights), ``runtime`` for a file that runs in PyTorch."""

    def __init__(self, option: str, checkpoint: PathLike, runtime: Optional[str] = None) -> None:
        self.option = option
        self.checkpoint = checkpoint
        self.runtime = runtime
        if option == "use_ema":
            text = f"{checkpoint} is an exported model: it holds one set of weights (use_ema applies to training " \
                   "checkpoints)"  # fmt: skip
        else:
            text = f"runtime={runtime!r} runs exported .onnx files; {checkpoint} runs in PyTorch"
        super().__init__(text)


@dataclass
class Classifier:
    """A model with its weights loaded (on the CPU, in eval mode) and what it needs to be used as trained."""

    model: nn.Module
    #: PIL image -> normalised tensor, as the model was evaluated when trained
    transform: Callable[[Any], Any]
    config: ClassifyConfig
    num_classes: int
    #: class names by output index; None if neither the file nor the user gave them
    classes: Optional[List[str]]
    source: str
    meta: Dict[str, Any] = field(default_factory=dict)
    #: the config keys the record or the user set (the others come from the model's pretrained_cfg)
    given: Set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.config.model

    def class_names(self) -> List[str]:
        """The class names, or an error saying how to give them.

        Raises:
            NoClassNamesError: the file records no class names and none were given.
        """
        if self.classes is None:
            raise NoClassNamesError(self.source, self.num_classes)
        return self.classes

    def deploy(self, channels_last: bool = True, pointwise_linear: bool = True) -> Classifier:
        """This classifier with its model's inference form (:func:`fatvit.deploy`: same outputs, faster); the
        transform, classes and record are unchanged. The way to run a saved model deployed: save the model
        as trained (fatvit's checkpoints, ``model.safetensors``), load it, then deploy."""
        from ...deploy import deploy

        return dataclasses.replace(self, model=deploy(self.model, channels_last, pointwise_linear))


def inference_config(
    meta: Mapping[str, Any],
    typed: Optional[Mapping[str, Any]] = None,
    overrides: Sequence[str] = (),
    keys: Sequence[str] = INFERENCE_KEYS,
    purpose: str = "inference",
) -> tuple[ClassifyConfig, Set[str]]:
    """The settings to run a file's model with: its record, then ``typed`` (flags), then ``overrides`` (--set).

    Also returns the keys given (by the record or the user).

    Raises:
        FatvitError: a key that does not apply to inference, or a bad value.
    """
    values = {k: meta[k] for k in RECORD_KEYS if k in meta}
    values = apply_overrides(values, overrides, typed)
    foreign = [k for k in values if k not in keys]
    if foreign:
        raise FatvitError(f"config key {foreign[0]!r} does not apply to {purpose} (it takes {', '.join(keys)})")
    given = set(values)
    values.setdefault("workers", default_workers())
    return make_config(values, ClassifyConfig), given


def read_class_names(path: PathLike) -> List[str]:
    """Class names from a text file, one per line in output order (blank lines and surrounding spaces ignored).

    Raises:
        FatvitError: the file cannot be read or holds no names.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise FatvitError(f"cannot read the class names in {path}: {getattr(err, 'strerror', None) or err}") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise FatvitError(f"{path} holds no class names (expected one per line)")
    return names


#: The actions of ``fatvit detect`` and ``fatvit segment`` (what a hint about a dense file may name).
DENSE_ACTIONS = ("train", "eval", "predict", "export")


def load_classifier(
    checkpoint: PathLike,
    typed: Optional[Mapping[str, Any]] = None,
    overrides: Sequence[str] = (),
    use_ema: bool = False,
    classes: Optional[Sequence[str]] = None,
    keys: Sequence[str] = INFERENCE_KEYS,
    purpose: str = "inference",
    runtime: Optional[str] = None,
) -> Classifier:
    """Build the model a file records, load its weights and make its evaluation transform.

    An ``.onnx`` file (written by ``fatvit export``) is run by ``runtime`` instead (see :func:`load_exported`).

    Args:
        checkpoint: a fatvit checkpoint or ``.safetensors`` export, an authors' file, or an ``.onnx`` export.
        typed: config values from flags (``model``, ``img_size``, ...), over the file's record.
        overrides: ``KEY=VALUE`` strings (``--set``), over both.
        use_ema: the EMA weights of a training checkpoint.
        classes: class names by output index, over the file's.
        keys: the config keys the caller accepts.
        purpose: what the settings are for, in error messages (``eval``, ``predict``, ...).
        runtime: for an ``.onnx`` file, ``onnxruntime`` (default) or ``openvino``; other files run in PyTorch.

    Raises:
        OptionNotForFileError: ``use_ema`` for an exported model, or ``runtime`` for a file that runs in PyTorch.
        FatvitError: an unreadable file, weights that do not fit the model, bad settings, or
            class names whose number differs from the model's outputs.
    """
    if is_exported(checkpoint):
        if use_ema:
            raise OptionNotForFileError("use_ema", checkpoint)
        return load_exported(checkpoint, runtime or "onnxruntime", typed, overrides, classes, keys, purpose)
    if runtime is not None:
        raise OptionNotForFileError("runtime", checkpoint, runtime)
    state_dict, meta = read_checkpoint(checkpoint, use_ema=use_ema)
    if meta.get("task") in ("detect", "segment"):
        task = meta["task"]
        if purpose in DENSE_ACTIONS:
            raise FatvitError(f"{checkpoint} holds a {task!r} model: use fatvit {task} {purpose}")
        raise FatvitError(
            f"{checkpoint} holds a {task!r} model: fatvit {purpose} takes classification models (fatvit {task} "
            f"has {', '.join(DENSE_ACTIONS)})"
        )
    cfg, given = inference_config(meta, typed, overrides, keys, purpose)
    model = create_model(cfg.model, **cfg.model_kwargs)
    classifier = model.pretrained_cfg.get("classifier", "head")
    head = state_dict.get(f"{classifier}.weight")
    num_classes = meta.get("num_classes") or (head.shape[0] if head is not None else model.num_classes)
    if num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    apply_state_dict(model, state_dict, checkpoint, meta=meta)
    model.eval()
    names = list(classes) if classes is not None else (list(meta["classes"]) if meta.get("classes") else None)
    if names is not None and len(names) != num_classes:
        raise FatvitError(f"{checkpoint} classifies {num_classes} classes, but {len(names)} class names were given")
    transform = eval_transform(
        model,
        input_size=(3, cfg.img_size, cfg.img_size) if "img_size" in given else None,
        crop_pct=cfg.crop_pct if "crop_pct" in given else None,
        interpolation=cfg.interpolation if "interpolation" in given else None,
        mean=tuple(meta["mean"]) if "mean" in meta else None,
        std=tuple(meta["std"]) if "std" in meta else None,
    )
    return Classifier(model, transform, cfg, num_classes, names, str(checkpoint), dict(meta), given)


def is_exported(path: PathLike) -> bool:
    """Whether ``path`` names an exported model (an ``.onnx`` file) rather than PyTorch weights."""
    return Path(path).suffix.lower() == ".onnx"


def load_exported(
    path: PathLike,
    runtime: str = "onnxruntime",
    typed: Optional[Mapping[str, Any]] = None,
    overrides: Sequence[str] = (),
    classes: Optional[Sequence[str]] = None,
    keys: Sequence[str] = INFERENCE_KEYS,
    purpose: str = "inference",
    threads: Optional[int] = None,
) -> Classifier:
    """An ONNX file written by ``fatvit export``, run by ``runtime``, as a :class:`Classifier`.

    The file's metadata gives the model's name, class names and preprocessing
    (input size, crop, interpolation, mean, std); ``typed`` and ``overrides``
    win over the size, crop and interpolation, as for a checkpoint. The model
    and its arguments are fixed in the file. It runs on the CPU.

    Raises:
        FatvitError: not a fatvit export (no model or preprocessing in its metadata), a dense model's file,
            settings that the file fixes or cannot take, or a runtime that is missing or cannot load it.
    """
    from timm.data import create_transform

    from ...export import read_onnx_metadata
    from ...runtime import RuntimeModel

    meta = read_onnx_metadata(path)
    if meta.get("task") in ("detect", "segment"):
        raise FatvitError(f"{path} holds a {meta['task']!r} model exported to ONNX: fatvit {purpose} runs "
                          "exported classifiers")  # fmt: skip
    missing = [k for k in ("model", "num_classes", "input_size", "crop_pct", "interpolation", "mean", "std")
               if k not in meta]  # fmt: skip
    if missing:
        raise FatvitError(f"{path} is not a fatvit export: its metadata has no {', '.join(missing)} "
                          "(write it with fatvit export)")  # fmt: skip
    record = {"model": meta["model"], "model_kwargs": meta.get("model_kwargs") or {},
              "img_size": int(meta["input_size"][-1]), "crop_pct": meta["crop_pct"],
              "interpolation": meta["interpolation"]}  # fmt: skip
    cfg, given = inference_config(record, typed, overrides, keys, purpose)
    for key in ("model", "model_kwargs"):
        if getattr(cfg, key) != record[key]:
            raise FatvitError(f"{path} is an exported {record['model']}: its {key} is fixed in the file "
                              f"({record[key]!r}), not {getattr(cfg, key)!r}")  # fmt: skip
    if cfg.device not in ("auto", "cpu"):
        raise FatvitError(f"{path} runs on the CPU with {runtime} (device {cfg.device!r} cannot run it)")
    cfg = dataclasses.replace(cfg, device="cpu", channels_last=False)
    model = RuntimeModel(path, runtime, threads).eval()
    height, width = model.input_shape[2:4] if len(model.input_shape) == 4 else (None, None)
    if (height is not None and height != cfg.img_size) or (width is not None and width != cfg.img_size):
        raise FatvitError(f"{path} is a static export for {height}x{width} inputs: it cannot take img_size "
                          f"{cfg.img_size}")  # fmt: skip
    num_classes = int(meta["num_classes"])
    names = list(classes) if classes is not None else (list(meta["classes"]) if meta.get("classes") else None)
    if names is not None and len(names) != num_classes:
        raise FatvitError(f"{path} classifies {num_classes} classes, but {len(names)} class names were given")
    transform = create_transform(
        input_size=(3, cfg.img_size, cfg.img_size),
        crop_pct=cfg.crop_pct,
        crop_mode=meta.get("crop_mode", "center"),
        interpolation=cfg.interpolation,
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        is_training=False,
    )
    return Classifier(model, transform, cfg, num_classes, names, str(path), dict(meta), given)
