"""Scale-out with ``torchrun``: process group setup (gloo on CPU, nccl on GPU) and DDP around a model's ``scan``.

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything here is a no-op for one process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["ScanModule", "all_reduce_mean", "barrier", "finish", "init", "wrap"]


def init(device: str) -> tuple[int, int, str]:
    """Join the process group when launched by ``torchrun``; returns ``(rank, world_size, device)``.

    ``device`` ``"cuda"`` becomes ``cuda:<local rank>``; the backend is nccl for CUDA and gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    rank = dist.get_rank()
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return rank, world, device


def finish() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over all ranks (``x`` itself for one process)."""
    if not dist.is_initialized():
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / dist.get_world_size()


class ScanModule(nn.Module):
    """``forward(x_seq) = model.scan(x_seq)``, so that DDP's hooks see the whole-sequence call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_seq: Tensor) -> Tensor:
        return self.model.scan(x_seq)


def wrap(model: nn.Module) -> nn.Module:
    """A module whose call runs ``model.scan``: DDP (gradients averaged over ranks in the backward) when
    distributed, the plain :class:`ScanModule` otherwise. Hidden states stay per rank (each rank owns its rows)."""
    m = ScanModule(model)
    if not dist.is_initialized():
        return m
    return DistributedDataParallel(m, broadcast_buffers=False)
