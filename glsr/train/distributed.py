"""Distributed training under ``torchrun``: the process's place in the group (:class:`DistInfo`), joining the group
(gloo on CPU, nccl on CUDA), a barrier and the default thread count per process."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1`` (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    dev = f"cuda:{local_rank}" if use_cuda else "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local_rank, local_world, dev)


def barrier(dist: DistInfo) -> None:
    """Wait for every process of the group (nothing to wait for alone)."""
    if dist.world > 1:
        torch.distributed.barrier()


def default_threads(dist: DistInfo) -> int:
    """The CPU threads of one process: the cores shared among the processes of this machine."""
    return max(1, (os.cpu_count() or 1) // max(1, dist.local_world))
