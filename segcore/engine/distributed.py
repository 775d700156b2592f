"""Distributed training setup for `torchrun --nproc_per_node=N -m segcore train ...`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything runs in one process. NCCL on GPUs, gloo on
CPUs. Only rank 0 writes files; metrics are reduced by summing (confusion matrices, loss sums and counts).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_type: str) -> DistributedContext:
    """Join the process group torchrun describes (no-op when WORLD_SIZE is unset or 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Sum a tensor over all ranks (returns it unchanged in a single process)."""
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def teardown_distributed(context: DistributedContext | None = None) -> None:
    """Leave the process group (any this process joined, when `context` is None). Left to interpreter exit, gloo's
    threads were destroyed while still joinable: "terminate called without an active exception" and exit code -6
    on one rank of a finished run, seen once on a loaded machine."""
    if (context is None or context.enabled) and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
