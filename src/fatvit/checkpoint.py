"""Reading and writing FAT weights.

Accepted formats, recognised by content rather than by name:

* the authors' files: a dict whose ``model`` entry is the state dict
  (also ``state_dict``, ``state_dict_ema`` or ``model_ema`` entries);
* fatvit training checkpoints (a dict with a ``model`` entry, see
  :mod:`fatvit.train`);
* a bare state dict saved with ``torch.save``;
* ``.safetensors`` files.

Pickled files are read with ``weights_only=True``: a checkpoint cannot run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Tuple, Union

import torch
from safetensors.torch import load_file as _load_safetensors
from safetensors.torch import save_file as _save_safetensors
from torch import nn

from .errors import FatvitError

__all__ = [
    "CheckpointError",
    "apply_state_dict",
    "load_checkpoint",
    "read_checkpoint",
    "read_file",
    "read_state_dict",
    "save_safetensors",
]

PathLike = Union[str, os.PathLike]

#: Entries of a checkpoint dict that hold the model's state dict, in order of preference.
STATE_DICT_ENTRIES = ("model", "state_dict")
EMA_ENTRIES = ("model_ema", "state_dict_ema")


class CheckpointError(FatvitError):
    """A checkpoint cannot be read, or does not fit the model."""


def _short_list(keys: Iterable[str], limit: int = 5) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def read_file(path: PathLike) -> Any:
    """The object stored in a checkpoint file: a safetensors dict, or a ``torch.load`` with ``weights_only``.

    Raises:
        CheckpointError: the file is missing or unreadable (corrupt, truncated, or holding code).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return dict(_load_safetensors(str(path), device="cpu"))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, foreign pickle, truncated write
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from None


def read_checkpoint(path: PathLike, use_ema: bool = False) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """The model state dict in ``path``, whatever its format, and the training config it records ({} if none).

    Args:
        path: a ``.safetensors`` file or a ``torch.save`` file.
        use_ema: take the EMA weights of a training checkpoint when present.

    Raises:
        CheckpointError: the file is missing, unreadable or holds no state dict.
    """
    obj = read_file(path)
    config: Dict[str, Any] = {}
    if isinstance(obj, Mapping):
        if isinstance(obj.get("config"), Mapping):
            config = dict(obj["config"])
        entries = (EMA_ENTRIES + STATE_DICT_ENTRIES) if use_ema else STATE_DICT_ENTRIES
        for entry in entries:
            if isinstance(obj.get(entry), Mapping):
                obj = obj[entry]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path} holds no state dict (expected a dict of tensors, or a dict with a 'model' entry)"
        )
    # weights saved from DistributedDataParallel or torch.compile carry a prefix
    state_dict = {}
    for key, value in obj.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        state_dict[key] = value
    return state_dict, config


def read_state_dict(path: PathLike, use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """The model state dict stored in ``path``, whatever its format (see :func:`read_checkpoint`)."""
    return read_checkpoint(path, use_ema)[0]


def apply_state_dict(
    model: nn.Module, state_dict: Dict[str, torch.Tensor], source: PathLike, strict: bool = True
) -> List[str]:
    """Load ``state_dict`` (read from ``source``) into ``model``.

    With ``strict=True`` every key must match in name and shape; otherwise
    keys whose shapes differ (a classifier for another number of classes, for
    instance) are skipped, and their names and the missing ones returned.

    Raises:
        CheckpointError: naming the missing, unexpected or mis-shaped keys.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    skipped = [k for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_short_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_short_list(unexpected)}")
    if skipped:
        shapes = [f"{k} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(own[k].shape)})" for k in skipped]
        problems.append(f"shape mismatch: {_short_list(shapes, 3)}")
    if strict and problems:
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in skipped}, strict=False)
    return skipped + missing


def load_checkpoint(
    model: nn.Module,
    path: PathLike,
    strict: bool = True,
    use_ema: bool = False,
) -> List[str]:
    """Load the weights in ``path`` into ``model`` (see :func:`apply_state_dict` for ``strict``).

    Raises:
        CheckpointError: the file cannot be read, or names the missing, unexpected or mis-shaped keys.
    """
    return apply_state_dict(model, read_state_dict(path, use_ema=use_ema), path, strict)


def save_safetensors(model_or_state: Union[nn.Module, Mapping[str, torch.Tensor]], path: PathLike) -> None:
    """Write a model's weights (or a state dict) as ``.safetensors``, atomically."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    _save_safetensors(tensors, str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
