"""Multi-GPU and multi-node training through `torchrun` (DistributedDataParallel).

`torchrun --nproc_per_node N -m convscope.cli classify train ...` starts N processes with RANK,
LOCAL_RANK and WORLD_SIZE set; each trains on its own 1/N of the training images (a fixed
interleaved shard, all of one length: see `shard`), gradients are averaged every step, and only
rank 0 writes the run folder.
The global batch is N x --batch-size. Backend: NCCL on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def from_env() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def setup(world: World, device: torch.device) -> torch.device:
    """Join the process group (once); on CUDA each process takes the GPU of its local rank."""
    if not world.active:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def shard(world: World, n: int) -> torch.Tensor:
    """int64 indices of this process's training images: every size-th of the n, from its rank on,
    wrapping around to the first ones so that all shards are equally long (as DistributedSampler
    pads). Unequal shards give unequal step counts under drop_last, and a process with a step more
    waits forever in its gradient all-reduce (51 images, 2 processes, --batch-size 13 hung)."""
    per = -(-n // world.size)  # ceil
    return torch.arange(world.rank, per * world.size, world.size) % n


def barrier(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.barrier()


def all_sum(world: World, *values: torch.Tensor) -> list[torch.Tensor]:
    """Sums across processes (in place on copies); identity in a single process."""
    if not world.active:
        return list(values)
    out = []
    for v in values:
        v = v.detach().clone().float()
        dist.all_reduce(v)
        out.append(v)
    return out


def teardown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()
