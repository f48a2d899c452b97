"""Distributed data parallel plumbing: this process's place in a torchrun job, buffer sync, replica check."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (or the single-process default)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_context() -> Distributed:
    """Where torchrun put this process: RANK, WORLD_SIZE, LOCAL_RANK from the environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    return Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(ctx: Distributed, device: torch.device) -> torch.device:
    """Join the process group: gloo on CPU, nccl on CUDA (one GPU per local rank, which it returns);
    torchrun provides MASTER_ADDR/PORT."""
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics differ per shard)."""
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def replica_max_diff(model: nn.Module) -> float:
    """Largest |value − rank 0's value| over all parameters and float buffers: 0 when the replicas agree."""
    tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)
