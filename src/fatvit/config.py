"""Training recipes as data: one dataclass, YAML recipes shipped inside the package, overrides.

Defaults are the paper's ImageNet recipe (ARCHITECTURE.md). A recipe file
sets any subset of the fields; ``key=value`` overrides (values parsed as YAML,
nested keys with dots: ``model_kwargs.interaction=reference``) come last.
Every value is checked where it is defined, in :class:`TrainConfig`.

Named recipes (:func:`recipe_names`) live in ``fatvit/recipes/`` and are read
with :mod:`importlib.resources`, so they work from a wheel as from a checkout:
``digits``, ``imagenet``, ``released``, and for every FAT size ``fat_bN``
(``imagenet`` with that model) and ``fat_bN_released`` (``released`` with it).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

from .errors import FatvitError, unknown_choice

__all__ = [
    "TrainConfig",
    "load_config",
    "make_config",
    "apply_overrides",
    "read_recipe",
    "recipe_names",
    "AMP_MODES",
    "INTERPOLATIONS",
]

AMP_MODES = ("auto", "none", "bf16", "fp16")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "random")
ERASE_MODES = ("pixel", "rand", "const")


@dataclass
class TrainConfig:
    # model
    model: str = "fat_b0"  # a FAT name, or any timm model
    model_kwargs: Dict[str, Any] = field(default_factory=dict)  # extra constructor arguments (interaction, ...)
    drop_path_rate: Optional[float] = None  # None: the model's default (a FAT size's own rate)
    finetune: Optional[str] = None  # initial weights; a classifier of another size is replaced
    # data
    data: Optional[str] = None  # ImageNet-style folder with train/ and val/; None: embedded digits
    img_size: int = 224
    workers: int = 4
    # schedule and optimisation (lr, warmup_lr and min_lr are per lr_base_batch images, scaled by the global batch)
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
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    amp: str = "auto"  # auto (CUDA: bf16 if supported, else fp16; CPU: none), none, bf16, fp16
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

    def __post_init__(self) -> None:
        _check(self)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _check(cfg: TrainConfig) -> None:
    """Raise a :class:`FatvitError` naming the first value out of its range."""

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise FatvitError(f"config key {key!r} must be {what}, got {getattr(cfg, key)!r}")

    for key in ("img_size", "epochs", "batch_size", "accum_steps", "lr_base_batch", "log_every"):
        need(getattr(cfg, key) >= 1, key, "at least 1")
    for key in ("workers", "checkpoint_every", "seed"):
        need(getattr(cfg, key) >= 0, key, "0 or more")
    need(cfg.lr > 0, "lr", "positive")
    for key in ("weight_decay", "warmup_epochs", "warmup_lr", "min_lr", "color_jitter", "mixup", "cutmix"):
        need(getattr(cfg, key) >= 0, key, "0 or more")
    for key in ("hflip", "reprob", "mixup_switch_prob"):
        need(0 <= getattr(cfg, key) <= 1, key, "between 0 and 1")
    need(0 <= cfg.smoothing < 1, "smoothing", "in [0, 1)")
    need(0 < cfg.crop_pct <= 1, "crop_pct", "in (0, 1]")
    need(0 < cfg.ema_decay < 1, "ema_decay", "in (0, 1)")
    need(cfg.clip_grad is None or cfg.clip_grad > 0, "clip_grad", "positive or null")
    need(cfg.drop_path_rate is None or 0 <= cfg.drop_path_rate < 1, "drop_path_rate", "in [0, 1) or null")
    need(
        len(cfg.scale) == 2
        and all(isinstance(s, (int, float)) for s in cfg.scale)
        and 0 < cfg.scale[0] <= cfg.scale[1] <= 1,
        "scale",
        "[min, max] with 0 < min <= max <= 1",
    )
    need(cfg.remode in ERASE_MODES, "remode", f"one of {', '.join(ERASE_MODES)}")
    need(cfg.interpolation in INTERPOLATIONS, "interpolation", f"one of {', '.join(INTERPOLATIONS)}")
    need(cfg.amp in AMP_MODES, "amp", f"one of {', '.join(AMP_MODES)}")
    device = cfg.device.split(":")
    need(
        device[0] in ("auto", "cpu", "cuda") and (len(device) == 1 or (device[0] == "cuda" and device[1].isdigit())),
        "device",
        "auto, cpu, cuda or cuda:N",
    )
    from timm.optim import list_optimizers

    if cfg.opt.lower() not in list_optimizers():
        raise unknown_choice("optimizer", cfg.opt, list_optimizers())
    if not cfg.model:
        raise FatvitError("config key 'model' must name a model")
    for key in ("num_classes", "pretrained"):
        if key in cfg.model_kwargs:
            raise FatvitError(
                f"model_kwargs.{key} cannot be set: "
                + (
                    "the classes come from the data (or the checkpoint)"
                    if key == "num_classes"
                    else "weights come from local files (finetune, or --checkpoint)"
                )
            )
    need(cfg.seed < 2**32, "seed", "below 2**32")


def _fat_arguments() -> List[str]:
    import inspect

    from .models.fat import FAT

    return list(inspect.signature(FAT).parameters)


def _field_names() -> List[str]:
    return [f.name for f in fields(TrainConfig)]


def _set(values: Dict[str, Any], key: str, value: Any) -> None:
    top, _, rest = key.partition(".")
    if top not in _field_names():
        if top in _fat_arguments():
            raise FatvitError(f"unknown config key {top!r}: a model argument is set as 'model_kwargs.{top}'")
        raise unknown_choice("config key", top, _field_names())
    if rest:
        if top != "model_kwargs":
            raise FatvitError(f"config key {top!r} has no sub-keys (only model_kwargs.NAME does)")
        values[top] = {**values.get(top, {}), rest: value}
    elif top == "model_kwargs":
        if not isinstance(value, Mapping):
            raise FatvitError(f"config key 'model_kwargs' expects a mapping, got {value!r}")
        values[top] = {**values.get(top, {}), **value}
    else:
        values[top] = value


def apply_overrides(
    values: Mapping[str, Any], overrides: Sequence[str] = (), typed: Optional[Mapping[str, Any]] = None
) -> Dict[str, Any]:
    """Apply ``typed`` values (from command-line flags, already parsed), then ``key=value`` strings (YAML values).

    Keys are config fields, or ``model_kwargs.NAME`` for a model argument.
    """
    values = dict(values)
    for key, value in (typed or {}).items():
        _set(values, key, value)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise FatvitError(f"override {item!r} is not of the form key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise FatvitError(f"cannot parse the value of {key!r}: {err}") from None
        _set(values, key.strip(), value)
    return values


def _recipe_files() -> Dict[str, Any]:
    folder = importlib.resources.files("fatvit") / "recipes"
    return {p.name[: -len(".yaml")]: p for p in folder.iterdir() if p.name.endswith(".yaml")}


def recipe_names() -> List[str]:
    """Every named recipe: the files in ``fatvit/recipes`` and, per FAT size, ``fat_bN`` and ``fat_bN_released``."""
    from .models.fat import MODEL_CONFIGS

    sizes = [name for size in MODEL_CONFIGS for name in (size, f"{size}_released")]
    return sorted(_recipe_files()) + sizes


def _parse_recipe(text: str, where: str) -> Dict[str, Any]:
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise FatvitError(f"cannot parse recipe {where}: {err}") from None
    if not isinstance(loaded, dict):
        raise FatvitError(f"recipe {where} must be a mapping of keys to values")
    values: Dict[str, Any] = {}
    for key, value in loaded.items():
        _set(values, str(key), value)
    return values


def read_recipe(name_or_path: str | Path) -> Dict[str, Any]:
    """The values a recipe sets: a YAML file's path, or a name from :func:`recipe_names`.

    Raises:
        FatvitError: no such file or recipe (the closest name suggested), or the YAML is not a mapping of keys.
    """
    from .models.fat import MODEL_CONFIGS

    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise FatvitError(f"recipe file not found: {path}")
        return _parse_recipe(path.read_text(), str(path))
    name = str(name_or_path)
    files = _recipe_files()
    if name in files:
        return _parse_recipe(files[name].read_text(), name)
    size, released = (name[: -len("_released")], True) if name.endswith("_released") else (name, False)
    if size in MODEL_CONFIGS:
        base = "released" if released else "imagenet"
        if base not in files:
            raise FatvitError(f"recipe {base!r} is missing from the installed package (fatvit/recipes/{base}.yaml)")
        return {**_parse_recipe(files[base].read_text(), base), "model": size}
    raise unknown_choice("recipe", name, recipe_names())


def load_config(
    recipe: Optional[str | Path] = None, overrides: Sequence[str] = (), typed: Optional[Mapping[str, Any]] = None
) -> TrainConfig:
    """The paper's recipe, then ``recipe`` (a name or a YAML path, if any), then ``typed`` values and ``overrides``."""
    values = read_recipe(recipe) if recipe is not None else {}
    return make_config(apply_overrides(values, overrides, typed))


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
            if isinstance(value, bool):
                raise ValueError
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
    except (TypeError, ValueError, OverflowError):
        kind = getattr(origin, "__name__", str(origin))
        raise FatvitError(f"config key {key!r} expects {kind}, got {value!r}") from None
    return value


def make_config(values: Mapping[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a dict, every value checked against its field's type and range."""
    hints = typing.get_type_hints(TrainConfig)
    checked = {}
    for key, value in values.items():
        if key not in hints:
            raise unknown_choice("config key", key, _field_names())
        checked[key] = _coerce(key, value, hints[key])
    return TrainConfig(**checked)
