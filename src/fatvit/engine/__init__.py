"""The training engine every task trains with; it names no task.

* :mod:`~fatvit.engine.trainer`: :class:`Trainer`, the epoch and step loop, evaluation, checkpoints, the summary;
* :mod:`~fatvit.engine.state`: :class:`TrainState` (what a checkpoint holds besides the weights), saving and
  restoring it with the RNG states, and the resume policy;
* :mod:`~fatvit.engine.run_folder`: the run's folder (which ones a run may write to) and its logs (CSV,
  TensorBoard, curves, ``summary.json``);
* :mod:`~fatvit.engine.setup`: device precision, the model for training (DDP, SyncBN, EMA, compile), the
  optimizer and the schedule;
* :mod:`~fatvit.engine.loaders`: the seeded sets, resumable samplers and loaders, the run's length in steps;
* :mod:`~fatvit.engine.report`: what a run says: its start line, each epoch's ``metrics.csv`` row and log line,
  and ``summary.json``'s figures, the metrics formatted from the task's declarations.

It may import the shared modules (:mod:`fatvit.config`, :mod:`fatvit.data`, :mod:`fatvit.checkpoint`, ...), the
task registry and :mod:`fatvit.tasks.base`. Its errors are typed
(:class:`~fatvit.engine.run_folder.OutputNotEmptyError`, :class:`~fatvit.engine.state.ResumeRefusedError`,
:class:`~fatvit.engine.trainer.TrainingDivergedError`) and worded in the library's terms; the command words them
with its flags.
"""

from .run_folder import RUN_FILES, OutputNotEmptyError
from .setup import create_optimizer, resolve_amp
from .state import RESUME_CHANGEABLE, ResumeRefusedError, TrainState, read_training_checkpoint
from .trainer import Trainer, TrainingDivergedError

__all__ = [
    "Trainer",
    "TrainState",
    "TrainingDivergedError",
    "OutputNotEmptyError",
    "ResumeRefusedError",
    "RESUME_CHANGEABLE",
    "RUN_FILES",
    "create_optimizer",
    "read_training_checkpoint",
    "resolve_amp",
]
