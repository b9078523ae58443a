"""Multi-process training under ``torchrun``: process group, sharding, rank-0-only I/O.

``torchrun --nproc-per-node N -m spikeclip_deploy.cli train ...`` runs the same command in N
processes (gloo on CPU, nccl on GPUs); a single plain process needs no launcher.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    def device(self, spec: str = "auto") -> torch.device:
        """``auto``: ``cuda:LOCAL_RANK`` where CUDA is available, else the CPU; ``cuda`` under
        torchrun: this process's GPU."""
        if spec == "auto":
            spec = f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"
        elif spec == "cuda" and self.world > 1:
            spec = f"cuda:{self.local_rank}"
        device = torch.device(spec)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: CUDA is not available here; use --device cpu")
        return device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's share of a batch of indices (all ranks draw the same permutation)."""
        return index[self.rank::self.world]

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.world == 1:
            return model
        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def init_distributed(device: str = "auto") -> Dist:
    """Join the process group torchrun describes in the environment, if any: nccl when the
    processes train on GPUs (``device`` auto with CUDA, or cuda), gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device {device} under torchrun: use auto, cuda or cpu (each process "
                          f"takes cuda:LOCAL_RANK)")
    gpus = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if gpus else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if gpus:
        torch.cuda.set_device(local)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local)


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast: on the CPU always (fast with AMX), on CUDA where the GPU supports it."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        log.warning("--bf16: %s does not support bfloat16; training in float32", device)
        return False
    return True
