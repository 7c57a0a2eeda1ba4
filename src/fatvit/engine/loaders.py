"""A run's data as the loop reads it: seeded sets, resumable samplers and loaders, and the run's length in steps."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from torch.utils.data import DataLoader

from ..config import RunConfig
from ..data import ResumableSampler, SeededDataset, Splits, make_loader
from ..distributed import DistInfo
from ..errors import FatvitError
from ..tasks.base import Task

__all__ = ["RunData"]


@dataclass
class RunData:
    """The train and val sets with their transforms, their samplers, the val loader, and the run's length."""

    cfg: RunConfig
    task: Task
    train_set: SeededDataset
    val_set: SeededDataset
    train_sampler: ResumableSampler
    val_sampler: ResumableSampler
    val_loader: DataLoader
    micro_batches_per_epoch: int
    steps_per_epoch: int
    #: the run's length in optimizer steps, and the epochs it takes (the last may end early)
    total_steps: int
    num_epochs: int

    @classmethod
    def build(cls, task: Task, splits: Splits, mean: Sequence[float], std: Sequence[float], cfg: RunConfig,
              dist: DistInfo) -> RunData:  # fmt: skip
        train_tf, val_tf = task.transforms(mean, std)
        joint = task.joint_transform
        train_set = SeededDataset(splits.train, train_tf, cfg.seed, joint=joint)
        val_set = SeededDataset(splits.val, val_tf, cfg.seed, joint=joint)
        world, rank = dist.world_size, dist.rank
        groups = task.batch_groups(splits.train)  # e.g. detection's landscape and portrait images
        train_sampler = ResumableSampler(
            len(train_set), True, cfg.seed, world, rank, groups=groups, batch_size=cfg.batch_size
        )
        # each validation image once, on one process: exact metrics
        val_sampler = ResumableSampler(len(val_set), False, cfg.seed, world, rank, pad=False)
        micro_batches = len(train_sampler) // cfg.batch_size
        if micro_batches < cfg.accum_steps:
            raise FatvitError(
                f"the train set has {len(train_set)} images: too few for one step of "
                f"{cfg.batch_size} x {cfg.accum_steps} per process on {world} process(es)"
            )
        steps_per_epoch = micro_batches // cfg.accum_steps
        if cfg.iterations is not None:
            total_steps, num_epochs = cfg.iterations, math.ceil(cfg.iterations / steps_per_epoch)
        else:
            total_steps, num_epochs = cfg.epochs * steps_per_epoch, cfg.epochs
        val_loader = make_loader(
            val_set, val_sampler, cfg.batch_size, cfg.workers, drop_last=False, collate_fn=task.collate
        )
        return cls(cfg, task, train_set, val_set, train_sampler, val_sampler, val_loader, micro_batches,
                   steps_per_epoch, total_steps, num_epochs)  # fmt: skip

    def train_loader(self, epoch: int, batches_done: int) -> Any:
        """The rest of ``epoch``'s training batches, from micro-batch ``batches_done`` on."""
        cfg = self.cfg
        self.train_set.set_epoch(epoch)
        self.train_sampler.set_epoch(epoch, start=batches_done * cfg.batch_size)
        return make_loader(self.train_set, self.train_sampler, cfg.batch_size, cfg.workers, drop_last=True,
                           collate_fn=self.task.collate)  # fmt: skip
