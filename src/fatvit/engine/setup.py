"""A run's set-up: the device and precision, the model wrapped for training (DDP, SyncBN, EMA, compile), the
optimizer and the learning-rate schedule."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from timm.optim import create_optimizer_v2, get_optimizer_class
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, distribute_bn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..config import RunConfig
from ..distributed import DistInfo
from ..errors import FatvitError

__all__ = [
    "AMP_DTYPES",
    "resolve_amp",
    "create_optimizer",
    "create_schedule",
    "TrainModels",
    "wrap_model",
    "Optimization",
]

_log = logging.getLogger("fatvit.train")

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}

#: torch optimizers with a fused form (one kernel over all parameters, the same update), used where it applies
FUSED_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def resolve_amp(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of an ``amp`` setting: ``auto`` is bf16 on CUDA devices that support it, else fp16
    on CUDA, and none (fp32) on CPUs."""
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return AMP_DTYPES[amp]


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


def create_schedule(optimizer: torch.optim.Optimizer, cfg: RunConfig, total_steps: int, steps_per_epoch: int,
                    scale: float) -> Any:  # fmt: skip
    """timm's schedule of ``cfg`` over ``total_steps`` optimizer steps, stepped per update; the warmup and final
    lrs are scaled by ``scale`` as the peak lr is (the linear scaling rule, as the authors' main.py does)."""
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else cfg.warmup_epochs * steps_per_epoch
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=cfg.sched,
        num_epochs=total_steps,  # in optimizer steps: the schedule is stepped per update
        warmup_epochs=warmup,
        warmup_lr=cfg.warmup_lr * scale,
        min_lr=cfg.min_lr * scale,
        decay_milestones=[round(m * steps_per_epoch) for m in cfg.decay_milestones],
        decay_rate=cfg.poly_power if cfg.sched == "poly" else cfg.decay_rate,
        step_on_epochs=False,
        updates_per_epoch=1,
    )
    return scheduler


@dataclass
class TrainModels:
    """The model of a run in its forms: ``model`` (checkpoints, EMA and evaluation use it), ``train_model`` (what
    the loop calls: DDP, SyncBN, compiled), ``ema`` (the EMA copy, if any)."""

    model: nn.Module
    train_model: nn.Module
    ema: Optional[ModelEmaV3]
    dist: DistInfo

    @property
    def sync_bn(self) -> bool:
        """SyncBatchNorm (DDP on GPUs); without it, the processes' statistics are averaged (:meth:`sync_batchnorm`)."""
        return self.dist.distributed and self.dist.device.type == "cuda"

    def sync_batchnorm(self) -> None:
        """Without SyncBatchNorm (DDP on CPUs) average the BatchNorm statistics of the processes, so that every
        process evaluates, and rank 0 saves, the same model. A collective: every process calls it before each
        evaluation and checkpoint (training itself never reads the running statistics)."""
        if self.dist.distributed and not self.sync_bn:
            distribute_bn(self.model, self.dist.world_size, reduce=True)
            if self.ema is not None:
                distribute_bn(self.ema.module, self.dist.world_size, reduce=True)


def wrap_model(model: nn.Module, cfg: RunConfig, dist: DistInfo, find_unused_parameters: bool) -> TrainModels:
    """``model`` on the run's device, channels-last, with gradient checkpointing, EMA, DDP (SyncBN on GPUs) and
    ``torch.compile`` as ``cfg`` asks."""
    if cfg.grad_checkpointing:  # the model's, or its backbone's (a detector's FAT)
        owner = next((m for m in model.modules() if hasattr(m, "set_grad_checkpointing")), None)
        if owner is None:
            raise FatvitError(f"{cfg.model} has no gradient checkpointing (set grad_checkpointing=false)")
        owner.set_grad_checkpointing(True)
    device = dist.device
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None
    models = TrainModels(model, model, ema, dist)  # train_model is wrapped below, as cfg asks
    if dist.distributed:
        if models.sync_bn:
            models.train_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif dist.is_main:
            _log.info(
                "SyncBatchNorm needs GPUs in PyTorch: BatchNorm statistics on %s are averaged over the "
                "processes before each evaluation and checkpoint", device,
            )  # fmt: skip
        models.train_model = DistributedDataParallel(
            models.train_model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters,
        )
    if cfg.compile:
        models.train_model = torch.compile(models.train_model)
    return models


@dataclass
class Optimization:
    """The optimizer, its schedule and the AMP scaler of a run, with the lr scaled by the global batch."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Optional[torch.amp.GradScaler]
    #: the peak lr: ``cfg.lr`` per ``lr_base_batch`` images, times the global batch
    lr: float
    global_batch: int

    @classmethod
    def build(cls, model: nn.Module, cfg: RunConfig, dist: DistInfo, amp_dtype: Optional[torch.dtype],
              total_steps: int, steps_per_epoch: int) -> Optimization:  # fmt: skip
        global_batch = cfg.batch_size * cfg.accum_steps * dist.world_size
        # linear scaling rule, applied to the warmup and final lrs too (as the authors' main.py does)
        scale = global_batch / cfg.lr_base_batch
        lr = cfg.lr * scale
        optimizer = create_optimizer(model, cfg.opt, lr=lr, weight_decay=cfg.weight_decay, no_decay_1d=cfg.no_decay_1d)
        scheduler = create_schedule(optimizer, cfg, total_steps, steps_per_epoch, scale)
        scaler = torch.amp.GradScaler(dist.device.type) if amp_dtype == torch.float16 else None
        return cls(optimizer, scheduler, scaler, lr, global_batch)

    def current_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, model: nn.Module, clip_grad: Optional[float], global_step: int) -> None:
        """One update from the accumulated gradients (unscaled, clipped), then the schedule at ``global_step``."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if clip_grad:
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step_update(num_updates=global_step)
