"""Training recipes as data: one dataclass, YAML files under ``configs/``, overrides from the command line.

Defaults are the paper's ImageNet recipe (ARCHITECTURE.md). A recipe file
sets any subset of the fields; ``key=value`` overrides (values parsed as YAML,
nested keys with dots: ``model_kwargs.drop_path_rate=0.2``) come last.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from .errors import FatvitError, unknown_choice

__all__ = ["TrainConfig", "load_config", "make_config", "apply_overrides", "CONFIG_DIR"]

#: Recipes shipped with the repository (one per model, and the embedded digits set).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class TrainConfig:
    # model
    model: str = "fat_b0"
    model_kwargs: Dict[str, Any] = field(default_factory=dict)  # extra constructor arguments (interaction, ...)
    drop_path_rate: Optional[float] = None  # None: the size's default
    finetune: Optional[str] = None  # initial weights; a classifier of another size is replaced
    # data
    data: Optional[str] = None  # ImageNet-style folder with train/ and val/; None: embedded digits
    img_size: int = 224
    workers: int = 4
    # schedule and optimisation (lr is per 512 images, scaled by the global batch)
    epochs: int = 300
    batch_size: int = 128  # per process
    accum_steps: int = 1
    opt: str = "adamw"
    lr: float = 5e-4
    lr_base_batch: int = 512
    weight_decay: float = 0.05
    warmup_epochs: float = 20
    warmup_lr: float = 5e-7
    min_lr: float = 5e-6
    clip_grad: Optional[float] = 5.0
    smoothing: float = 0.1
    # augmentation
    hflip: float = 0.5
    scale: List[float] = field(default_factory=lambda: [0.08, 1.0])
    auto_augment: Optional[str] = "rand-m9-mstd0.5-inc1"
    color_jitter: float = 0.4
    reprob: float = 0.25
    remode: str = "pixel"
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_switch_prob: float = 0.5
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    # runtime
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda
    amp: str = "none"  # none, bf16, fp16
    channels_last: bool = True  # NHWC memory: much faster depthwise-conv backward on CPUs
    compile: bool = False
    grad_checkpointing: bool = False
    ema: bool = False
    ema_decay: float = 0.9998
    deterministic: bool = False
    # output
    output: Optional[str] = None  # default: runs/<model>-<time>
    checkpoint_every: int = 0  # also write `last` every N optimizer steps (0: at epoch ends only)
    log_every: int = 50

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _field_names() -> List[str]:
    return [f.name for f in fields(TrainConfig)]


def _set(values: Dict[str, Any], key: str, value: Any) -> None:
    top, _, rest = key.partition(".")
    if top not in _field_names():
        raise unknown_choice("config key", top, _field_names())
    if rest:
        if top != "model_kwargs":
            raise FatvitError(f"config key {top!r} has no sub-keys (only model_kwargs.NAME does)")
        values.setdefault(top, {})
        values[top] = {**values[top], rest: value}
    else:
        values[top] = value


def apply_overrides(values: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply ``key=value`` strings (values parsed as YAML) to a dict of config values."""
    values = dict(values)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise FatvitError(f"override {item!r} is not of the form key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise FatvitError(f"cannot parse the value of {key!r}: {err}") from None
        _set(values, key.strip(), value)
    return values


def load_config(path: Optional[str | Path] = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """The paper's recipe, then the YAML file at ``path`` (if any), then ``overrides``."""
    values: Dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FatvitError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise FatvitError(f"cannot parse config {path}: {err}") from None
        if not isinstance(loaded, dict):
            raise FatvitError(f"config {path} must be a mapping of keys to values")
        for key, value in loaded.items():
            _set(values, str(key), value)
    values = apply_overrides(values, overrides)
    return make_config(values)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a field's type; numbers written as strings (YAML reads ``5e-4`` so) are parsed."""
    optional = type(None) in typing.get_args(hint)
    if value is None:
        if optional:
            return None
        raise FatvitError(f"config key {key!r} cannot be null")
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
    origin = typing.get_origin(base) or base
    try:
        if origin is bool:
            if isinstance(value, bool):
                return value
            raise ValueError
        if origin is float:
            return float(value)
        if origin is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if origin is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if origin in (list, dict) and not isinstance(value, origin):
            raise ValueError
    except (TypeError, ValueError):
        kind = getattr(origin, "__name__", str(origin))
        raise FatvitError(f"config key {key!r} expects {kind}, got {value!r}") from None
    return value


def make_config(values: Dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a dict, every value checked against its field's type."""
    hints = typing.get_type_hints(TrainConfig)
    checked = {}
    for key, value in values.items():
        if key not in hints:
            raise unknown_choice("config key", key, _field_names())
        checked[key] = _coerce(key, value, hints[key])
    return TrainConfig(**checked)
