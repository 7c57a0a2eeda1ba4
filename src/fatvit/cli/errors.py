"""The library's typed errors worded with the command's flags.

The library words its errors with its own argument and config names (``overwrite=True``, ``use_ema``); a command
gives the same choices as flags, so :func:`error_line` rewords the errors whose remedy is a flag. An error of a
module that was never imported cannot have been raised, so only loaded modules are looked at: wording an error
imports nothing.
"""

from __future__ import annotations

import sys
from typing import Callable, List, Optional, Tuple

__all__ = ["error_line"]


def _output_exists(err) -> str:
    return f"{err.label} {err.path} exists; give --overwrite to replace it"


def _calibration_size(err) -> str:
    if err.requested < 1:
        return f"--calibration-images must be at least 1, got {err.requested}"
    return (f"the calibration set has {err.count} images: --calibration-images {err.requested} leaves none held out "
            "to measure the top-1 drop on")  # fmt: skip


def _no_class_names(err) -> str:
    return (f"{err.source} records no class names (an authors' file or a bare state dict); give them with --classes "
            f"FILE, one name per line in output order ({err.num_classes} lines)")  # fmt: skip


def _option_not_for_file(err) -> str:
    if err.option == "use_ema":
        return f"{err.checkpoint} is an exported model: it holds one set of weights (--ema applies to training " \
               "checkpoints)"  # fmt: skip
    return f"--runtime {err.runtime} runs exported .onnx files; {err.checkpoint} runs in PyTorch"


def _output_not_empty(err) -> str:
    hint = f"resume that run with --resume {err.resumable}, " if err.resumable else ""
    return (f"output folder {err.path} is not empty ({err.listing}): {hint}choose another --output, or pass "
            "--overwrite to replace its run files")  # fmt: skip


def _diverged(err) -> str:
    return f"{err} (resume with --resume {err.last})" if err.last is not None else str(err)


def _run_of_another_task(err) -> str:
    from ..tasks import TASKS

    return f"{err.path} is a {err.task!r} run: resume it with {TASKS[err.task].train_command} --resume {err.path}"


def _resume_moves_folder(err) -> str:
    return f"a run resumes in its own folder ({err.folder}); --output cannot move it (copy the folder and resume " \
           "from the copy)"  # fmt: skip


def _resume_changes_keys(err) -> str:
    from ..engine.state import RESUME_CHANGEABLE

    return (f"cannot change {', '.join(err.keys)} when resuming: the run's model, optimizer, schedule and data order "
            f"continue as saved (changeable: {', '.join(RESUME_CHANGEABLE)}); start a new run from its weights with "
            f"--finetune {err.path}")  # fmt: skip


def _run_finished(err) -> str:
    return (f"the run in {err.folder} finished its {err.planned} {err.key}: raise {err.key} to train longer "
            f"(--set {err.key}=N), or start a new run from its weights with --finetune {err.path}")  # fmt: skip


#: (module, error class, its wording with flags), a subclass before its base.
WORDINGS: List[Tuple[str, str, Callable]] = [
    ("fatvit.files", "OutputExistsError", _output_exists),
    ("fatvit.quantize", "CalibrationSizeError", _calibration_size),
    ("fatvit.tasks.classification.inference", "NoClassNamesError", _no_class_names),
    ("fatvit.tasks.classification.inference", "OptionNotForFileError", _option_not_for_file),
    ("fatvit.engine.run_folder", "OutputNotEmptyError", _output_not_empty),
    ("fatvit.engine.trainer", "TrainingDivergedError", _diverged),
    ("fatvit.engine.state", "RunOfAnotherTaskError", _run_of_another_task),
    ("fatvit.engine.state", "ResumeMovesFolderError", _resume_moves_folder),
    ("fatvit.engine.state", "ResumeChangesKeysError", _resume_changes_keys),
    ("fatvit.engine.state", "RunFinishedError", _run_finished),
]


def _error_class(module: str, name: str) -> Optional[type]:
    return getattr(sys.modules.get(module), name, None)


def error_line(err: Exception) -> str:
    """``err`` as the command words it: with the flags that are its remedy, where the library names arguments."""
    for module, name, word in WORDINGS:
        cls = _error_class(module, name)
        if cls is not None and isinstance(err, cls):
            return word(err)
    return str(err)
