"""The training engine, shared by classification, detection and segmentation (see :mod:`fatvit.tasks.base`):
a task brings its data, model, loss and metrics, the engine everything else.

One process or many (``torchrun``: DDP with NCCL on GPUs, Gloo on CPUs).
Everything a run needs to continue exactly is in its checkpoints (model,
optimizer, scheduler, AMP scaler, EMA, epoch and step, RNG states, the
resolved config), written atomically, so an interrupted run resumes as if it
had never stopped::

    from fatvit.config import load_config
    from fatvit.train import Trainer
    summary = Trainer(load_config("digits", ["epochs=5", "output=runs/digits"])).fit()
    summary = Trainer.resume("runs/digits/last.pth").fit()  # after an interruption

    from fatvit.tasks.detection.config import DetectConfig
    summary = Trainer(load_config("digit_scenes_detect", cls=DetectConfig)).fit()  # RetinaNet on the digit scenes

A run's folder must be new or empty (``overwrite=True`` replaces the files of
a run there), or hold only what a run stopped before its first checkpoint
left (its logs, a ``.tmp`` of a killed write: removed, and said); a new run
that fails before its first checkpoint removes what it wrote. A resumed run
continues in its own folder, removes stale ``.tmp`` files, drops whatever it
had logged after its checkpoint, and accepts only the changes listed in
:data:`RESUME_CHANGEABLE` (``epochs`` re-plans the schedule, and says so).
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import sys
import time
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from timm.optim import create_optimizer_v2, get_optimizer_class
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, distribute_bn, random_seed
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .checkpoint import CheckpointError, read_file, save_checkpoint, save_safetensors
from .config import RunConfig, apply_overrides, make_config
from .data import ResumableSampler, SeededDataset, make_loader
from .distributed import all_reduce_sum, cleanup, init_distributed
from .errors import FatvitError
from .files import check_output_dir, prepare_output_dir
from .reporting import append_csv, keep_csv_rows, plot_curves, write_csv, write_json_atomic
from .tasks import DEFAULT_TASK, TASKS, config_class, get_task

__all__ = [
    "Trainer",
    "TrainingDivergedError",
    "create_optimizer",
    "read_training_checkpoint",
    "resolve_amp",
    "RUN_FILES",
]

_log = logging.getLogger("fatvit.train")

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}

#: What a run writes in its folder (``overwrite`` replaces exactly these).
RUN_FILES = ("last.pth", "best.pth", "model.safetensors", "config.json", "metrics.csv", "steps.csv", "summary.json",
             "training_curves.png", "tensorboard")  # fmt: skip

#: The files a run holds that can resume or use it; a folder without any of them holds no work to keep.
CHECKPOINT_FILES = ("last.pth", "best.pth", "model.safetensors")

#: Config keys a resumed run may change; any other change would be ignored by the restored state, so it is refused.
RESUME_CHANGEABLE = ("epochs", "iterations", "data", "workers", "device", "log_every", "checkpoint_every",
                     "channels_last", "compile", "deterministic")  # fmt: skip


#: What a run writes before its first checkpoint: its logs (``summary.json`` comes only after a checkpoint).
LOG_FILES = tuple(n for n in RUN_FILES if n not in CHECKPOINT_FILES and n not in ("summary.json", "config.json"))


def _is_leftover(name: str) -> bool:
    """A name in a run folder that only a run stopped before its first checkpoint leaves: its logs, or a
    temporary file of an interrupted write."""
    return name in LOG_FILES or (name.endswith(".tmp") and name[: -len(".tmp")] in RUN_FILES)


class TrainingDivergedError(FatvitError):
    """The loss became NaN or infinite."""


def resolve_amp(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of an ``amp`` setting: ``auto`` is bf16 on CUDA devices that support it, else fp16
    on CUDA, and none (fp32) on CPUs."""
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return AMP_DTYPES[amp]


#: torch optimizers with a fused form (one kernel over all parameters, the same update), used where it applies
FUSED_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def create_optimizer(
    model: torch.nn.Module, opt: str, lr: float, weight_decay: float, no_decay_1d: bool = True
) -> torch.optim.Optimizer:
    """timm's optimizer ``opt`` for ``model``, fused where it can be.

    With ``no_decay_1d`` (the classification recipes, as the authors' and
    timm's training) biases, norms and other 1-D parameters, and the model's
    ``no_weight_decay()`` names, get no weight decay; without it (the dense
    recipes, as mmdet's and mmseg's configs of FAT and PVT) every parameter
    is decayed, in one group.

    torch's Adam, AdamW and SGD run their fused implementation when every
    parameter is a floating-point tensor on the CPU or a CUDA device: on a
    CPU the default, a loop over the parameters, took about 20 ms per step
    for FAT-B0 on 2 cores against 4 ms fused.
    """
    kwargs: Dict[str, Any] = {}
    params = list(model.parameters())
    if issubclass(get_optimizer_class(opt, bind_defaults=False), FUSED_OPTIMIZERS) and all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params
    ):
        kwargs["fused"] = True
    return create_optimizer_v2(model, opt, lr=lr, weight_decay=weight_decay, filter_bias_and_bn=no_decay_1d, **kwargs)


def _rng_state() -> Dict[str, Any]:
    """Every RNG state the training loop draws from, in types ``weights_only`` loading accepts."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_training_checkpoint(path: str | Path) -> Dict[str, Any]:
    """A fatvit training checkpoint (``last.pth``/``best.pth``), read with ``weights_only=True``."""
    ckpt = read_file(path)
    if not isinstance(ckpt, dict) or "optimizer" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path} is not a fatvit training checkpoint (use finetune=PATH to start from weights)")
    return ckpt


class Trainer:
    """Trains one model as a config describes (:class:`~fatvit.config.TrainConfig`, ``DetectConfig`` or
    ``SegmentConfig``: its task supplies data, model, loss and metrics).

    Args:
        cfg: the resolved configuration.
        max_steps: stop (after writing ``last.pth``) once this many optimizer
            steps are done in all; for time-boxed jobs.
    """

    def __init__(
        self,
        cfg: RunConfig,
        max_steps: Optional[int] = None,
        overwrite: bool = False,
        _resume: Optional[Dict[str, Any]] = None,
    ) -> None:
        if max_steps is not None and max_steps < 1:
            raise FatvitError(f"max_steps must be at least 1, got {max_steps}")
        self.resume_ckpt = _resume
        self.cfg = cfg
        self.task = get_task(cfg)
        self.max_steps = max_steps
        self.dist = init_distributed(cfg.device)
        self.device = self.dist.device
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        random_seed(cfg.seed, self.dist.rank)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.leftovers: List[str] = []  # what a run stopped before its first checkpoint left in the folder
        self.out = self._output_path(overwrite)
        self.made_folder = not self.out.exists()
        self.checkpoints_written = 0
        self._build_data()
        self._build_model()
        self._build_loaders()
        self._build_optimization()
        self.epoch = 0
        self.batches_done = 0  # micro-batches of the current epoch already trained on
        self.global_step = 0  # optimizer steps
        self.best_metric = -math.inf  # the task's primary validation metric
        self.history: List[Dict[str, Any]] = []
        self.epoch_loss_sum = 0.0
        self.epoch_samples = 0
        self.skipped_images = 0
        self.train_seconds = 0.0
        if self.resume_ckpt is not None:
            self._restore(self.resume_ckpt)
        # the folder is made only once everything above worked: a failed start leaves nothing behind
        self.writer = None
        if self.dist.is_main:
            prepare_output_dir(self.out)
            if self.leftovers:
                print(
                    f"fatvit: {self.out} holds only what a run stopped before its first checkpoint left "
                    f"({', '.join(self.leftovers)}): removed",
                    file=sys.stderr,
                    flush=True,
                )
            if (overwrite or self.leftovers) and self.resume_ckpt is None:
                self._remove_run_files()
            else:
                self._remove_stale_tmp()
            if self.resume_ckpt is not None:  # forget what was logged after the checkpoint
                keep_csv_rows(self.out / "steps.csv", lambda row: int(row["step"]) <= self.global_step)
                write_csv(self.out / "metrics.csv", self.history)
            from torch.utils.tensorboard import SummaryWriter

            purge = self.global_step + 1 if self.resume_ckpt is not None else None
            self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=purge)

    @classmethod
    def resume(
        cls,
        path: str | Path,
        overrides: Sequence[str] = (),
        max_steps: Optional[int] = None,
        typed: Optional[Dict[str, Any]] = None,
        task: Optional[str] = None,
    ) -> Trainer:
        """Continue the run whose ``last.pth`` (or ``best.pth``) is ``path``, in that run's folder.

        The run's own recipe is used. ``typed`` values and ``overrides``
        (``key=value``) may change only the keys of :data:`RESUME_CHANGEABLE`:
        ``epochs=400`` trains longer (the cosine schedule is re-planned for
        the new length), ``data=...`` follows a moved data set.

        Raises:
            FatvitError: another key is changed, ``epochs`` is lowered below
                the epochs done, the run is finished and ``epochs`` not raised,
                or the run is of another task than ``task`` (if given).
        """
        ckpt = read_training_checkpoint(path)
        folder = Path(path).resolve().parent
        config_cls = config_class(ckpt["config"].get("task") or DEFAULT_TASK)
        saved = make_config({**config_cls.BEFORE_KEYS, **ckpt["config"]}, config_cls)  # a key the run predates
        # keeps what the run did
        if task is not None and saved.task != task:
            command = TASKS[saved.task].train_command
            raise FatvitError(f"{path} is a {saved.task!r} run: resume it with {command} --resume {path}")
        # typed and checked, then compared
        cfg = make_config(apply_overrides(saved.to_dict(), overrides, typed, type(saved)), type(saved))
        if cfg.output != saved.output and Path(cfg.output or "").resolve() != folder:
            raise FatvitError(
                f"a run resumes in its own folder ({folder}); --output cannot move it "
                "(copy the folder and resume from the copy)"
            )
        new, old = cfg.to_dict(), saved.to_dict()
        changed = sorted(k for k in new if new[k] != old[k] and k != "output")
        fixed = [k for k in changed if k not in RESUME_CHANGEABLE]
        if fixed:
            raise FatvitError(
                f"cannot change {', '.join(fixed)} when resuming: the run's model, optimizer, schedule and data "
                f"order continue as saved (changeable: {', '.join(RESUME_CHANGEABLE)}); start a new run from its "
                f"weights with --finetune {path}"
            )
        if cfg.iterations is None:
            done, planned, unit, key = ckpt["epoch"], saved.epochs, "epoch(s)", "epochs"
            mid = cfg.epochs == done and ckpt.get("batches_done", 0)
            wanted = cfg.epochs
        else:
            done, planned, unit, key = ckpt["global_step"], saved.iterations, "iteration(s)", "iterations"
            mid, wanted = False, cfg.iterations
        if wanted < done or mid:
            raise FatvitError(f"the run has trained {done} {unit} already: {key}={wanted} is too few")
        if planned is not None and done >= planned and wanted == planned:
            raise FatvitError(
                f"the run in {folder} finished its {planned} {key}: raise {key} to train "
                f"longer (--set {key}=N), or start a new run from its weights with --finetune {path}"
            )
        cfg.output = str(folder)
        return cls(cfg, max_steps=max_steps, _resume=ckpt)

    # ----- set-up ---------------------------------------------------------
    def _output_path(self, overwrite: bool) -> Path:
        """The run's folder; a new run's must be new or empty (or ``overwrite``), checked before any work."""
        cfg = self.cfg
        if cfg.output is None:
            base = Path("runs") / f"{cfg.model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
            out, n = base, 1
            while out.exists():
                n += 1
                out = base.with_name(f"{base.name}-{n}")
            cfg.output = str(out)
        out = check_output_dir(cfg.output)
        if self.resume_ckpt is None and self.dist.is_main and out.is_dir() and not overwrite:
            held = sorted(p.name for p in out.iterdir())
            if held and all(_is_leftover(name) for name in held):
                self.leftovers = held  # no checkpoint, only logs or a temporary file: nothing to resume or keep
            elif held:
                hint = f"resume that run with --resume {out / 'last.pth'}, " if "last.pth" in held else ""
                raise FatvitError(
                    f"output folder {out} is not empty ({', '.join(held[:4])}{' ...' if len(held) > 4 else ''}): "
                    f"{hint}choose another --output, or pass --overwrite to replace its run files"
                )
        return out

    def _remove_run_files(self) -> None:
        for name in RUN_FILES:
            path = self.out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        self._remove_stale_tmp()

    def _remove_stale_tmp(self) -> None:
        """Remove the ``*.tmp`` files of the run's own files that a killed write left (an atomic write leaves
        none unless the process dies inside it)."""
        for name in RUN_FILES:
            (self.out / f"{name}.tmp").unlink(missing_ok=True)

    def _remove_unfinished_start(self) -> None:
        """After a failure before the first checkpoint of a new run: remove what it wrote (and its folder, if it
        made it), so that nothing blocks the same output the next time."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self._remove_run_files()
        if self.made_folder and self.out.is_dir() and not any(self.out.iterdir()):
            self.out.rmdir()

    def _build_data(self) -> None:
        self.splits = self.task.build_splits()
        if len(self.splits.train) == 0 or len(self.splits.val) == 0:
            raise FatvitError("the train and val sets must both hold images")
        self.classes = self.splits.classes

    def _build_model(self) -> None:
        cfg = self.cfg
        kwargs = dict(cfg.model_kwargs)
        if cfg.drop_path_rate is not None:
            kwargs["drop_path_rate"] = cfg.drop_path_rate
        self.model_kwargs = kwargs
        # a resumed run takes its weights from its checkpoint, not from finetune or backbone weights
        model = self.task.build_model(self.classes, kwargs, load_weights=self.resume_ckpt is None)
        if cfg.grad_checkpointing:  # the model's, or its backbone's (a detector's FAT)
            owner = next((m for m in model.modules() if hasattr(m, "set_grad_checkpointing")), None)
            if owner is None:
                raise FatvitError(f"{cfg.model} has no gradient checkpointing (set grad_checkpointing=false)")
            owner.set_grad_checkpointing(True)
        model.to(self.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model  # the plain module: checkpoints, EMA and evaluation use it
        self.mean, self.std = self.task.mean_std(model)
        self.ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None
        train_model: nn.Module = model
        self.sync_bn = self.dist.distributed and self.device.type == "cuda"
        if self.dist.distributed:
            if self.sync_bn:
                train_model = nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
            elif self.dist.is_main:
                _log.info(
                    "SyncBatchNorm needs GPUs in PyTorch: BatchNorm statistics on %s are averaged over the "
                    "processes before each evaluation and checkpoint", self.device,
                )  # fmt: skip
            train_model = DistributedDataParallel(
                train_model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.task.find_unused_parameters,
            )
        if cfg.compile:
            train_model = torch.compile(train_model)
        self.train_model = train_model

    def meta(self) -> Dict[str, Any]:
        """The record every file of the run carries: how to rebuild and feed the model."""
        return self.task.meta(self.model_kwargs, self.classes, self.mean, self.std, self.model)

    def _build_loaders(self) -> None:
        cfg = self.cfg
        train_tf, val_tf = self.task.transforms(self.mean, self.std)
        joint = self.task.joint_transform
        self.train_set = SeededDataset(self.splits.train, train_tf, cfg.seed, joint=joint)
        self.val_set = SeededDataset(self.splits.val, val_tf, cfg.seed, joint=joint)
        world, rank = self.dist.world_size, self.dist.rank
        groups = self.task.batch_groups(self.splits.train)  # e.g. detection's landscape and portrait images
        self.train_sampler = ResumableSampler(
            len(self.train_set), True, cfg.seed, world, rank, groups=groups, batch_size=cfg.batch_size
        )
        # each validation image once, on one process: exact metrics
        self.val_sampler = ResumableSampler(len(self.val_set), False, cfg.seed, world, rank, pad=False)
        self.micro_batches_per_epoch = len(self.train_sampler) // cfg.batch_size
        if self.micro_batches_per_epoch < cfg.accum_steps:
            raise FatvitError(
                f"the train set has {len(self.train_set)} images: too few for one step of "
                f"{cfg.batch_size} x {cfg.accum_steps} per process on {world} process(es)"
            )
        self.steps_per_epoch = self.micro_batches_per_epoch // cfg.accum_steps
        # the run's length: epochs, or iterations (optimizer steps) and the epochs they take
        if cfg.iterations is not None:
            self.total_steps = cfg.iterations
            self.num_epochs = math.ceil(cfg.iterations / self.steps_per_epoch)
        else:
            self.num_epochs = cfg.epochs
            self.total_steps = cfg.epochs * self.steps_per_epoch
        self.val_loader = make_loader(
            self.val_set, self.val_sampler, cfg.batch_size, cfg.workers, drop_last=False, collate_fn=self.task.collate
        )

    def _build_optimization(self) -> None:
        cfg = self.cfg
        self.global_batch = cfg.batch_size * cfg.accum_steps * self.dist.world_size
        # linear scaling rule, applied to the warmup and final lrs too (as the authors' main.py does)
        scale = self.global_batch / cfg.lr_base_batch
        self.lr = cfg.lr * scale
        self.optimizer = create_optimizer(
            self.model, cfg.opt, lr=self.lr, weight_decay=cfg.weight_decay, no_decay_1d=cfg.no_decay_1d
        )
        spe = self.steps_per_epoch
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else cfg.warmup_epochs * spe
        self.scheduler, _ = create_scheduler_v2(
            self.optimizer,
            sched=cfg.sched,
            num_epochs=self.total_steps,  # in optimizer steps: the schedule is stepped per update
            warmup_epochs=warmup,
            warmup_lr=cfg.warmup_lr * scale,
            min_lr=cfg.min_lr * scale,
            decay_milestones=[round(m * spe) for m in cfg.decay_milestones],
            decay_rate=cfg.poly_power if cfg.sched == "poly" else cfg.decay_rate,
            step_on_epochs=False,
            updates_per_epoch=1,
        )
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        self.task.setup_loss(self.classes)

    # ----- checkpoints ----------------------------------------------------
    def state(self) -> Dict[str, Any]:
        return {
            "task": self.task.name,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "model_ema": self.ema.module.state_dict() if self.ema is not None else None,
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "global_step": self.global_step,
            "best_metric": self.best_metric,
            "history": self.history,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_samples": self.epoch_samples,
            "skipped_images": self.skipped_images,
            "train_seconds": self.train_seconds,
            "rng": _rng_state(),
            "classes": self.classes,
            "config": self.cfg.to_dict(),
            "meta": self.meta(),
        }

    def _restore(self, ckpt: Dict[str, Any]) -> None:
        if ckpt.get("classes") != self.classes:
            raise CheckpointError("the checkpoint was trained on other classes than this data set has")
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as err:
            raise CheckpointError(f"the checkpoint does not fit {self.cfg.model}: {str(err).splitlines()[0]}") from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        saved = ckpt["config"]
        planned = (saved.get("epochs"), saved.get("iterations"))
        replanned = (self.cfg.epochs, self.cfg.iterations) != planned
        if not replanned:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("model_ema"):
            self.ema.module.load_state_dict(ckpt["model_ema"])
        for key in ("epoch", "batches_done", "global_step", "history", "epoch_loss_sum",
                    "epoch_samples", "skipped_images", "train_seconds"):  # fmt: skip
            setattr(self, key, ckpt[key])
        best = ckpt.get("best_metric", ckpt.get("best_top1"))  # best_top1: checkpoints of fatvit <= 0.1
        self.best_metric = best if best is not None and self.history else -math.inf
        _set_rng_state(ckpt["rng"])
        before = self._lr()
        self.scheduler.step_update(num_updates=self.global_step)
        if replanned and self.dist.is_main:
            old = ("epochs", planned[0]) if planned[0] is not None else ("iterations", planned[1])
            now = ("epochs", self.cfg.epochs) if self.cfg.epochs is not None else ("iterations", self.cfg.iterations)
            new = f"{now[1]} {now[0]}"
            change = f"{now[0]} {old[1]} -> {now[1]}" if old[0] == now[0] else f"{old[1]} {old[0]} -> {new}"
            print(
                f"{change}: the {self.cfg.sched} schedule is re-planned over {new}; "
                f"at step {self.global_step} the lr goes from {before:.3e} to {self._lr():.3e}",
                file=sys.stderr,
                flush=True,
            )

    def save(self, name: str) -> Optional[Path]:
        """Write ``name``.pth (rank 0). Under DDP on CPUs call :meth:`_sync_batchnorm_stats` first, on every process."""
        if not self.dist.is_main:
            return None
        path = self.out / f"{name}.pth"
        save_checkpoint(self.state(), path)
        self.checkpoints_written += 1
        return path

    # ----- the loop ---------------------------------------------------------
    def _autocast(self):  # noqa: ANN202
        return self.task.autocast(self.train_model, self.device, self.amp_dtype)

    def _train_epoch(self) -> bool:
        """Train from ``batches_done`` to the end of ``epoch`` (or of the run's iterations); False if
        ``max_steps`` stopped it."""
        cfg = self.cfg
        self.train_set.set_epoch(self.epoch)
        self.train_sampler.set_epoch(self.epoch, start=self.batches_done * cfg.batch_size)
        loader = make_loader(self.train_set, self.train_sampler, cfg.batch_size, cfg.workers, drop_last=True,
                             collate_fn=self.task.collate)  # fmt: skip
        self.train_model.train()
        steps_left = self.total_steps - self.global_step
        total = min(self.micro_batches_per_epoch - self.batches_done, steps_left * cfg.accum_steps)
        bar = tqdm(
            loader, total=total, desc=f"epoch {self.epoch + 1}/{self.num_epochs}", disable=not self.dist.is_main,
            leave=False, dynamic_ncols=True, file=sys.stderr,
        )  # fmt: skip
        seen, start = 0, time.perf_counter()
        for inputs, targets, skipped in bar:  # the sampler yields exactly the epoch's remaining batches
            self.skipped_images += skipped
            if skipped:
                _log.warning("%d unreadable image(s) skipped so far", self.skipped_images)
            inputs, targets = self.task.prepare_batch(inputs, targets, self.device, cfg.channels_last)
            n = self.task.batch_size_of(targets)
            if n == 0:  # every (usable) image of the batch was unreadable
                self.batches_done += 1
                continue
            loss = self._train_micro_batch(inputs, targets, n)
            self.batches_done += 1
            seen += n
            if self.batches_done % cfg.accum_steps == 0:
                self._optimizer_step(loss)
                rate = seen * self.dist.world_size / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self._lr():.2e}", img_s=f"{rate:.1f}")
                if self.max_steps is not None and self.global_step >= self.max_steps:
                    self._add_train_time(start)
                    return False
                if self.global_step >= self.total_steps:  # the run's iterations end inside this epoch
                    break
                if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0:
                    start = self._add_train_time(start)  # the checkpoint records the time so far
                    self._sync_batchnorm_stats()
                    self.save("last")
        bar.close()
        self._add_train_time(start)
        return True

    def _add_train_time(self, start: float) -> float:
        """Add the time since ``start`` to ``train_seconds``; returns now, the next start."""
        now = time.perf_counter()
        self.train_seconds += now - start
        return now

    def _train_micro_batch(self, inputs: Any, targets: Any, n: int) -> float:
        cfg = self.cfg
        final = (self.batches_done + 1) % cfg.accum_steps == 0
        sync = nullcontext() if final or not self.dist.distributed else self.train_model.no_sync()
        with sync:
            with self._autocast():
                loss = self.task.loss(self.train_model, inputs, targets)
            scaled = loss / cfg.accum_steps
            if self.scaler is not None:
                self.scaler.scale(scaled).backward()
            else:
                scaled.backward()
        # the mean loss over all ranks: logged, and the same NaN verdict on every rank
        stats = all_reduce_sum(torch.stack([loss.detach().float() * n, loss.new_tensor(float(n), dtype=torch.float32)]))
        mean_loss = (stats[0] / stats[1]).item()
        if not math.isfinite(mean_loss):
            last = self.out / "last.pth"
            kept = (
                f"the last good checkpoint is kept: {last} (resume with --resume {last})"
                if last.is_file()
                else "no checkpoint was written before it (the run's files are removed)"
            )
            raise TrainingDivergedError(
                f"loss is {mean_loss} at step {self.global_step + 1} (epoch {self.epoch + 1}); stopped: {kept}"
            )
        self.epoch_loss_sum += stats[0].item()
        self.epoch_samples += int(stats[1].item())
        return mean_loss

    def _optimizer_step(self, loss: float) -> None:
        cfg = self.cfg
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if cfg.clip_grad:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        self.scheduler.step_update(num_updates=self.global_step)
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)
        if self.dist.is_main:
            append_csv(
                self.out / "steps.csv", dict(step=self.global_step, epoch=self.epoch + 1, loss=loss, lr=self._lr())
            )
            if self.writer is not None and self.global_step % cfg.log_every == 0:
                self.writer.add_scalar("step/loss", loss, self.global_step)
                self.writer.add_scalar("step/lr", self._lr(), self.global_step)

    def _lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _sync_batchnorm_stats(self) -> None:
        """Without SyncBatchNorm (DDP on CPUs) average the BatchNorm statistics of the processes, so that every
        process evaluates, and rank 0 saves, the same model. A collective: every process calls it before each
        evaluation and checkpoint (training itself never reads the running statistics)."""
        if self.dist.distributed and not self.sync_bn:
            distribute_bn(self.model, self.dist.world_size, reduce=True)
            if self.ema is not None:
                distribute_bn(self.ema.module, self.dist.world_size, reduce=True)

    def _evaluate(self, model: nn.Module) -> Dict[str, Any]:
        return self.task.evaluate(model, self.val_loader, self.device, self.amp_dtype, self.cfg.channels_last)

    def _end_epoch(self) -> Dict[str, Any]:
        task = self.task
        self._sync_batchnorm_stats()
        metrics = self._evaluate(self.model)
        row: Dict[str, Any] = dict(
            epoch=self.epoch + 1,
            step=self.global_step,
            train_loss=self.epoch_loss_sum / max(self.epoch_samples, 1),
            **task.row(metrics),
            lr=self._lr(),
            train_seconds=round(self.train_seconds, 2),
            skipped_images=self.skipped_images,
            val_images=metrics["images"],
            val_skipped_images=metrics["skipped_images"],
        )
        if self.ema is not None:
            row[f"ema_{task.primary_metric}"] = self._evaluate(self.ema.module)[task.primary_metric]
        self.history.append(row)
        value = metrics[task.primary_metric]
        improved = value > self.best_metric  # NaN never improves
        if improved:
            self.best_metric = value
        self.epoch += 1
        self.batches_done = 0
        self.epoch_loss_sum, self.epoch_samples = 0.0, 0
        if self.dist.is_main:
            append_csv(self.out / "metrics.csv", row)
            for key, value in row.items():  # per epoch, at the epoch's last step
                if key == "train_loss" or (key.startswith("val_") and key not in ("val_images", "val_skipped_images")):
                    self.writer.add_scalar(f"epoch/{key}", value, self.global_step)
            self.writer.flush()
            plot_curves(self.history, self.out / "training_curves.png", f"val_{task.primary_metric}",
                        task.metric_title)  # fmt: skip
            print(
                f"epoch {self.epoch}/{self.num_epochs}  train loss {row['train_loss']:.4f}  {task.epoch_line(metrics)}"
                f"  lr {row['lr']:.2e}",
                file=sys.stderr,
                flush=True,
            )
        self.save("last")
        if improved:
            self.save("best")
        return metrics

    def fit(self) -> Dict[str, Any]:
        """Train to the last epoch or iteration (or ``max_steps``); returns what ``summary.json`` holds."""
        cfg = self.cfg
        if self.dist.is_main:
            length = f"{cfg.iterations} iterations" if cfg.iterations is not None else f"{cfg.epochs} epochs"
            length += "".join(f" ({note})" for note in cfg.notes)
            print(
                f"training {cfg.model} on {cfg.data or self.task.embedded_name}: {len(self.train_set)} train / "
                f"{len(self.val_set)} val images, {len(self.classes)} classes, {self.dist.world_size} process(es) "
                f"on {self.device}, global batch {self.global_batch}, lr {self.lr:.2e}, {length}; output {self.out}",
                file=sys.stderr,
                flush=True,
            )
        try:
            while self.epoch < self.num_epochs and self.global_step < self.total_steps:
                if not self._train_epoch():
                    self._sync_batchnorm_stats()
                    self.save("last")
                    return self._stop(finished=False)
                self._end_epoch()
            return self._stop(finished=True)
        except BaseException:
            if self.dist.is_main and self.resume_ckpt is None and not self.checkpoints_written:
                self._remove_unfinished_start()
            raise
        finally:
            if self.writer is not None:
                self.writer.close()

    def _stop(self, finished: bool) -> Dict[str, Any]:
        """What every stop writes, finished or stopped by ``max_steps``: ``model.safetensors`` (the weights as
        they are, with the record to use them), the task's other model files (a classifier's ``config.json``)
        and ``summary.json``; returns the summary."""
        if self.dist.is_main:
            meta = self.meta()
            save_safetensors(self.model, self.out / "model.safetensors", meta=meta)
            self.task.save_model_files(self.model, self.out, meta)
        return self._summary(finished)

    def _summary(self, finished: bool) -> Dict[str, Any]:
        """The run's figures and the files it holds (only those that exist: ``best.pth``, ``metrics.csv`` and
        ``training_curves.png`` come with the first evaluation)."""

        def existing(name: str) -> Optional[str]:
            return str(self.out / name) if (self.out / name).exists() else None

        last = self.history[-1] if self.history else {}
        best = self.best_metric if self.history and math.isfinite(self.best_metric) else None
        summary = dict(
            task=self.task.name,
            model=self.cfg.model,
            finished=finished,
            epochs=self.epoch,
            steps=self.global_step,
            **self.task.summary(last, best),
            train_seconds=round(self.train_seconds, 2),
            world_size=self.dist.world_size,
            global_batch=self.global_batch,
            lr=self.lr,
            skipped_images=self.skipped_images,
            output=str(self.out),
            checkpoints=dict(
                last=existing("last.pth"),
                best=existing("best.pth"),
                safetensors=existing("model.safetensors"),
                timm_config=existing("config.json"),
            ),
            metrics_csv=existing("metrics.csv"),
            steps_csv=existing("steps.csv"),
            plot=existing("training_curves.png"),
        )
        if self.dist.is_main:
            write_json_atomic(self.out / "summary.json", summary)
        return summary

    def close(self) -> None:
        cleanup()
