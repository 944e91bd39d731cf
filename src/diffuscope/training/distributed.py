"""Data parallelism over N processes with torch.distributed: gloo on CPU, NCCL on GPUs.

The same command runs on 1 process or under a launcher that sets RANK / WORLD_SIZE / LOCAL_RANK
(``torchrun --nproc_per_node N -m diffuscope train ...`` or ``accelerate launch --num_processes N -m diffuscope
train ...``). Every rank builds the same *global* batch (a pure function of seed and step) and takes its own
contiguous shard; gradients are averaged across ranks, so N processes compute the same update as one process with
the same global batch, up to floating-point summation order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from diffuscope.checks.errors import UsageError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group when launched by torchrun/accelerate; a no-op for one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local), device


def shard(batch, d: Dist):
    """This rank's contiguous slice of a global batch (a tensor or a Cond; None stays None)."""
    if not d.enabled or batch is None:
        return batch
    if len(batch) % d.world_size:
        raise UsageError(f"--batch-size {len(batch)} must be divisible by the number of processes ({d.world_size})")
    per = len(batch) // d.world_size
    return batch[d.rank * per : (d.rank + 1) * per]


def average_gradients(params: list[torch.nn.Parameter], d: Dist) -> None:
    """All-reduce the gradients (one flat buffer) and divide by the world size."""
    if not d.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= d.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_across(value: Tensor, d: Dist) -> Tensor:
    if not d.enabled:
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / d.world_size


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def replicas_identical(params: list[torch.nn.Parameter], d: Dist) -> bool:
    """True when every rank holds exactly rank 0's weights (checked at the end of a data-parallel run)."""
    if not d.enabled:
        return True
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    ref = flat.clone()
    dist.broadcast(ref, 0)
    diff = (flat - ref).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return bool(diff == 0)
