"""The training loop every task shares: epochs of optimizer steps, evaluation, checkpoints, the summary.

The loop is all this module holds; its parts are the engine's other modules
(:mod:`~fatvit.engine.setup`, :mod:`~fatvit.engine.loaders`,
:mod:`~fatvit.engine.state`, :mod:`~fatvit.engine.run_folder`), and a
:class:`~fatvit.tasks.base.Task` supplies data, model, loss and metrics::

    from fatvit.config import load_config
    from fatvit.engine import Trainer
    summary = Trainer(load_config("digits", ["epochs=5", "output=runs/digits"])).fit()
    summary = Trainer.resume("runs/digits/last.pth").fit()  # after an interruption

    from fatvit.tasks.detection.config import DetectConfig
    summary = Trainer(load_config("digit_scenes_detect", cls=DetectConfig)).fit()  # RetinaNet on the digit scenes

One process or many (``torchrun``: DDP with NCCL on GPUs, Gloo on CPUs).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
from timm.utils import random_seed
from torch import nn
from tqdm import tqdm

from ..checkpoint import CheckpointError, save_checkpoint, save_safetensors
from ..config import RunConfig
from ..distributed import all_reduce_sum, cleanup, init_distributed
from ..errors import FatvitError
from ..tasks import get_task
from ..tasks.base import Task
from .loaders import RunData
from .report import epoch_line, epoch_row, improves, run_summary, start_line
from .run_folder import RunFolder, default_output
from .setup import Optimization, resolve_amp, wrap_model
from .state import TrainState, checkpoint_dict, restore_checkpoint, resume_config

__all__ = ["Trainer", "TrainingDivergedError"]

_log = logging.getLogger("fatvit.train")


class TrainingDivergedError(FatvitError):
    """The loss became NaN or infinite; ``last`` is the last good checkpoint, if one was written."""

    def __init__(self, loss: float, step: int, epoch: int, last: Optional[Path]) -> None:
        self.last = last
        kept = f"the last good checkpoint is kept: {last}" if last else "no checkpoint was written before it (the " \
            "run's files are removed)"  # fmt: skip
        super().__init__(f"loss is {loss} at step {step} (epoch {epoch}); stopped: {kept}")


class Trainer:
    """Trains one model as a config describes (its task supplies data, model, loss and metrics).

    Args:
        cfg: the resolved configuration (a task's config class).
        max_steps: stop (after writing ``last.pth``) once this many optimizer steps are done in all.
        overwrite: replace the run files of a non-empty output folder.
        task: the run's task (default: the registry's task of ``cfg.task``).
        checkpoint: a training checkpoint to continue from, as :func:`~fatvit.engine.state.resume_config`
            returns it with ``cfg`` (:meth:`resume` does both).
    """

    def __init__(self, cfg: RunConfig, max_steps: Optional[int] = None, overwrite: bool = False,
                 task: Optional[Task] = None, checkpoint: Optional[Dict[str, Any]] = None) -> None:  # fmt: skip
        if max_steps is not None and max_steps < 1:
            raise FatvitError(f"max_steps must be at least 1, got {max_steps}")
        self.cfg, self.max_steps, self.resumed = cfg, max_steps, checkpoint is not None
        self.task = task if task is not None else get_task(cfg)
        self.notes = self.task.start_notes(starting=not self.resumed)  # may refuse the start, before any work
        self.dist = init_distributed(cfg.device)
        self.device = self.dist.device
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        random_seed(cfg.seed, self.dist.rank)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        if cfg.output is None:
            cfg.output = default_output(cfg.model)
        self.folder = RunFolder(cfg.output, overwrite, self.resumed, self.dist.is_main)  # checked before any work
        self.checkpoints_written = 0
        self.splits = self.task.build_splits()
        if len(self.splits.train) == 0 or len(self.splits.val) == 0:
            raise FatvitError("the train and val sets must both hold images")
        self.classes = self.splits.classes
        self.model_kwargs = dict(cfg.model_kwargs)
        if cfg.drop_path_rate is not None:
            self.model_kwargs["drop_path_rate"] = cfg.drop_path_rate
        # a resumed run takes its weights from its checkpoint, not from finetune or backbone weights
        model = self.task.build_model(self.classes, self.model_kwargs, load_weights=not self.resumed)
        self.models = wrap_model(model, cfg, self.dist, self.task.find_unused_parameters)
        self.mean, self.std = self.task.mean_std(model)
        self.data = RunData.build(self.task, self.splits, self.mean, self.std, cfg, self.dist)
        self.opt = Optimization.build(model, cfg, self.dist, self.amp_dtype, self.data.total_steps,
                                      self.data.steps_per_epoch)  # fmt: skip
        self.task.setup_loss(self.classes)
        self.metrics = list(self.task.metrics())
        self.primary = next(m for m in self.metrics if m.name == self.task.primary_metric)
        self.last_result: Dict[str, Any] = {}  # the last evaluation of this process
        self.state = TrainState()
        if checkpoint is not None:
            if checkpoint.get("classes") != self.classes:
                raise CheckpointError("the checkpoint was trained on other classes than this data set has")
            self.state = restore_checkpoint(checkpoint, self.models, self.opt, cfg, say=self.dist.is_main)
        self.folder.open(self.state.global_step, self.state.history)  # made only once everything above worked

    @classmethod
    def resume(cls, path: str | Path, overrides: Sequence[str] = (), max_steps: Optional[int] = None,
               typed: Optional[Dict[str, Any]] = None, task: Optional[str] = None) -> Trainer:  # fmt: skip
        """Continue the run whose ``last.pth`` (or ``best.pth``) is ``path``, in that run's folder, with the
        changes :func:`~fatvit.engine.state.resume_config` allows."""
        cfg, ckpt = resume_config(path, overrides, typed, task)
        return cls(cfg, max_steps=max_steps, checkpoint=ckpt)

    @property
    def model(self) -> nn.Module:
        """The plain model (checkpoints, EMA and evaluation use it)."""
        return self.models.model

    def meta(self) -> Dict[str, Any]:
        """The record every file of the run carries: how to rebuild and feed the model, and how far it was
        trained (``epoch``: epochs completed; ``step``: optimizer steps)."""
        record = self.task.meta(self.model_kwargs, self.splits, self.mean, self.std, self.model)
        return {**record, "epoch": self.state.epoch, "step": self.state.global_step}

    def save(self, name: str) -> Optional[Path]:
        """Write ``name``.pth (rank 0). Under DDP on CPUs the BatchNorm statistics must be averaged first."""
        if not self.dist.is_main:
            return None
        path = self.folder / f"{name}.pth"
        record = dict(task=self.task.name, classes=self.classes, config=self.cfg.to_dict(), meta=self.meta())
        save_checkpoint(checkpoint_dict(self.state, self.models, self.opt, **record), path)
        self.checkpoints_written += 1
        return path

    def _train_epoch(self) -> bool:
        """Train from ``batches_done`` to the end of the epoch (or of the run's steps); False if ``max_steps``
        stopped it."""
        cfg, state, data = self.cfg, self.state, self.data
        loader = data.train_loader(state.epoch, state.batches_done)
        self.models.train_model.train()
        total = min(data.micro_batches_per_epoch - state.batches_done,
                    (data.total_steps - state.global_step) * cfg.accum_steps)  # fmt: skip
        bar = tqdm(loader, total=total, desc=f"epoch {state.epoch + 1}/{data.num_epochs}", leave=False,
                   disable=not self.dist.is_main, dynamic_ncols=True, file=sys.stderr)  # fmt: skip
        seen, start = 0, time.perf_counter()
        try:  # closed before any error reaches the user, so that the error line is the last one
            for inputs, targets, skipped in bar:  # the sampler yields exactly the epoch's remaining batches
                state.skipped_images += skipped
                if skipped:
                    _log.warning("%d unreadable image(s) skipped so far", state.skipped_images)
                inputs, targets = self.task.prepare_batch(inputs, targets, self.device, cfg.channels_last)
                n = self.task.batch_size_of(targets)
                state.batches_done += 1
                if n == 0:  # every (usable) image of the batch was unreadable
                    continue
                loss = self._train_micro_batch(inputs, targets, n)
                seen += n
                if state.batches_done % cfg.accum_steps == 0:
                    self._optimizer_step(loss)
                    rate = seen * self.dist.world_size / max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.opt.current_lr():.2e}", img_s=f"{rate:.1f}")
                    if self.max_steps is not None and state.global_step >= self.max_steps:
                        state.add_time(start)
                        return False
                    if state.global_step >= data.total_steps:  # the run's iterations end inside this epoch
                        break
                    if cfg.checkpoint_every and state.global_step % cfg.checkpoint_every == 0:
                        start = state.add_time(start)  # the checkpoint records the time so far
                        self.models.sync_batchnorm()
                        self.save("last")
        finally:
            bar.close()
        state.add_time(start)
        return True

    def _train_micro_batch(self, inputs: Any, targets: Any, n: int) -> float:
        accum, state, train_model = self.cfg.accum_steps, self.state, self.models.train_model
        final = state.batches_done % accum == 0
        with nullcontext() if final or not self.dist.distributed else train_model.no_sync():
            with self.task.autocast(train_model, self.device, self.amp_dtype):
                loss = self.task.loss(train_model, inputs, targets)
            self.opt.backward(loss / accum)
        # the mean loss over all ranks: logged, and the same NaN verdict on every rank
        stats = all_reduce_sum(torch.stack([loss.detach().float() * n, loss.new_tensor(float(n), dtype=torch.float32)]))
        mean_loss = (stats[0] / stats[1]).item()
        if not math.isfinite(mean_loss):
            last = self.folder / "last.pth"
            raise TrainingDivergedError(
                mean_loss, state.global_step + 1, state.epoch + 1, last if last.is_file() else None
            )
        state.epoch_loss_sum += stats[0].item()
        state.epoch_samples += int(stats[1].item())
        return mean_loss

    def _optimizer_step(self, loss: float) -> None:
        state = self.state
        state.global_step += 1
        self.opt.step(self.model, self.cfg.clip_grad, state.global_step)
        if self.models.ema is not None:
            self.models.ema.update(self.model, step=state.global_step)
        self.folder.log_step(state.global_step, state.epoch + 1, loss, self.opt.current_lr(), self.cfg.log_every)

    def _evaluate(self, model: nn.Module) -> Dict[str, Any]:
        return self.task.evaluate(model, self.data.val_loader, self.device, self.amp_dtype, self.cfg.channels_last)

    def _end_epoch(self) -> Dict[str, Any]:
        task, state = self.task, self.state
        self.models.sync_batchnorm()
        metrics = self.last_result = self._evaluate(self.model)
        row = epoch_row(self.metrics, metrics, state, self.opt.current_lr())
        if self.models.ema is not None:
            row[f"ema_{task.primary_metric}"] = self._evaluate(self.models.ema.module)[task.primary_metric]
        state.history.append(row)
        improved = improves(self.primary, metrics[task.primary_metric], state.best_metric)
        if improved:
            state.best_metric = metrics[task.primary_metric]
        state.end_epoch()
        line = epoch_line(self.metrics, metrics, row, self.data.num_epochs)
        self.folder.log_epoch(row, state.history, f"val_{task.primary_metric}", task.metric_title, line)
        self.save("last")
        if improved:
            self.save("best")
        return metrics

    def fit(self) -> Dict[str, Any]:
        """Train to the last epoch or iteration (or ``max_steps``); returns what ``summary.json`` holds."""
        data = self.data
        if self.dist.is_main:
            line = start_line(data, self.opt, len(self.classes), self.models, self.folder.path, self.notes)
            print(line, file=sys.stderr, flush=True)
        try:
            while self.state.epoch < data.num_epochs and self.state.global_step < data.total_steps:
                if not self._train_epoch():
                    self.models.sync_batchnorm()
                    self.save("last")
                    return self._stop(finished=False)
                self._end_epoch()
            return self._stop(finished=True)
        except BaseException:
            if self.dist.is_main and not self.resumed and not self.checkpoints_written:
                self.folder.remove_unfinished_start()
            raise
        finally:
            self.folder.close()

    def _stop(self, finished: bool) -> Dict[str, Any]:
        """What every stop writes, finished or stopped by ``max_steps``: ``model.safetensors`` (the weights as
        they are, with the record to use them), the task's other model files (a classifier's ``config.json``)
        and ``summary.json``; returns the summary."""
        if self.dist.is_main:
            meta = self.meta()
            save_safetensors(self.model, self.folder / "model.safetensors", meta=meta)
            self.task.save_model_files(self.model, self.folder.path, meta)
        return self.folder.write_summary(**run_summary(
            self.task, self.metrics, self.state, self.last_result, self.classes, model=self.cfg.model,
            finished=finished, world_size=self.dist.world_size, global_batch=self.opt.global_batch, lr=self.opt.lr,
        ))  # fmt: skip

    def close(self) -> None:
        cleanup()
