"""Distributed data parallel setup through torch.distributed (launched by `torchrun`).

`torchrun --nproc_per_node=K -m malenia.cli train ...` (or `--nnodes`/`--rdzv-*` for several nodes) sets
RANK/WORLD_SIZE/LOCAL_RANK; `init_distributed` then joins the process group: NCCL on GPUs, gloo on CPU.
One process without those variables is an ordinary single-process run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _wants_cuda(device: str) -> bool:
    """True for cuda, False for cpu; InputError for any other name, or cuda where none is available."""
    from malenia.errors import InputError

    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r}; use auto, cpu or cuda (torchrun gives each process its GPU)")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    return device == "cuda"


def init_distributed(device: str | None = None) -> DistInfo:
    """Joins the torchrun process group when launched by torchrun; picks the device (cuda:LOCAL_RANK or cpu)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = torch.cuda.is_available() if device in (None, "auto") else _wants_cuda(str(device))
    dev = torch.device(f"cuda:{local}") if want_cuda else torch.device("cpu")
    if want_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if want_cuda else "gloo")
    return DistInfo(rank, world, local, dev)


def wrap_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    if not info.enabled:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    # Unmatched tokens or a switched-off branch leave some parameters without gradient in a step.
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def mean_values(values: torch.Tensor, info: DistInfo) -> list:
    """A device tensor's values as Python numbers (one read back), averaged over all processes."""
    if info.enabled:
        values = values.double()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values = values / info.world_size
    return values.tolist()


def max_across(value: float, info: DistInfo) -> float:
    """The largest of a per-process number (a clock every process must agree on)."""
    if not info.enabled:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
