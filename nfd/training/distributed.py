"""Data-parallel training over processes started by ``torchrun`` (one per GPU, or several CPU processes on gloo).

Every rank computes the same global batch of a step from ``(seed, step)`` and takes its share (examples and latents
``[rank::world]``), so a run can resume with another number of processes and still see the same data. Gradients are
averaged by an explicit all-reduce before each optimiser step instead of wrapping the models in
``DistributedDataParallel``: one step runs D three times, G twice and R1's double backward, which the DDP wrapper's
one-forward-one-backward bookkeeping does not support.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from nfd.errors import NfdError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, metrics, previews and snapshots."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def init_from_env(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment (if any); returns the world and the
    device of this rank (``cuda:LOCAL_RANK`` on GPUs)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise NfdError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA devices are visible")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(rank=rank, size=size, local_rank=local), device


def shutdown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: torch.nn.Module, world: World) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if world.active:
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def average_gradients(module: torch.nn.Module, world: World) -> None:
    """Replace every parameter's gradient by its mean over the ranks (one flat all-reduce); missing ones count 0."""
    if not world.active:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p)
        offset += n


def average_metrics(metrics: dict[str, float], world: World, device: torch.device) -> dict[str, float]:
    """The mean of each metric over the ranks (what a single process would log for the global batch)."""
    if not world.active:
        return metrics
    keys = sorted(metrics)
    t = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, (t / world.size).tolist()))


def max_divergence(module: torch.nn.Module, world: World) -> float:
    """The largest absolute difference between this rank's parameters and rank 0's (0 when in sync)."""
    if not world.active:
        return 0.0
    flat = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    worst = (flat - ref).abs().max().reshape(1)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return float(worst)
