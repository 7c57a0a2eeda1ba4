"""Training recipes as data: one dataclass, YAML recipes shipped inside the package, overrides.

Defaults are the paper's ImageNet recipe (ARCHITECTURE.md). A recipe file
sets any subset of the fields; ``key=value`` overrides (values parsed as YAML,
nested keys with dots: ``model_kwargs.interaction=reference``) come last.
Every value is checked where it is defined: :meth:`RunConfig.check` and the
``check`` of each task's config class (``fatvit.tasks.<task>.config``).

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
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence

import yaml

from .catalog import FPN_INITS
from .errors import FatvitError, unknown_choice
from .tasks import DEFAULT_TASK, TASKS, config_class

__all__ = [
    "RunConfig",
    "DenseConfig",
    "load_config",
    "make_config",
    "apply_overrides",
    "read_recipe",
    "recipe_files",
    "recipe_names",
    "recipe_values",
    "parse_settings",
    "apply_settings",
    "AMP_MODES",
]

AMP_MODES = ("auto", "none", "bf16", "fp16")

#: What a device setting may be (config key ``device``, every ``--device``); auto: the first CUDA device if any,
#: else the CPU.
DEVICE_NAMES = "auto, cpu, cuda or cuda:N"


def is_device_name(name: str) -> bool:
    """Whether ``name`` is a device setting: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    kind, sep, index = str(name).partition(":")
    return (kind in ("auto", "cpu", "cuda") and not sep) or (kind == "cuda" and index.isdigit())


#: Loader workers unless a recipe or a flag says otherwise (the loader uses at most the cores available).
DEFAULT_WORKERS = 4

#: Learning-rate schedules (timm's): cosine (classification), multistep (detection 1x), poly (segmentation).
SCHEDULES = ("cosine", "multistep", "poly")


@dataclass
class RunConfig:
    """What every training run shares, whatever its task: model, data, optimisation, schedule, runtime, output.

    A run lasts ``epochs`` epochs, or ``iterations`` optimizer steps (setting
    one in a recipe or an override clears the other); the schedule spans it. ``lr``, ``warmup_lr`` and
    ``min_lr`` are per ``lr_base_batch`` images, scaled by the global batch.
    """

    TASK: ClassVar[str] = ""
    #: What the run's start line says about how the config was resolved (e.g. which run length is used).
    notes: ClassVar[tuple] = ()
    task: str = ""  # the task the recipe is for; checked against the command that reads it
    # model
    model: str = "fat_b0"
    model_kwargs: Dict[str, Any] = field(default_factory=dict)  # extra constructor arguments (interaction, ...)
    drop_path_rate: Optional[float] = None  # None: the model's default
    finetune: Optional[str] = None  # initial weights of the whole model (layers for other classes are replaced)
    # data
    data: Optional[str] = None  # None: the task's embedded data set
    workers: int = DEFAULT_WORKERS
    # schedule and optimisation
    epochs: Optional[int] = 300
    iterations: Optional[int] = None  # the run's length in optimizer steps, instead of epochs
    batch_size: int = 128  # per process
    accum_steps: int = 1
    opt: str = "adamw"
    lr: float = 5e-4
    lr_base_batch: int = 512
    weight_decay: float = 0.05
    no_decay_1d: bool = True  # no weight decay on biases, norms and other 1-D parameters (timm's groups)
    sched: str = "cosine"
    warmup_epochs: float = 20
    warmup_steps: Optional[int] = None  # warmup length in optimizer steps, instead of warmup_epochs
    warmup_lr: float = 5e-7
    min_lr: float = 5e-6
    decay_milestones: List[float] = field(default_factory=list)  # multistep: epochs at which lr *= decay_rate
    decay_rate: float = 0.1
    poly_power: float = 0.9
    clip_grad: Optional[float] = 5.0
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

    #: What runs saved before a key existed did: a resumed run continues as it started.
    BEFORE_KEYS: ClassVar[Dict[str, Any]] = {}

    def __post_init__(self) -> None:
        if not self.task:
            self.task = self.TASK
        self.check()

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def need(self, ok: bool, key: str, what: str) -> None:
        """Raise a :class:`FatvitError` saying that config key ``key`` must be ``what``, unless ``ok``."""
        if not ok:
            raise FatvitError(f"config key {key!r} must be {what}, got {getattr(self, key)!r}")

    def check(self) -> None:
        """Raise a :class:`FatvitError` naming the first value out of its range (a task's class adds its keys)."""
        need = self.need
        if self.task != self.TASK:
            raise FatvitError(f"this recipe is for task {self.task!r}{_use_instead(self.task)}, not {self.TASK!r}")
        if (self.epochs is None) == (self.iterations is None):
            raise FatvitError(
                f"set one of epochs and iterations, the other null (got epochs={self.epochs}, "
                f"iterations={self.iterations})"
            )
        for key in ("epochs", "iterations", "warmup_steps"):
            need(getattr(self, key) is None or getattr(self, key) >= (0 if key == "warmup_steps" else 1), key,
                 "at least 1, or null" if key != "warmup_steps" else "0 or more, or null")  # fmt: skip
        for key in ("batch_size", "accum_steps", "lr_base_batch", "log_every"):
            need(getattr(self, key) >= 1, key, "at least 1")
        for key in ("workers", "checkpoint_every", "seed"):
            need(getattr(self, key) >= 0, key, "0 or more")
        need(self.lr > 0, "lr", "positive")
        for key in ("weight_decay", "warmup_epochs", "warmup_lr", "min_lr"):
            need(getattr(self, key) >= 0, key, "0 or more")
        need(self.sched in SCHEDULES, "sched", f"one of {', '.join(SCHEDULES)}")
        need(
            all(isinstance(m, (int, float)) and m > 0 for m in self.decay_milestones)
            and list(self.decay_milestones) == sorted(self.decay_milestones),
            "decay_milestones",
            "increasing positive epochs",
        )
        need(self.sched != "multistep" or bool(self.decay_milestones), "decay_milestones", "set for sched multistep")
        need(0 < self.decay_rate <= 1, "decay_rate", "in (0, 1]")
        need(self.poly_power > 0, "poly_power", "positive")
        need(0 < self.ema_decay < 1, "ema_decay", "in (0, 1)")
        need(self.clip_grad is None or self.clip_grad > 0, "clip_grad", "positive or null")
        need(self.drop_path_rate is None or 0 <= self.drop_path_rate < 1, "drop_path_rate", "in [0, 1) or null")
        need(self.amp in AMP_MODES, "amp", f"one of {', '.join(AMP_MODES)}")
        need(is_device_name(self.device), "device", DEVICE_NAMES)
        from timm.optim import list_optimizers

        if self.opt.lower() not in list_optimizers():
            raise unknown_choice("optimizer", self.opt, list_optimizers())
        if not self.model:
            raise FatvitError("config key 'model' must name a model")
        for key in ("num_classes", "pretrained"):
            if key in self.model_kwargs:
                raise FatvitError(
                    f"model_kwargs.{key} cannot be set: "
                    + (
                        "the classes come from the data (or the checkpoint)"
                        if key == "num_classes"
                        else "weights come from local files (finetune, backbone_weights or the file a verb loads)"
                    )
                )
        need(self.seed < 2**32, "seed", "below 2**32")

    #: What the recipes named after models are, for ``--help`` (none by default).
    MODEL_RECIPES: ClassVar[str] = ""

    @classmethod
    def model_recipe_names(cls) -> List[str]:
        """Recipes named after a model, besides the recipe files (none by default)."""
        return []

    @classmethod
    def model_recipe(cls, name: str) -> Optional[Dict[str, Any]]:
        """The values of the recipe ``name`` if it is one of :meth:`model_recipe_names`, else None."""
        return None


@dataclass
class DenseConfig(RunConfig):
    """What the dense tasks (detection, segmentation) share: the mmdet/mmseg optimisation of FAT's configs
    (AdamW 1e-4 per 16 images, decay on every parameter, no clipping), backbone weights, flips."""

    # a classification checkpoint of the backbone (fatvit's or the authors'); "none": random weights, on purpose
    # (a run on data of your own must say one or the other, unless finetune gives the whole model)
    backbone_weights: Optional[str] = None
    batch_size: int = 2
    lr: float = 1e-4
    lr_base_batch: int = 16
    weight_decay: float = 1e-4
    no_decay_1d: bool = False  # decay every parameter, as the mmdet/mmseg configs of FAT and PVT
    warmup_epochs: float = 0
    clip_grad: Optional[float] = None
    hflip: float = 0.5
    # how the FPN's convs start: xavier (mmdet's and mmseg's FPN) or kaiming (torchvision's, uniform with a=1)
    fpn_init: str = "xavier"

    def check(self) -> None:
        super().check()
        self.need(0 <= self.hflip <= 1, "hflip", "between 0 and 1")
        self.need(self.fpn_init in FPN_INITS, "fpn_init", f"one of {', '.join(FPN_INITS)}")

    @property
    def backbone_file(self) -> Optional[str]:
        """The backbone checkpoint to load: ``backbone_weights``, None for ``none`` (or unset)."""
        return None if self.backbone_weights in (None, "none") else self.backbone_weights

    def weights_origin(self, starting: bool = True) -> str:
        """Where the run's weights come from, for its start line. The paper always starts the backbone from
        ImageNet weights: ``starting`` a run on data of one's own with neither ``backbone_weights`` nor
        ``finetune`` is refused (``backbone_weights: none`` trains from random weights on purpose).

        Raises:
            FatvitError: a run starting on given data from random weights without saying so.
        """
        if self.finetune:
            return f"whole model from {self.finetune}"
        if self.backbone_file:
            return f"backbone from {self.backbone_file}"
        if self.data is None:
            return "backbone from random weights, as the embedded scenes' recipe trains"
        if self.backbone_weights is None and starting:
            raise FatvitError(
                "backbone_weights is not set: on data of your own the paper starts the backbone from ImageNet "
                "weights; set it to a classification checkpoint of the backbone, or to none to train the backbone "
                "from random weights on purpose"
            )
        return "backbone from random weights (backbone_weights: none)"


def _use_instead(task: str, form: str = " (use {})") -> str:
    """A hint naming the command that trains ``task`` (in ``form``), or the known tasks."""
    if task in TASKS:
        return form.format(TASKS[task].train_command)
    return f" (tasks: {', '.join(TASKS)})"


def _or_default(cls: Optional[type]) -> type:
    """``cls``, or the config class of the default task."""
    return cls if cls is not None else config_class(DEFAULT_TASK)


def _fat_arguments() -> List[str]:
    import inspect

    from .models.fat import FAT

    return list(inspect.signature(FAT).parameters)


def _field_names(cls: type = None) -> List[str]:
    return [f.name for f in fields(_or_default(cls))]


def _set(values: Dict[str, Any], key: str, value: Any, cls: type = None) -> None:
    top, _, rest = key.partition(".")
    names = _field_names(cls)
    if top not in names:
        if top in _fat_arguments():
            raise FatvitError(f"unknown config key {top!r}: a model argument is set as 'model_kwargs.{top}'")
        cls = _or_default(cls)
        other = [task for task in TASKS if config_class(task) is not cls and top in _field_names(config_class(task))]
        if other:
            raise FatvitError(f"config key {top!r} is one of task {other[0]!r}, not of {cls.TASK!r}")
        raise unknown_choice("config key", top, names)
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
        if top in ("epochs", "iterations") and value is not None:  # two ways to give the run's length: one wins
            values["iterations" if top == "epochs" else "epochs"] = None


def apply_overrides(
    values: Mapping[str, Any],
    overrides: Sequence[str] = (),
    typed: Optional[Mapping[str, Any]] = None,
    cls: type = None,
) -> Dict[str, Any]:
    """Apply ``typed`` values (from command-line flags, already parsed), then ``key=value`` strings (YAML values).

    Keys are fields of ``cls`` (default: the classification config), or ``model_kwargs.NAME`` for a model argument.
    """
    values = dict(values)
    given: Dict[str, Any] = dict(typed or {})  # the keys given here: one of epochs and iterations, not both
    for key, value in (typed or {}).items():
        _set(values, key, value, cls)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise FatvitError(f"override {item!r} is not of the form key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise FatvitError(f"cannot parse the value of {key!r}: {err}") from None
        _set(values, key.strip(), value, cls)
        given[key.strip()] = value
    _one_length(given, "given")
    return values


#: The two ways to give a run's length.
LENGTH_KEYS = ("epochs", "iterations")


def _one_length(values: Mapping[str, Any], where: str) -> None:
    """An error if ``values`` set both epochs and iterations (not null): a run lasts one or the other."""
    if all(values.get(k) is not None for k in LENGTH_KEYS):
        raise FatvitError(
            f"epochs={values['epochs']} and iterations={values['iterations']} are both {where}: a run lasts a number "
            "of epochs or of iterations; give one"
        )


def _length(values: Mapping[str, Any], cls: type) -> Optional[tuple]:
    """(key, value) of the run length ``values`` set, else of ``cls``'s defaults."""
    for source in (values, {f.name: f.default for f in fields(cls)}):
        for key in LENGTH_KEYS:
            if source.get(key) is not None:
                return key, source[key]
    return None


def _recipe_files() -> Dict[str, Any]:
    folder = importlib.resources.files("fatvit") / "recipes"
    return {p.name[: -len(".yaml")]: p for p in folder.iterdir() if p.name.endswith(".yaml")}


def _recipe_task(text: str) -> str:
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return ""
    return str(loaded.get("task", DEFAULT_TASK)) if isinstance(loaded, dict) else ""


def recipe_files(task: str = DEFAULT_TASK) -> List[str]:
    """The recipes of ``task`` shipped as files in ``fatvit/recipes``, by name."""
    return sorted(name for name, path in _recipe_files().items() if _recipe_task(path.read_text()) == task)


def recipe_names(task: str = DEFAULT_TASK) -> List[str]:
    """Every named recipe of ``task``: the files in ``fatvit/recipes`` and those its config class names after
    models (classification: per FAT size ``fat_bN`` and ``fat_bN_released``)."""
    return recipe_files(task) + config_class(task).model_recipe_names()


def recipe_values(name: str, cls: type = None) -> Dict[str, Any]:
    """Every key of a run started with the recipe file ``name``: ``cls``'s defaults, then what the recipe sets
    (values as written, before checks)."""
    cls = _or_default(cls)
    defaults = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
                for f in fields(cls)}  # fmt: skip
    return {**defaults, **_parse_recipe(_recipe_files()[name].read_text(), name, cls)}


def _parse_recipe(text: str, where: str, cls: type = None) -> Dict[str, Any]:
    cls = _or_default(cls)
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise FatvitError(f"cannot parse recipe {where}: {err}") from None
    if not isinstance(loaded, dict):
        raise FatvitError(f"recipe {where} must be a mapping of keys to values")
    task = loaded.get("task", DEFAULT_TASK)
    if task != cls.TASK:
        raise FatvitError(f"recipe {where} is for task {task!r}, not {cls.TASK!r}{_use_instead(task, ': use {}')}")
    _one_length({k: loaded.get(k) for k in LENGTH_KEYS}, f"set by recipe {where}")
    values: Dict[str, Any] = {}
    for key, value in loaded.items():
        _set(values, str(key), value, cls)
    return values


def parse_recipe_file(name: str, cls: type) -> Optional[Dict[str, Any]]:
    """The values the recipe file ``name`` of ``fatvit/recipes`` sets, for ``cls``; None if there is no such file."""
    files = _recipe_files()
    return _parse_recipe(files[name].read_text(), name, cls) if name in files else None


def read_recipe(name_or_path: str | Path, cls: type = None) -> Dict[str, Any]:
    """The values a recipe sets: a YAML file's path, or a name from :func:`recipe_names` (of ``cls``'s task).

    Raises:
        FatvitError: no such file or recipe (the closest name suggested), a recipe of another task, or the YAML
            is not a mapping of keys.
    """
    cls = _or_default(cls)
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise FatvitError(f"recipe file not found: {path}")
        return _parse_recipe(path.read_text(), str(path), cls)
    name = str(name_or_path)
    files = _recipe_files()
    if name in files:
        return _parse_recipe(files[name].read_text(), name, cls)
    values = cls.model_recipe(name)
    if values is not None:
        return values
    raise unknown_choice("recipe", name, recipe_names(cls.TASK))


def load_config(
    recipe: Optional[str | Path] = None,
    overrides: Sequence[str] = (),
    typed: Optional[Mapping[str, Any]] = None,
    cls: type = None,
) -> RunConfig:
    """The task's default recipe, then ``recipe`` (a name or a YAML path, if any), then ``typed`` values and
    ``overrides``; ``cls`` is the task's config class (default: the classification config).

    A run's length is ``epochs`` or ``iterations``: the recipe may set one and ``typed``/``overrides`` the
    other (they win, and ``notes`` says so), but neither layer may set both.
    """
    values = read_recipe(recipe, cls) if recipe is not None else {}
    cfg = make_config(apply_overrides(values, overrides, typed, cls), cls)
    before, after = _length(values, _or_default(cls)), _length(cfg.to_dict(), _or_default(cls))
    if before is not None and after is not None and before[0] != after[0]:
        cfg.notes = (f"{after[0]}={after[1]} given: the recipe's {before[0]}={before[1]} is not used",)
    return cfg


def parse_settings(overrides: Sequence[str], keys: Sequence[str], cls: type, verb: str) -> Dict[str, Any]:
    """The ``key=value`` overrides (``--set``) of a verb that runs a trained model, for the config keys ``keys``
    of ``cls`` (YAML values, checked once the file's record is read: :func:`apply_settings`).

    Raises:
        FatvitError: a key that is not one of ``keys`` (an unknown one with the closest name suggested).
    """
    given = apply_overrides({}, overrides, cls=cls)
    for key in given:
        if key not in keys:
            raise FatvitError(f"config key {key!r} does not apply to {verb} (it takes {', '.join(keys)})")
    return given


def apply_settings(record: Mapping[str, Any], settings: Mapping[str, Any], cls: type,
                   keys: Sequence[str]) -> Dict[str, Any]:  # fmt: skip
    """A file's ``record`` with ``settings`` (of :func:`parse_settings`) over it, typed and checked as ``cls``
    checks a config, with the record's other ``keys`` (a crop size checked against a stride, say)."""
    if not settings:
        return dict(record)
    cfg = make_config({**{k: record[k] for k in keys if k in record}, **settings}, cls)
    return {**record, **{k: getattr(cfg, k) for k in settings}}


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


def make_config(values: Mapping[str, Any], cls: type = None) -> RunConfig:
    """A config of class ``cls`` (default: the one the values' ``task`` names, classification's if none) from a
    dict, every value checked against its field's type and range."""
    if cls is None:
        task = values.get("task") or DEFAULT_TASK
        if task not in TASKS:
            raise unknown_choice("task", str(task), TASKS)
        cls = config_class(task)
    hints = typing.get_type_hints(cls)
    checked = {}
    for key, value in values.items():
        if key not in hints or key == "TASK":
            raise unknown_choice("config key", key, _field_names(cls))
        checked[key] = _coerce(key, value, hints[key])
    return cls(**checked)
