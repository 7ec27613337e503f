"""Data-parallel training over several processes, with PyTorch's own DistributedDataParallel:

    torchrun --standalone --nproc_per_node 2 -m agilenn.training.cli --threads 1 ...   # 2 CPU processes (gloo)
    torchrun --standalone --nproc_per_node 4 -m agilenn.training.cli --device cuda ...  # 4 GPUs (nccl)

What is sharded, and how each stage stays the single-process algorithm:
- Every rank holds the (small) dataset and draws the same shuffles and augmentations from the same
  seeded generator, then keeps its stride of each global batch (``--batch-size`` is the global batch,
  so the learning-rate schedules mean the same as in one process). DDP averages the gradients.
- BatchNorm statistics are per shard during training (plain DDP) and rank 0's running statistics
  are broadcast to every rank at the end of each stage, so all ranks continue from one model.
- Preselection (XAI, Algorithm 1) splits its samples into contiguous chunks, computes the
  per-sample channel importance on each rank and gathers the rows back in order: the channel order
  is computed from exactly the rows one process would have (tests/training/test_training_distributed.py).
- The joint stage's XAI losses (importance with create_graph=True through the frozen evaluator) are
  per sample, so each rank computes them on its shard; their gradients reach the extractor through
  the DDP-wrapped model and are averaged like any other.
- Only rank 0 writes checkpoints, logs, the bundle and the report.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world_from_env() -> Dist:
    """What torchrun says about this process (no process group is started)."""
    return Dist(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                int(os.environ.get("LOCAL_RANK", "0")))


def init(device: str) -> tuple[Dist, str]:
    """Join torchrun's process group if there is one; returns it and the device this rank uses."""
    d = world_from_env()
    if not d.enabled:
        return d, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        device = f"cuda:{d.local_rank}"
        torch.cuda.set_device(d.local_rank)
    return Dist(dist.get_rank(), dist.get_world_size(), d.local_rank), device


def wrap(model: torch.nn.Module, d: Dist, device: torch.device) -> torch.nn.Module:
    """The module to call in training steps: DDP around ``model`` when sharded, else ``model``."""
    if not d.enabled:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shard(n: int, d: Dist) -> slice:
    """This rank's contiguous chunk of n items (chunks in rank order cover 0..n exactly once)."""
    return slice(n * d.rank // d.world, n * (d.rank + 1) // d.world)


def gather_rows(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Every rank's rows of ``t``, concatenated in rank order, on every rank (CPU tensors)."""
    if not d.enabled:
        return t
    parts: list = [None] * d.world
    dist.all_gather_object(parts, t.detach().cpu())  # chunks may differ in length by one row
    return torch.cat(parts)


def sync_buffers(model: torch.nn.Module, d: Dist) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, at the end of a stage."""
    if not d.enabled:
        return
    for b in model.buffers():
        dist.broadcast(b.data, 0)


def finish(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
