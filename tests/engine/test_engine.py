"""The training engine driven by a minimal fake task (no real model, no image): it resumes exactly, logs, picks
the best epoch, saves, and words its errors without the command's flags."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Sequence

import pytest
import torch
from torch import nn

from conftest import assert_resumed_as_uninterrupted
from fatvit.config import RunConfig
from fatvit.data import Splits, collate_skipping
from fatvit.engine import OutputNotEmptyError, Trainer, TrainingDivergedError
from fatvit.engine.state import ResumeChangesKeysError, read_training_checkpoint, resume_config
from fatvit.tasks.base import Metric, Task


@dataclass
class FakeConfig(RunConfig):
    TASK: ClassVar[str] = "fake"
    model: str = "mlp"
    epochs: Optional[int] = 4
    batch_size: int = 4
    lr: float = 1e-2
    lr_base_batch: int = 4
    warmup_epochs: float = 0
    workers: int = 0
    channels_last: bool = False
    log_every: int = 1


def identity(x: Any) -> Any:
    return x


class FakeTask(Task):
    """Points in R^4 of two classes; an MLP with dropout (so that exact resume needs the RNG states); a validation
    metric read from ``metrics`` in turn, so that the best epoch is known in advance."""

    name = "fake"
    primary_metric = "score"
    metric_title = "score"
    embedded_name = "fake points"

    def __init__(self, cfg: FakeConfig, metrics: Sequence[float] = (0.2, 0.8, 0.5, 0.6), start: int = 0,
                 nan_loss: bool = False) -> None:  # fmt: skip
        super().__init__(cfg)
        self.scores, self.calls, self.nan_loss = list(metrics), start, nan_loss

    def build_splits(self) -> Splits:
        g = torch.Generator().manual_seed(0)
        points = torch.randn(36, 4, generator=g)
        labels = (points[:, 0] > 0).long().tolist()
        items = [(p, y) for p, y in zip(points, labels)]
        return Splits(items[:28], items[28:], ["neg", "pos"])

    def build_model(self, classes: Sequence[str], model_kwargs: Dict[str, Any], load_weights: bool = True) -> nn.Module:
        return nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, len(classes)))

    def mean_std(self, model: nn.Module) -> Any:
        return (0.0,), (1.0,)

    def transforms(self, mean: Sequence[float], std: Sequence[float]) -> Any:
        return identity, identity

    def collate(self, batch: Sequence[Any]) -> Any:
        return collate_skipping(batch)

    def setup_loss(self, classes: Sequence[str]) -> None:
        self.criterion = nn.CrossEntropyLoss()

    def prepare_batch(self, inputs: Any, targets: Any, device: torch.device, channels_last: bool) -> Any:
        return inputs.to(device), targets.to(device)

    def loss(self, model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
        loss = self.criterion(model(inputs), targets)
        return loss * math.nan if self.nan_loss else loss

    def evaluate(self, model: nn.Module, loader: Any, device: torch.device, amp_dtype: Any,
                 channels_last: bool) -> Dict[str, Any]:  # fmt: skip
        images = sum(len(targets) for _, targets, _ in loader)
        score = self.scores[self.calls % len(self.scores)]
        self.calls += 1
        return dict(score=score, points=images, images=images, skipped_images=0)

    def metrics(self) -> Sequence[Metric]:
        return [Metric("score", "score", ".2f"), Metric("points", "", ".0f", in_summary=False)]

    def meta(self, model_kwargs: Dict[str, Any], splits: Splits, mean: Sequence[float], std: Sequence[float],
             model: nn.Module) -> Dict[str, Any]:  # fmt: skip
        return dict(task="fake", model="mlp", classes=list(splits.classes))


def fake_trainer(tmp_path, name: str = "run", max_steps: Optional[int] = None, **task_kwargs: Any) -> Trainer:
    cfg = FakeConfig(output=str(tmp_path / name))
    return Trainer(cfg, max_steps=max_steps, task=FakeTask(cfg, **task_kwargs))


def rows(path) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_fake_task_trains_logs_picks_the_best_epoch_and_saves(tmp_path):
    trainer = fake_trainer(tmp_path)
    summary = trainer.fit()
    out = tmp_path / "run"
    assert summary["finished"] and summary["epochs"] == 4 and summary["steps"] == 4 * 7  # 28 points, batches of 4
    assert summary["best_score"] == 0.8 and summary["final_score"] == 0.6 and "final_points" not in summary
    assert json.loads((out / "summary.json").read_text()) == summary
    best, last = read_training_checkpoint(out / "best.pth"), read_training_checkpoint(out / "last.pth")
    assert (best["epoch"], best["best_metric"]) == (2, 0.8) and last["epoch"] == 4
    assert last["task"] == "fake" and last["config"]["task"] == "fake" and last["classes"] == ["neg", "pos"]
    assert [float(r["val_score"]) for r in rows(out / "metrics.csv")] == [0.2, 0.8, 0.5, 0.6]
    assert [r["val_points"] for r in rows(out / "metrics.csv")] == ["8"] * 4
    steps = rows(out / "steps.csv")
    assert [int(r["step"]) for r in steps] == list(range(1, 29)) and all(math.isfinite(float(r["loss"])) for r in steps)
    assert (out / "training_curves.png").stat().st_size > 0 and any((out / "tensorboard").iterdir())
    assert summary["checkpoints"]["safetensors"] == str(out / "model.safetensors")
    assert summary["checkpoints"]["timm_config"] is None  # the fake task writes no other model file


def test_a_fake_task_resumes_exactly(tmp_path):
    """Stopped mid-epoch (max_steps) and resumed, the run ends with the weights and the log of an uninterrupted
    one: model, optimizer, schedule, dropout's RNG and the data order all continue."""
    full = fake_trainer(tmp_path, "full")
    full.fit()
    part = fake_trainer(tmp_path, "part", max_steps=10)
    assert part.fit()["finished"] is False
    cfg, ckpt = resume_config(tmp_path / "part" / "last.pth", cls=FakeConfig)
    resumed = Trainer(cfg, task=FakeTask(cfg, start=len(ckpt["history"])), checkpoint=ckpt)
    assert resumed.fit()["finished"]
    assert_resumed_as_uninterrupted(full, resumed)


def test_engine_errors_are_typed_and_name_no_flag(tmp_path):
    fake_trainer(tmp_path, max_steps=2).fit()
    with pytest.raises(OutputNotEmptyError) as err:
        fake_trainer(tmp_path)
    assert err.value.resumable == tmp_path / "run" / "last.pth" and "--" not in str(err.value)
    with pytest.raises(ResumeChangesKeysError) as err:
        resume_config(tmp_path / "run" / "last.pth", ["lr=0.5"], cls=FakeConfig)
    assert err.value.keys == ["lr"] and "--" not in str(err.value)


def test_a_diverged_fake_run_before_its_first_checkpoint_leaves_nothing(tmp_path):
    with pytest.raises(TrainingDivergedError) as err:
        fake_trainer(tmp_path, nan_loss=True).fit()
    assert err.value.last is None and "loss is nan at step 1" in str(err.value)
    assert not (tmp_path / "run").exists()


def test_a_lower_is_better_primary_metric_picks_the_lowest_epoch(tmp_path):
    class LowerIsBetter(FakeTask):
        def metrics(self) -> Sequence[Metric]:
            return [Metric("score", "score", higher_is_better=False)]

    cfg = FakeConfig(output=str(tmp_path / "run"), epochs=3)
    summary = Trainer(cfg, task=LowerIsBetter(cfg, metrics=(0.5, 0.3, 0.4))).fit()
    assert summary["best_score"] == 0.3
    assert read_training_checkpoint(tmp_path / "run" / "best.pth")["epoch"] == 2
