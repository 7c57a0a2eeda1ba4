"""Reading and writing FAT weights, and what fatvit's files record about them.

Accepted formats, recognised by content rather than by name:

* the authors' files: a dict whose ``model`` entry is the state dict (also
  ``state_dict``, ``state_dict_ema`` or ``model_ema`` entries), with a yacs
  ``CfgNode`` under ``config`` when their trainer saved it;
* fatvit training checkpoints (see :mod:`fatvit.engine.state`);
* a bare state dict saved with ``torch.save``;
* ``.safetensors`` files.

Pickled files are read with ``weights_only=True``. A file that holds other
objects too (the authors' yacs config) is read by a restricted unpickler that
keeps tensors and plain containers and turns every other class into an inert
placeholder: no code from a checkpoint is imported or run.

Every file fatvit writes carries a *meta* record (:func:`model_meta`): the
model's name and arguments, its classes and its preprocessing, so that a file
is evaluated as it was trained. FAT's interaction is also recorded in the
state dict itself, and checked when weights are loaded.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import pickle
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from safetensors import safe_open
from safetensors.torch import load_file as _load_safetensors
from safetensors.torch import save as _safetensors_bytes
from torch import nn

from .errors import FatvitError
from .files import atomic_write

__all__ = [
    "CheckpointError",
    "apply_state_dict",
    "load_checkpoint",
    "load_finetune",
    "model_meta",
    "read_checkpoint",
    "read_file",
    "read_state_dict",
    "read_task_checkpoint",
    "save_checkpoint",
    "save_safetensors",
]

#: The entry of a state dict's ``_metadata`` under which a FAT model records how it was built.
RECORD_KEY = "fatvit"


def interaction_record(interaction: Optional[str]) -> Dict[str, Any]:
    """The entry of a state dict's ``_metadata`` that records a FASA interaction ({} for none)."""
    return {RECORD_KEY: {"interaction": interaction}} if interaction else {}


def recorded_interaction(local_metadata: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The interaction an entry of a state dict's ``_metadata`` records, if any."""
    record = (local_metadata or {}).get(RECORD_KEY)
    return record.get("interaction") if isinstance(record, Mapping) else None


def records_interaction(module: nn.Module) -> bool:
    """Whether ``module`` records its FASA interaction in its state dicts and checks it on load: a FAT model
    (its class says so with ``records_interaction = True``; this module knows no model class)."""
    return bool(getattr(type(module), "records_interaction", False))


PathLike = Union[str, os.PathLike]

#: Entries of a checkpoint dict that hold the model's state dict, in order of preference.
STATE_DICT_ENTRIES = ("model", "state_dict")
EMA_ENTRIES = ("model_ema", "state_dict_ema")
#: The entry of fatvit's checkpoints (and the safetensors metadata key) holding the meta record.
META_ENTRY = "meta"
SAFETENSORS_META_KEY = "fatvit"


class CheckpointError(FatvitError):
    """A checkpoint cannot be read, or does not fit the model."""


def _short_list(keys: Iterable[str], limit: int = 5) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def model_meta(
    model: str,
    model_kwargs: Mapping[str, Any],
    classes: Sequence[str],
    img_size: int,
    crop_pct: float,
    interpolation: str,
    mean: Sequence[float],
    std: Sequence[float],
    interaction: Optional[str] = None,
) -> Dict[str, Any]:
    """What a file must record to be used as it was trained (plain JSON types)."""
    meta: Dict[str, Any] = dict(
        model=model,
        model_kwargs=dict(model_kwargs),
        num_classes=len(classes),
        classes=list(classes),
        img_size=int(img_size),
        crop_pct=float(crop_pct),
        interpolation=interpolation,
        mean=[float(m) for m in mean],
        std=[float(s) for s in std],
    )
    if interaction:
        meta["interaction"] = interaction
    return json.loads(json.dumps(meta))  # fails here, not in a reader, on a value JSON cannot hold


# ----- reading -----------------------------------------------------------------


class _Inert(dict):
    """Stands in for an object of a class the restricted reader does not import (a yacs ``CfgNode``, ...).

    It accepts whatever the pickle gives it (arguments, items, state) and
    does nothing with it, so it can hold a config's values for inspection.
    """

    _origin = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def append(self, item: Any) -> None:
        self.__dict__.setdefault("_items", []).append(item)

    def extend(self, items: Iterable[Any]) -> None:
        self.__dict__.setdefault("_items", []).extend(items)

    def __repr__(self) -> str:
        return f"<inert {self._origin}>"


@functools.cache
def _inert_class(module: str, name: str) -> type:
    return type(name, (_Inert,), {"_origin": f"{module}.{name}", "__module__": "fatvit.checkpoint.inert"})


@functools.lru_cache(maxsize=1)
def _allowed_globals() -> Dict[str, Any]:
    """The globals PyTorch's ``weights_only`` unpickler accepts (tensors, storages, dtypes, containers)."""
    from torch import _weights_only_unpickler as wo

    allowed = dict(wo._get_allowed_globals())
    allowed.update(wo._get_user_allowed_globals())
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = _allowed_globals().get(f"{module}.{name}")
        return allowed if allowed is not None else _inert_class(module, name)


_restricted_pickle = types.SimpleNamespace(
    __name__="fatvit_restricted_pickle",
    Unpickler=_RestrictedUnpickler,
    load=lambda f, **kw: _RestrictedUnpickler(f, **kw).load(),
)


def _read_safetensors(path: Path) -> Dict[str, Any]:
    tensors = dict(_load_safetensors(str(path), device="cpu"))
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    out: Dict[str, Any] = {"model": tensors}
    if SAFETENSORS_META_KEY in header:
        out[META_ENTRY] = json.loads(header[SAFETENSORS_META_KEY])
    return out


def safetensors_record(path: PathLike) -> Dict[str, Any]:
    """The fatvit record in a ``.safetensors`` file's header ({} if it has none or cannot be read), without
    reading its tensors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        return dict(json.loads(header[SAFETENSORS_META_KEY])) if SAFETENSORS_META_KEY in header else {}
    except Exception:  # a missing, foreign or corrupt file records nothing; its reader reports the problem
        return {}


def read_file(path: PathLike) -> Any:
    """The object stored in a checkpoint file, read without running any code from it.

    ``.safetensors`` files give ``{"model": tensors, "meta": record}`` (the
    record if the file has one). Pickles are read with ``weights_only=True``,
    or, if they hold other classes, by the restricted unpickler.

    Raises:
        CheckpointError: the file is missing or unreadable (corrupt, truncated, not a checkpoint), or is an
            ONNX export.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(
            f"{path} is an ONNX export, not a checkpoint: give the .pth or .safetensors file it was exported "
            "from (run the ONNX file itself with ONNX Runtime)"
        )
    try:
        if path.suffix == ".safetensors":
            return _read_safetensors(path)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if "Weights only load failed" not in str(err):
                raise
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
    except Exception as err:  # corrupt file, text file, truncated write
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a PyTorch or safetensors checkpoint, or a corrupt one "
            f"({type(err).__name__}: {first})"
        ) from None


def _legacy_meta(obj: Mapping[str, Any]) -> Dict[str, Any]:
    """The meta record of a fatvit training checkpoint written before records existed (its config)."""
    cfg = obj.get("config")
    if "optimizer" not in obj or not isinstance(cfg, Mapping) or isinstance(cfg, _Inert):
        return {}
    meta = {k: cfg[k] for k in ("model", "model_kwargs", "img_size", "crop_pct", "interpolation") if k in cfg}
    if isinstance(obj.get("classes"), list):
        meta["classes"] = obj["classes"]
        meta["num_classes"] = len(obj["classes"])
    return meta


def read_checkpoint(path: PathLike, use_ema: bool = False) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """The model state dict in ``path``, whatever its format, and the file's meta record ({} if none).

    The record's ``interaction`` is also taken from a state dict's own
    ``_metadata`` (a ``torch.save(model.state_dict())`` of a FAT model).

    Args:
        path: a ``.safetensors`` file or a ``torch.save`` file.
        use_ema: take the EMA weights of a training checkpoint (an error if it has none).

    Raises:
        CheckpointError: the file is missing, unreadable or holds no state dict (or no EMA weights).
    """
    obj = read_file(path)
    meta: Dict[str, Any] = {}
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        if isinstance(obj.get(META_ENTRY), Mapping):
            meta = dict(obj[META_ENTRY])
        else:
            meta = _legacy_meta(obj)
        if use_ema:
            ema = next((obj[e] for e in EMA_ENTRIES if isinstance(obj.get(e), Mapping) and obj[e]), None)
            if ema is None:
                raise CheckpointError(f"{path} holds no EMA weights (the run trained without ema)")
            obj = ema
        else:
            obj = next((obj[e] for e in STATE_DICT_ENTRIES if isinstance(obj.get(e), Mapping)), obj)
    elif use_ema:
        raise CheckpointError(f"{path} holds no EMA weights (it is a bare state dict)")
    if not _is_state_dict(obj):
        raise CheckpointError(
            f"{path} holds no state dict (expected a dict of tensors, or a dict with a 'model' entry)"
        )
    recorded = recorded_interaction((getattr(obj, "_metadata", None) or {}).get(""))
    if "interaction" not in meta and recorded:
        meta["interaction"] = recorded
    # weights saved from DistributedDataParallel or torch.compile carry a prefix
    state_dict = {}
    for key, value in obj.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        state_dict[key] = value
    return state_dict, meta


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_state_dict(path: PathLike, use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """The model state dict stored in ``path``, whatever its format (see :func:`read_checkpoint`)."""
    return read_checkpoint(path, use_ema)[0]


def apply_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: PathLike,
    strict: bool = True,
    meta: Optional[Mapping[str, Any]] = None,
) -> List[str]:
    """Load ``state_dict`` (read from ``source``, with its meta record) into ``model``.

    With ``strict=True`` every key must match in name and shape; otherwise
    keys whose shapes differ (a classifier for another number of classes, for
    instance) are skipped, and their names and the missing ones returned.
    A FAT model checks the interaction the record names (see
    :func:`fatvit.models.fat.check_interaction`).

    Raises:
        CheckpointError: naming the missing, unexpected or mis-shaped keys, or another interaction.
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
        if _deployed_weights_of(model, state_dict):
            raise CheckpointError(
                f"{source} holds the weights of a deployed {type(model).__name__} (fatvit.deploy: BatchNorm and "
                "residuals folded), which only fit fatvit.deploy(model): save a model before deploying it (as "
                "training's checkpoints and model.safetensors do) and deploy it after loading"
            )
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems))
    loadable: Dict[str, torch.Tensor] = OrderedDict((k, v) for k, v in state_dict.items() if k not in skipped)
    record = interaction_record((meta or {}).get("interaction"))
    if record:  # each FAT module's load hook checks it (see fatvit.models.fat.check_interaction)
        prefixes = [name for name, module in model.named_modules() if records_interaction(module)] or [""]
        loadable._metadata = OrderedDict({p: record for p in prefixes})  # type: ignore[attr-defined]
    try:
        model.load_state_dict(loadable, strict=False)
    except RuntimeError as err:
        detail = " ".join(str(err).split("\n")[1:]).strip() or str(err)
        raise CheckpointError(f"{source}: {detail}") from None
    return skipped + missing


def _deployed_weights_of(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` has exactly the keys of ``model``'s deployed form (a FAT model only)."""
    if not records_interaction(model):
        return False
    from .deploy import deploy

    return set(state_dict) == set(deploy(model).state_dict())


def read_task_checkpoint(
    path: PathLike, task: str, what: str, use_ema: bool = False
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """:func:`read_checkpoint` of a file that must hold a fatvit model of ``task`` (``detect``, ``segment``),
    called ``what`` in the error.

    Raises:
        CheckpointError: the file is unreadable, or records another task, or none.
    """
    state_dict, meta = read_checkpoint(path, use_ema=use_ema)
    if meta.get("task") != task:
        held = f"a {meta['task']!r} model" if meta.get("task") else f"no record of a fatvit {what}"
        raise CheckpointError(f"{path} holds {held}: give a checkpoint of fatvit {task} train")
    return state_dict, meta


def load_task_model(
    path: PathLike, task: str, what: str, build: Callable[[Dict[str, Any]], nn.Module], use_ema: bool = False,
    adjust: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None,
) -> Tuple[nn.Module, Dict[str, Any]]:  # fmt: skip
    """The model a fatvit file of ``task`` records, built by ``build(record)`` and its weights loaded, in eval mode
    on the CPU; and the record (see :func:`read_task_checkpoint`), first changed by ``adjust`` if given."""
    state_dict, meta = read_task_checkpoint(path, task, what, use_ema)
    meta = adjust(meta) if adjust is not None else meta
    model = build(meta)
    apply_state_dict(model, state_dict, path, meta=meta)
    return model.eval(), meta


def fat_interaction(model: nn.Module) -> Optional[str]:
    """The FASA interaction of ``model``, a FAT, or of the first FAT inside it (a detector's backbone); None if
    it holds none."""
    return next((m.interaction for m in model.modules() if records_interaction(m)), None)


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
    state_dict, meta = read_checkpoint(path, use_ema=use_ema)
    return apply_state_dict(model, state_dict, path, strict, meta)


# ----- writing -----------------------------------------------------------------


def save_checkpoint(obj: Any, path: PathLike) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (see :func:`fatvit.files.atomic_write`)."""
    with atomic_write(path) as f:
        try:
            torch.save(obj, f)
        except RuntimeError as err:  # PyTorch's zip writer reports a failed write (a full disk) so
            raise OSError(errno.EIO, str(err).splitlines()[0]) from None


def save_safetensors(
    model_or_state: Union[nn.Module, Mapping[str, torch.Tensor]],
    path: PathLike,
    meta: Optional[Mapping[str, Any]] = None,
) -> None:
    """Write a model's weights (or a state dict) as ``.safetensors``, atomically, with its meta record.

    A FAT model's interaction is recorded even without ``meta``.
    """
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    record = dict(meta or {})
    interaction = fat_interaction(model_or_state) if isinstance(model_or_state, nn.Module) else None
    if interaction and "interaction" not in record:
        record["interaction"] = interaction
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    metadata = {SAFETENSORS_META_KEY: json.dumps(record)} if record else None
    data = _safetensors_bytes(tensors, metadata=metadata)
    with atomic_write(path) as f:
        f.write(data)


def load_finetune(model: nn.Module, path: PathLike, name: str, replaceable: Sequence[str]) -> List[str]:
    """Start ``model`` (called ``name`` in messages) from the weights in ``path``: every key must fit, except
    those under the ``replaceable`` prefixes (layers that depend on the classes), which keep their new values.

    Returns the replaced keys.

    Raises:
        CheckpointError: the file cannot be read, or other keys are missing or do not fit.
    """
    state_dict, meta = read_checkpoint(path)
    skipped = apply_state_dict(model, state_dict, path, strict=False, meta=meta)
    foreign = [k for k in skipped if not k.startswith(tuple(replaceable))]
    if foreign:
        raise CheckpointError(
            f"{path} does not fit {name}: {', '.join(foreign[:5])}"
            + (f" ... ({len(foreign)} keys)" if len(foreign) > 5 else "")
        )
    return skipped
