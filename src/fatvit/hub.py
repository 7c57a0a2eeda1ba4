"""Trained classifiers in timm's hub format: a folder that ``timm.create_model("local-dir:FOLDER")`` builds.

timm's format (what ``timm.models.save_for_hf`` writes) is a folder with
``model.safetensors`` (the state dict) and ``config.json``: ``architecture``,
``num_classes``, ``label_names``, the model's arguments and a
``pretrained_cfg`` with the preprocessing (input size, crop, interpolation,
mean, std). Every classification run folder is one (its
``model.safetensors`` is fatvit's, whose keys are the model's own), and
``fatvit export --format timm`` writes one from any checkpoint::

    import fatvit, timm
    model = timm.create_model("local-dir:runs/digits", pretrained=True)  # the trained model and its classes
    data = timm.data.resolve_data_config(model=model)                    # its preprocessing
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from .checkpoint import save_safetensors
from .errors import FatvitError

__all__ = ["TIMM_CONFIG", "save_timm_config", "save_timm_folder"]

#: The config file of timm's format.
TIMM_CONFIG = "config.json"


def save_timm_config(model: nn.Module, path: str | os.PathLike, meta: Mapping[str, Any]) -> Path:
    """Write timm's ``config.json`` for ``model`` with a fatvit record's classes, model arguments and
    preprocessing (``meta``, see :func:`fatvit.checkpoint.model_meta`), atomically, through timm's own writer.

    Raises:
        FatvitError: the file cannot be written.
    """
    from timm.models._hub import save_config_for_hf  # timm exports only save_for_hf, which also writes weights

    path = Path(path)
    size = int(meta["img_size"])
    data_config = dict(
        input_size=(3, size, size),
        crop_pct=float(meta["crop_pct"]),
        interpolation=meta["interpolation"],
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
    )
    # drop rates are training settings, left out as timm's own writer leaves them out
    model_args = {k: v for k, v in (meta.get("model_kwargs") or {}).items() if not k.endswith("drop_rate")
                  and k != "drop_path_rate"}  # fmt: skip
    partial = path.with_name(path.name + ".tmp")
    try:
        save_config_for_hf(model, str(partial), model_config=dict(label_names=list(meta.get("classes") or [])),
                           model_args=model_args, data_config=data_config)  # fmt: skip
        os.replace(partial, path)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise FatvitError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def save_timm_folder(model: nn.Module, folder: str | os.PathLike, meta: Mapping[str, Any]) -> Path:
    """``folder`` as timm's format: ``model.safetensors`` (with fatvit's record too) and ``config.json``."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FatvitError(f"cannot make the folder {folder}: {err.strerror or err}") from None
    save_safetensors(model, folder / "model.safetensors", meta=meta)
    save_timm_config(model, folder / TIMM_CONFIG, meta)
    return folder
