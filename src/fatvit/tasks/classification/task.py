"""Classification as a task of the training engine: ImageNet-style folders or the digits, timm's transforms,
Mixup/CutMix and label smoothing, top-1/top-5."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from timm.data import Mixup, create_transform
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from ...checkpoint import load_finetune, model_meta
from ...data import Splits, collate_skipping
from ...models import create_model
from ..base import Metric, Task
from .data import build_splits
from .metrics import METRICS, evaluate

__all__ = ["ClassificationTask"]

_log = logging.getLogger("fatvit.train")


class ClassificationTask(Task):
    name = "classify"
    primary_metric = "top1"
    metric_title = "val top-1 (%)"
    embedded_name = "the embedded digits set"

    def build_splits(self) -> Splits:
        return build_splits(self.cfg.data)

    def build_model(self, classes: Sequence[str], model_kwargs: Dict[str, Any], load_weights: bool = True) -> nn.Module:
        cfg = self.cfg
        model = create_model(cfg.model, num_classes=len(classes), **model_kwargs)
        if cfg.finetune and load_weights:
            classifier = model.pretrained_cfg.get("classifier", "head")
            if load_finetune(model, cfg.finetune, cfg.model, [classifier + "."]):
                _log.info("fine-tuning: new classifier for %d classes", len(classes))
        return model

    def mean_std(self, model: nn.Module) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        data_cfg = model.pretrained_cfg
        return tuple(data_cfg.get("mean", (0.485, 0.456, 0.406))), tuple(data_cfg.get("std", (0.229, 0.224, 0.225)))

    def transforms(self, mean: Sequence[float], std: Sequence[float]) -> Tuple[Callable, Callable]:
        cfg = self.cfg
        mean_std = dict(mean=mean, std=std)
        train_tf = create_transform(
            cfg.img_size,
            is_training=True,
            scale=tuple(cfg.scale),
            hflip=cfg.hflip,
            color_jitter=cfg.color_jitter,
            auto_augment=cfg.auto_augment,
            interpolation=cfg.interpolation,
            re_prob=cfg.reprob,
            re_mode=cfg.remode,
            **mean_std,
        )
        val_tf = create_transform(
            cfg.img_size, is_training=False, interpolation=cfg.interpolation, crop_pct=cfg.crop_pct, **mean_std
        )
        return train_tf, val_tf

    def collate(self, batch: Sequence[Any]) -> Tuple[Any, Any, int]:
        return collate_skipping(batch)

    def setup_loss(self, classes: Sequence[str]) -> None:
        cfg = self.cfg
        self.mixup: Optional[Mixup] = None
        if cfg.mixup > 0 or cfg.cutmix > 0:
            self.mixup = Mixup(
                mixup_alpha=cfg.mixup,
                cutmix_alpha=cfg.cutmix,
                switch_prob=cfg.mixup_switch_prob,
                label_smoothing=cfg.smoothing,
                num_classes=len(classes),
            )
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        elif cfg.smoothing > 0:
            self.criterion = LabelSmoothingCrossEntropy(cfg.smoothing)
        else:
            self.criterion = nn.CrossEntropyLoss()

    def prepare_batch(self, inputs: Any, targets: Any, device: torch.device, channels_last: bool) -> Tuple[Any, Any]:
        if self.mixup is not None and len(targets) % 2:
            # Mixup pairs samples; a batch that lost an unreadable image may be odd
            inputs, targets = inputs[:-1], targets[:-1]
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if self.mixup is not None and len(targets):
            inputs, targets = self.mixup(inputs, targets)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs, targets

    def loss(self, model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
        return self.criterion(model(inputs), targets)

    def evaluate(
        self, model: nn.Module, loader: Any, device: torch.device, amp_dtype: Optional[torch.dtype], channels_last: bool
    ) -> Dict[str, Any]:
        return evaluate(model, loader, device, amp_dtype, channels_last).as_dict()

    def metrics(self) -> Sequence[Metric]:
        return METRICS

    def save_model_files(self, model: nn.Module, folder: Path, meta: Dict[str, Any]) -> None:
        """timm's ``config.json`` beside ``model.safetensors``: the run folder loads with
        ``timm.create_model("local-dir:FOLDER", pretrained=True)`` (see :mod:`fatvit.hub`)."""
        from ...hub import TIMM_CONFIG, save_timm_config

        save_timm_config(model, folder / TIMM_CONFIG, meta)

    def meta(self, model_kwargs: Dict[str, Any], splits: Splits, mean: Sequence[float],
             std: Sequence[float], model: nn.Module) -> Dict[str, Any]:  # fmt: skip
        cfg = self.cfg
        return model_meta(
            cfg.model, model_kwargs, splits.classes, cfg.img_size, cfg.crop_pct, cfg.interpolation, mean, std,
            getattr(model, "interaction", None) or None,
        )  # fmt: skip
