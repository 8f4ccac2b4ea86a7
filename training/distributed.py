"""Data-parallel training across processes: `torchrun --nproc_per_node N -m training ...`.

Every process (rank) holds full copies of G, D and G_ema and trains on its own batch of
`cfg.batch` images, drawn from its own random streams; after every backward pass the
gradients (and the loss, so that every rank's NaN guard takes the same decision) are
averaged over the ranks, so the weights stay identical everywhere, as with PyTorch's
DistributedDataParallel. Averaging by hand instead of wrapping the modules keeps R1 and
the path-length regulariser (double backward through parts of a model) simple and exact.
Rank 0 alone writes the run folder: its metrics.jsonl holds rank 0's loss terms and, as
`*_total`, each update's loss averaged over all ranks.

Without torchrun (no WORLD_SIZE in the environment, or 1) nothing here does any work, and
a run is the plain single-process one. Backends: NCCL on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

log = logging.getLogger(__name__)

RANK_SEED_STRIDE = 1_000_003  # rank r draws its streams from seed + r * stride


@dataclass(frozen=True)
class Cluster:
    """Where this process sits among the processes of one run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def seed(self, seed: int) -> int:
        """This rank's seed of a random stream (rank 0 keeps `seed` itself)."""
        return seed + self.rank * RANK_SEED_STRIDE

    def device(self, requested: torch.device) -> torch.device:
        """Each rank takes its own GPU (cuda:LOCAL_RANK); CPU ranks share the CPU."""
        if self.active and requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested

    # Collectives (no-ops in a single process) --------------------------------------------

    def average_gradients(self, parameters: list[torch.nn.Parameter], loss: Tensor) -> Tensor:
        """Average the gradients of `parameters` over the ranks in place; returns the mean loss.

        Which parameters have a gradient depends only on the loss term, so it is the same on
        every rank; those without one keep none (the optimiser skips them, as in a single
        process). One flat all-reduce carries them all.
        """
        if not self.active:
            return loss
        having = [p for p in parameters if p.grad is not None]
        flat = torch.cat(
            [p.grad.reshape(-1).float() for p in having] + [loss.detach().float()[None]]
        )
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in having:
            n = p.grad.numel()
            p.grad = flat[offset : offset + n].view_as(p.grad).to(p.grad.dtype)
            offset += n
        return flat[-1]

    def mean(self, value: Tensor) -> Tensor:
        """The mean of a scalar over the ranks."""
        if not self.active:
            return value
        total = value.detach().float().clone()
        dist.all_reduce(total)
        return total / self.world_size

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if `flag` is True on any (stop requests agree this way)."""
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def gather(self, value: object) -> list[object]:
        """Every rank's `value`, in rank order (on every rank)."""
        if not self.active:
            return [value]
        values: list[object] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def weights_agree(self, module: torch.nn.Module, device: torch.device) -> bool:
        """Whether every rank holds the same weights (a cheap fingerprint, compared exactly)."""
        if not self.active:
            return True
        fingerprint = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum()
        low, high = fingerprint.clone().to(device), fingerprint.clone().to(device)
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        return bool(low == high)


def join_cluster(device: torch.device) -> Cluster:
    """Join the process group that torchrun describes in the environment (if any)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Cluster()
    cluster = Cluster(
        rank=int(os.environ["RANK"]),
        world_size=world_size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(cluster.local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    log.info("rank %d of %d on %s", cluster.rank, world_size, cluster.device(device))
    return cluster


def leave_cluster(cluster: Cluster) -> None:
    if cluster.active and dist.is_initialized():
        dist.destroy_process_group()
