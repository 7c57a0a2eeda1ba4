"""The tasks fatvit trains, and the registry: the one table that names them.

Each task is a package here with the same files, where they apply:

* ``config.py``: its config class (a :class:`fatvit.config.RunConfig`), every value checked by its ``check()``;
* ``task.py``: its :class:`~fatvit.tasks.base.Task`, what it plugs into the training engine (data, model,
  loss, metrics);
* ``data.py``: its data sets, transforms and batching;
* ``models.py``: its model builders (the dense tasks; classification uses :mod:`fatvit.models`);
* ``metrics.py``: its evaluation;
* ``inference.py``: a trained model read back from a file, with its preprocessing and classes;
* ``predict.py``: predictions for image files (and, for the dense tasks, the images drawn with them).

A task package may import the layers below it (:mod:`fatvit.layers`, :mod:`fatvit.models`, the shared
modules such as :mod:`fatvit.data`, :mod:`fatvit.config`, :mod:`fatvit.checkpoint`) and :mod:`fatvit.tasks.base`;
:mod:`fatvit.tasks.scenes` (the embedded digit scenes of the dense tasks) may import classification's digits.
``base`` imports no task. This module imports nothing at load: :data:`TASKS` names each task's classes as
strings, imported on first use, so that the command's help and the config module read it for free.

Adding a task is a package and one row of :data:`TASKS`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict

if TYPE_CHECKING:
    from .base import Task

__all__ = ["TaskSpec", "TASKS", "DEFAULT_TASK", "config_class", "task_class", "get_task"]


@dataclass(frozen=True)
class TaskSpec:
    """One task: its name, its package, its config and Task classes, and its group of CLI verbs."""

    #: the config's ``task``, and the record of every file the task's runs write
    name: str
    #: the package ``fatvit.tasks.<package>``
    package: str
    #: the config class, in the package's ``config`` module
    config: str
    #: the Task class, in the package's ``task`` module
    task: str
    #: the verb whose sub-verbs serve the task (``fatvit detect train``); empty: the top-level verbs
    verb: str = ""
    #: the verb's line in ``fatvit --help``
    help: str = ""

    @property
    def train_command(self) -> str:
        """The command that trains the task."""
        return f"fatvit {self.verb} train" if self.verb else "fatvit train"

    def config_class(self) -> type:
        return getattr(importlib.import_module(f"{__name__}.{self.package}.config"), self.config)

    def task_class(self) -> type:
        return getattr(importlib.import_module(f"{__name__}.{self.package}.task"), self.task)


#: Every task, by name.
TASKS: Dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("classify", "classification", "ClassifyConfig", "ClassificationTask"),
        TaskSpec("detect", "detection", "DetectConfig", "DetectionTask", verb="detect",
                 help="object detection: train, evaluate, predict (RetinaNet, Mask R-CNN)"),
        TaskSpec("segment", "segmentation", "SegmentConfig", "SegmentationTask", verb="segment",
                 help="semantic segmentation: train, evaluate, predict (Semantic FPN)"),
    )
}  # fmt: skip

#: The task of a recipe or a record that names none.
DEFAULT_TASK = "classify"


def _spec(name: str) -> TaskSpec:
    if name not in TASKS:
        from ..errors import unknown_choice

        raise unknown_choice("task", str(name), TASKS)
    return TASKS[name]


def config_class(name: str) -> type:
    """The config class of task ``name``."""
    return _spec(name).config_class()


def task_class(name: str) -> type:
    """The :class:`~fatvit.tasks.base.Task` class of task ``name``."""
    return _spec(name).task_class()


def get_task(cfg: Any) -> Task:
    """The task of a config (by its ``task``), ready to build a run."""
    return task_class(cfg.task)(cfg)
