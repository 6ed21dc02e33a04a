"""One training process, or several through ``torchrun`` (PyTorch DDP: ``gloo`` on CPU, ``nccl`` on CUDA).

:func:`init_distributed` reads ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (set by ``torchrun``) and
``BONEAGE_DEVICE`` (``cpu`` forces the CPU); rank 0 (``Dist.main``) validates, logs and saves.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and os.environ.get("BONEAGE_DEVICE", "auto") != "cpu"
    if world == 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank=rank, world=world, device=torch.device(f"cuda:{local}" if cuda else "cpu"))


def autocast(d: Dist, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=d.device.type, dtype=torch.bfloat16)
