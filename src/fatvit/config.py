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
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence

import yaml

from .errors import FatvitError, unknown_choice

__all__ = [
    "RunConfig",
    "TrainConfig",
    "DetectConfig",
    "SegmentConfig",
    "CONFIGS",
    "load_config",
    "make_config",
    "apply_overrides",
    "read_recipe",
    "recipe_files",
    "recipe_names",
    "recipe_values",
    "AMP_MODES",
    "INTERPOLATIONS",
]

AMP_MODES = ("auto", "none", "bf16", "fp16")
#: Mask R-CNN's box regression losses (``box_loss``).
BOX_LOSSES = ("l1", "smooth_l1")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "random")
ERASE_MODES = ("pixel", "rand", "const")


#: Config keys that apply to inference (flags and --set KEY=VALUE); a file's own record fills them first.
INFERENCE_KEYS = ("model", "model_kwargs", "img_size", "crop_pct", "interpolation", "batch_size", "workers", "device",
                  "channels_last", "data")  # fmt: skip
#: What a file's record may say about the model and its preprocessing.
RECORD_KEYS = ("model", "model_kwargs", "img_size", "crop_pct", "interpolation")

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

    def __post_init__(self) -> None:
        if not self.task:
            self.task = self.TASK
        _check(self)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainConfig(RunConfig):
    """Classification: the paper's ImageNet recipe by default (ARCHITECTURE.md)."""

    TASK: ClassVar[str] = "classify"
    img_size: int = 224
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


@dataclass
class DetectConfig(RunConfig):
    """COCO detection: the 1x recipe (12 epochs, steps at 8 and 11) by default; ``model`` names a detector."""

    TASK: ClassVar[str] = "detect"
    model: str = "retinanet_fat_b0"
    backbone_weights: Optional[str] = None  # a classification checkpoint of the backbone (fatvit's or the authors')
    epochs: Optional[int] = 12
    batch_size: int = 2
    lr: float = 1e-4
    lr_base_batch: int = 16
    weight_decay: float = 1e-4
    no_decay_1d: bool = False  # decay every parameter, as the mmdet/mmseg configs of FAT and PVT
    sched: str = "multistep"
    decay_milestones: List[float] = field(default_factory=lambda: [8.0, 11.0])
    warmup_epochs: float = 0
    warmup_steps: Optional[int] = 500
    warmup_lr: float = 1e-7
    min_lr: float = 0.0
    clip_grad: Optional[float] = None
    min_size: int = 800  # images are resized to this shorter side, the longer one at most max_size
    max_size: int = 1333
    hflip: float = 0.5
    filter_empty_gt: bool = True  # leave images without annotations out of training (mmdet's filter_cfg)
    min_image_side: int = 32  # with filter_empty_gt, also images whose shorter side is smaller (mmdet's min_size)
    group_by_aspect_ratio: bool = True  # each batch of landscape or of portrait images (mmdet, torchvision)
    box_loss: str = "l1"  # Mask R-CNN's RPN and box head: l1 (mmdet's) or smooth_l1 (torchvision's, beta 1/9)
    rpn_post_nms_train: int = 1000  # Mask R-CNN: proposals kept after NMS in training (mmdet's; torchvision 2000)
    aligned_roi: bool = True  # Mask R-CNN's RoIAlign: aligned, adaptive samples (mmcv's); false: torchvision's
    p7_relu: bool = False  # RetinaNet: a ReLU between P6 and P7 (torchvision's); false: mmdet's on_input
    detections_per_img: int = 100
    score_thresh: float = 0.05  # detections scoring less are dropped before NMS (mmdet's and torchvision's 0.05)


@dataclass
class SegmentConfig(RunConfig):
    """ADE20K semantic segmentation: the paper's Semantic FPN recipe (80k iterations, poly) by default."""

    TASK: ClassVar[str] = "segment"
    model: str = "semantic_fpn_fat_b0"
    backbone_weights: Optional[str] = None  # a classification checkpoint of the backbone (fatvit's or the authors')
    num_classes: Optional[int] = None  # None: the data set's classes.txt, or 150 (ADE20K)
    reduce_zero_label: bool = True  # label 0 is "other" (ignored), classes are 1..N
    epochs: Optional[int] = None
    iterations: Optional[int] = 80000
    batch_size: int = 2
    lr: float = 1e-4
    lr_base_batch: int = 16
    weight_decay: float = 1e-4
    no_decay_1d: bool = False  # decay every parameter, as the mmdet/mmseg configs of FAT and PVT
    sched: str = "poly"
    warmup_epochs: float = 0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-6
    clip_grad: Optional[float] = None
    scale: List[int] = field(default_factory=lambda: [2048, 512])  # (long, short) of the keep-ratio resize
    ratio_range: List[float] = field(default_factory=lambda: [0.5, 2.0])
    crop_size: int = 512
    cat_max_ratio: float = 0.75
    hflip: float = 0.5
    photometric: bool = True
    avg_non_ignore: bool = False  # cross-entropy over every pixel (mmseg's default); true: over the labelled ones
    test_mode: str = "whole"  # whole or slide
    test_stride: int = 341  # slide: window stride (the window is crop_size)


#: The configuration of each task.
CONFIGS: Dict[str, type] = {"classify": TrainConfig, "detect": DetectConfig, "segment": SegmentConfig}

#: What runs saved before a key existed did, by task: a resumed run continues as it started.
BEFORE_KEYS: Dict[str, Dict[str, Any]] = {
    "classify": dict(no_decay_1d=True),
    "detect": dict(
        no_decay_1d=True,
        filter_empty_gt=False,
        min_image_side=0,
        group_by_aspect_ratio=False,
        box_loss="smooth_l1",
        rpn_post_nms_train=2000,
        aligned_roi=False,
        p7_relu=True,
    ),  # fmt: skip
    "segment": dict(no_decay_1d=True, avg_non_ignore=True),
}


def _check(cfg: RunConfig) -> None:
    """Raise a :class:`FatvitError` naming the first value out of its range."""

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise FatvitError(f"config key {key!r} must be {what}, got {getattr(cfg, key)!r}")

    if cfg.task != cfg.TASK:
        verbs = {"classify": "fatvit train", "detect": "fatvit detect train", "segment": "fatvit segment train"}
        raise FatvitError(
            f"this recipe is for task {cfg.task!r}"
            + (f" (use {verbs[cfg.task]})" if cfg.task in verbs else f" (tasks: {', '.join(verbs)})")
            + f", not {cfg.TASK!r}"
        )
    if (cfg.epochs is None) == (cfg.iterations is None):
        raise FatvitError(
            f"set one of epochs and iterations, the other null (got epochs={cfg.epochs}, iterations={cfg.iterations})"
        )
    for key in ("epochs", "iterations", "warmup_steps"):
        need(getattr(cfg, key) is None or getattr(cfg, key) >= (0 if key == "warmup_steps" else 1), key,
             "at least 1, or null" if key != "warmup_steps" else "0 or more, or null")  # fmt: skip
    for key in ("batch_size", "accum_steps", "lr_base_batch", "log_every"):
        need(getattr(cfg, key) >= 1, key, "at least 1")
    for key in ("workers", "checkpoint_every", "seed"):
        need(getattr(cfg, key) >= 0, key, "0 or more")
    need(cfg.lr > 0, "lr", "positive")
    for key in ("weight_decay", "warmup_epochs", "warmup_lr", "min_lr"):
        need(getattr(cfg, key) >= 0, key, "0 or more")
    need(cfg.sched in SCHEDULES, "sched", f"one of {', '.join(SCHEDULES)}")
    need(
        all(isinstance(m, (int, float)) and m > 0 for m in cfg.decay_milestones)
        and list(cfg.decay_milestones) == sorted(cfg.decay_milestones),
        "decay_milestones",
        "increasing positive epochs",
    )
    need(cfg.sched != "multistep" or bool(cfg.decay_milestones), "decay_milestones", "set for sched multistep")
    need(0 < cfg.decay_rate <= 1, "decay_rate", "in (0, 1]")
    need(cfg.poly_power > 0, "poly_power", "positive")
    need(0 < cfg.ema_decay < 1, "ema_decay", "in (0, 1)")
    need(cfg.clip_grad is None or cfg.clip_grad > 0, "clip_grad", "positive or null")
    need(cfg.drop_path_rate is None or 0 <= cfg.drop_path_rate < 1, "drop_path_rate", "in [0, 1) or null")
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
                    else "weights come from local files (finetune, backbone_weights or --checkpoint)"
                )
            )
    need(cfg.seed < 2**32, "seed", "below 2**32")
    if isinstance(cfg, TrainConfig):
        _check_classification(cfg, need)
    elif isinstance(cfg, DetectConfig):
        need(cfg.min_size >= 32, "min_size", "at least 32")
        need(cfg.max_size >= cfg.min_size, "max_size", f"at least min_size ({cfg.min_size})")
        need(0 <= cfg.hflip <= 1, "hflip", "between 0 and 1")
        need(cfg.detections_per_img >= 1, "detections_per_img", "at least 1")
        need(cfg.min_image_side >= 0, "min_image_side", "0 or more")
        need(cfg.box_loss in BOX_LOSSES, "box_loss", f"one of {', '.join(BOX_LOSSES)}")
        need(cfg.rpn_post_nms_train >= 1, "rpn_post_nms_train", "at least 1")
        need(0 <= cfg.score_thresh < 1, "score_thresh", "in [0, 1)")
    elif isinstance(cfg, SegmentConfig):
        need(cfg.num_classes is None or 2 <= cfg.num_classes <= 254, "num_classes", "2..254 or null")
        need(len(cfg.scale) == 2 and all(isinstance(s, int) and s >= 16 for s in cfg.scale), "scale",
             "[long, short] in pixels (integers of at least 16)")  # fmt: skip
        need(
            len(cfg.ratio_range) == 2
            and all(isinstance(r, (int, float)) for r in cfg.ratio_range)
            and 0 < cfg.ratio_range[0] <= cfg.ratio_range[1],
            "ratio_range",
            "[min, max] with 0 < min <= max",
        )
        need(cfg.crop_size >= 32, "crop_size", "at least 32")
        need(0 < cfg.cat_max_ratio <= 1, "cat_max_ratio", "in (0, 1]")
        need(0 <= cfg.hflip <= 1, "hflip", "between 0 and 1")
        need(cfg.test_mode in ("whole", "slide"), "test_mode", "whole or slide")
        need(1 <= cfg.test_stride <= cfg.crop_size, "test_stride", f"in 1..crop_size ({cfg.crop_size})")


def _check_classification(cfg: TrainConfig, need: Any) -> None:
    need(cfg.img_size >= 1, "img_size", "at least 1")
    for key in ("color_jitter", "mixup", "cutmix"):
        need(getattr(cfg, key) >= 0, key, "0 or more")
    for key in ("hflip", "reprob", "mixup_switch_prob"):
        need(0 <= getattr(cfg, key) <= 1, key, "between 0 and 1")
    need(0 <= cfg.smoothing < 1, "smoothing", "in [0, 1)")
    need(0 < cfg.crop_pct <= 1, "crop_pct", "in (0, 1]")
    need(
        len(cfg.scale) == 2
        and all(isinstance(s, (int, float)) for s in cfg.scale)
        and 0 < cfg.scale[0] <= cfg.scale[1] <= 1,
        "scale",
        "[min, max] with 0 < min <= max <= 1",
    )
    need(cfg.remode in ERASE_MODES, "remode", f"one of {', '.join(ERASE_MODES)}")
    need(cfg.interpolation in INTERPOLATIONS, "interpolation", f"one of {', '.join(INTERPOLATIONS)}")


def _fat_arguments() -> List[str]:
    import inspect

    from .models.fat import FAT

    return list(inspect.signature(FAT).parameters)


def _field_names(cls: type = None) -> List[str]:
    return [f.name for f in fields(cls or TrainConfig)]


def _set(values: Dict[str, Any], key: str, value: Any, cls: type = None) -> None:
    top, _, rest = key.partition(".")
    names = _field_names(cls)
    if top not in names:
        if top in _fat_arguments():
            raise FatvitError(f"unknown config key {top!r}: a model argument is set as 'model_kwargs.{top}'")
        other = [task for task, c in CONFIGS.items() if c is not (cls or TrainConfig) and top in _field_names(c)]
        if other:
            raise FatvitError(f"config key {top!r} is one of task {other[0]!r}, not of {(cls or TrainConfig).TASK!r}")
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

    Keys are fields of ``cls`` (default :class:`TrainConfig`), or ``model_kwargs.NAME`` for a model argument.
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
    return str(loaded.get("task", "classify")) if isinstance(loaded, dict) else ""


def recipe_files(task: str = "classify") -> List[str]:
    """The recipes of ``task`` shipped as files in ``fatvit/recipes``, by name."""
    return sorted(name for name, path in _recipe_files().items() if _recipe_task(path.read_text()) == task)


def recipe_names(task: str = "classify") -> List[str]:
    """Every named recipe of ``task``: the files in ``fatvit/recipes`` and, for classification, per FAT size
    ``fat_bN`` and ``fat_bN_released``."""
    if task != "classify":
        return recipe_files(task)
    from .models.fat import MODEL_CONFIGS

    return recipe_files(task) + [name for size in MODEL_CONFIGS for name in (size, f"{size}_released")]


def recipe_values(name: str, cls: type = None) -> Dict[str, Any]:
    """Every key of a run started with the recipe file ``name``: ``cls``'s defaults, then what the recipe sets
    (values as written, before checks)."""
    cls = cls or TrainConfig
    defaults = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
                for f in fields(cls)}  # fmt: skip
    return {**defaults, **_parse_recipe(_recipe_files()[name].read_text(), name, cls)}


def _parse_recipe(text: str, where: str, cls: type = None) -> Dict[str, Any]:
    cls = cls or TrainConfig
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise FatvitError(f"cannot parse recipe {where}: {err}") from None
    if not isinstance(loaded, dict):
        raise FatvitError(f"recipe {where} must be a mapping of keys to values")
    task = loaded.get("task", "classify")
    if task != cls.TASK:
        verbs = {"classify": "fatvit train", "detect": "fatvit detect train", "segment": "fatvit segment train"}
        hint = f": use {verbs[task]}" if task in verbs else f" (tasks: {', '.join(verbs)})"
        raise FatvitError(f"recipe {where} is for task {task!r}, not {cls.TASK!r}{hint}")
    _one_length({k: loaded.get(k) for k in LENGTH_KEYS}, f"set by recipe {where}")
    values: Dict[str, Any] = {}
    for key, value in loaded.items():
        _set(values, str(key), value, cls)
    return values


def read_recipe(name_or_path: str | Path, cls: type = None) -> Dict[str, Any]:
    """The values a recipe sets: a YAML file's path, or a name from :func:`recipe_names` (of ``cls``'s task).

    Raises:
        FatvitError: no such file or recipe (the closest name suggested), a recipe of another task, or the YAML
            is not a mapping of keys.
    """
    cls = cls or TrainConfig
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise FatvitError(f"recipe file not found: {path}")
        return _parse_recipe(path.read_text(), str(path), cls)
    name = str(name_or_path)
    files = _recipe_files()
    if name in files:
        return _parse_recipe(files[name].read_text(), name, cls)
    from .models.fat import MODEL_CONFIGS

    size, released = (name[: -len("_released")], True) if name.endswith("_released") else (name, False)
    if size in MODEL_CONFIGS and cls is TrainConfig:
        base = "released" if released else "imagenet"
        if base not in files:
            raise FatvitError(f"recipe {base!r} is missing from the installed package (fatvit/recipes/{base}.yaml)")
        return {**_parse_recipe(files[base].read_text(), base), "model": size}
    raise unknown_choice("recipe", name, recipe_names(cls.TASK))


def load_config(
    recipe: Optional[str | Path] = None,
    overrides: Sequence[str] = (),
    typed: Optional[Mapping[str, Any]] = None,
    cls: type = None,
) -> RunConfig:
    """The task's default recipe, then ``recipe`` (a name or a YAML path, if any), then ``typed`` values and
    ``overrides``; ``cls`` is the task's config class (default :class:`TrainConfig`).

    A run's length is ``epochs`` or ``iterations``: the recipe may set one and ``typed``/``overrides`` the
    other (they win, and ``notes`` says so), but neither layer may set both.
    """
    values = read_recipe(recipe, cls) if recipe is not None else {}
    cfg = make_config(apply_overrides(values, overrides, typed, cls), cls)
    before, after = _length(values, cls or TrainConfig), _length(cfg.to_dict(), cls or TrainConfig)
    if before is not None and after is not None and before[0] != after[0]:
        cfg.notes = (f"{after[0]}={after[1]} given: the recipe's {before[0]}={before[1]} is not used",)
    return cfg


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
    """A config of class ``cls`` (default :class:`TrainConfig`, or the one the values' ``task`` names) from a
    dict, every value checked against its field's type and range."""
    if cls is None:
        task = values.get("task") or "classify"
        if task not in CONFIGS:
            raise unknown_choice("task", str(task), CONFIGS)
        cls = CONFIGS[task]
    hints = typing.get_type_hints(cls)
    checked = {}
    for key, value in values.items():
        if key not in hints or key == "TASK":
            raise unknown_choice("config key", key, _field_names(cls))
        checked[key] = _coerce(key, value, hints[key])
    return cls(**checked)
