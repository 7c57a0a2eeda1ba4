"""Process-group set-up for ``torchrun`` (NCCL on GPUs, Gloo on CPUs) and cross-rank reductions."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "all_reduce_sum", "cleanup", "pick_device"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """The device a setting names (auto: the first CUDA device if any, else the CPU)."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            from .errors import FatvitError

            raise FatvitError(f"device {preference!r} asked for, but no CUDA device is available")
        # under torchrun each process takes its local rank's GPU; alone, the one named (cuda:N) or the first
        index = local_rank if int(os.environ.get("WORLD_SIZE", "1")) > 1 else torch.device(preference).index or 0
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device(preference)


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, dev)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks (a no-op in one process)."""
    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_list(items: list) -> list:
    """The concatenation of every rank's ``items`` (picklable objects), in rank order; ``items`` in one process."""
    if dist.is_available() and dist.is_initialized():
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, items)
        return [x for part in gathered for x in part]
    return list(items)
