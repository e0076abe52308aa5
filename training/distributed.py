"""torchrun / DDP: detect the launch, initialise the process group, small collective helpers.

Launched by ``torchrun``, each process sees RANK, LOCAL_RANK and WORLD_SIZE in its
environment; that is read here and nowhere else. Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: torch sees no CUDA device")
    return torch.device(name)


def setup(device_name: str) -> Context:
    """Join the process group when launched by torchrun; otherwise a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(device_name)
    if world_size > 1:
        if device.type == "cuda":
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(rank, world_size, device)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_objects(obj: Any, ctx: Context) -> list[Any]:
    """``obj`` from every rank, in rank order (just ``[obj]`` without DDP)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def average_buffers(module: torch.nn.Module, ctx: Context) -> None:
    """Average floating-point buffers (BatchNorm statistics) over ranks, so every rank ends identical.

    DDP broadcasts rank 0's buffers before each forward, but the last forward of an
    epoch leaves each rank with statistics of its own batch.
    """
    if not ctx.distributed:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= ctx.world_size


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` [B, ...] concatenated in rank order, [B x world, ...], with
    gradients flowing back to each rank's own part (``tensor`` itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor))


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
