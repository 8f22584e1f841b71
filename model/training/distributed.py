"""Data-parallel training under torchrun (DESIGN.md section 3): one process per device (NCCL on
CUDA, gloo on CPU), or a single process when launched plainly.

`setup_distributed` / `teardown_distributed` join and leave the process group; `gather` and
`barrier` are the two collectives the run layer needs; `wrap_ddp` puts DistributedDataParallel
around a network, and `no_sync` skips its gradient all-reduce on every micro-batch of a
gradient-accumulation step but the last.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from fd2talk.core.device import resolve_device


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: its rank, the number of processes, its device."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1; pick this process's device."""
    device = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(0, 1, device)
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), device)


def teardown_distributed(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def gather(d: Dist, obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank (a picklable object)."""
    if d.world == 1:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def wrap_ddp(model: torch.nn.Module, d: Dist) -> torch.nn.Module:
    """DDP around `model` under torchrun; the model itself otherwise."""
    if d.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.device(d.device).index] if d.device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids)


def no_sync(models, skip: bool) -> contextlib.ExitStack:
    """With `skip`, every DDP wrapper of `models` leaves its gradients local (`no_sync`) for
    the forward and backward inside; else (the last micro-batch of a step, or no DDP) nothing
    changes and DDP all-reduces as it always does. The gradients summed over a step's
    micro-batches are then all-reduced once."""
    stack = contextlib.ExitStack()
    if skip:
        for m in models:
            if hasattr(m, "no_sync"):  # a DDP wrapper
                stack.enter_context(m.no_sync())
    return stack
