"""Multi-process data-parallel training under torchrun, and its single-process stand-in.

`torchrun --nproc_per_node=N -m edgekd compress recipe.yaml` (or `edgekd compress
--nproc N`) runs every training phase with DistributedDataParallel: each rank
trains on its shard of every batch (`data.batch_size` stays the global batch),
gradients are averaged, only rank 0 writes files and prints, and every rank
computes the same pruning decisions from the same (synchronized) weights."""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from edgekd.errors import InputError

# A rank that dies must not leave the others waiting forever in a collective.
DEFAULT_TIMEOUT_S = int(os.environ.get("EDGEKD_DIST_TIMEOUT", "600"))


class Distributed:
    """Rank, world size and the few collectives the runner needs; no-ops in a single process."""

    def __init__(self, rank: int = 0, world_size: int = 1):
        self.rank, self.world_size = rank, world_size

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: torch.device) -> Distributed:
        """Join the process group torchrun describes in the environment (WORLD_SIZE, RANK, …)."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        if not dist.is_available():
            raise InputError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=timedelta(seconds=DEFAULT_TIMEOUT_S))
        if device.type == "cpu":  # share the cores instead of oversubscribing them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
        return cls(dist.get_rank(), world_size)

    def device_for_rank(self, device: torch.device) -> torch.device:
        if device.type == "cuda" and self.enabled:
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return device

    def wrap(self, model: nn.Module) -> nn.Module:
        """A fresh DDP wrapper for this phase: after pruning, shapes changed, so it is never reused."""
        if not self.enabled:
            return model
        device_ids = [model_device(model).index] if model_device(model).type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """Average gradients DDP doesn't own (adapters, auxiliary heads, peers) across ranks."""
        if not self.enabled:
            return
        for param in params:
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= self.world_size

    def mean(self, value: float, device: torch.device) -> float:
        """The mean of a scalar over ranks (every rank gets it, so all stop together on a NaN)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
