"""Process-group context for training under ``torchrun`` (one process per GPU, one or many nodes).

``DistContext.from_env()`` reads what ``torchrun`` exports (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``; the
rendezvous itself is torchrun's) and joins the default process group: NCCL on CUDA, gloo on the CPU.
Without those variables the context is a single process and nothing is initialised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from svrt_model.errors import TrainingError

__all__ = ["DistContext", "resolve_device"]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> this rank's GPU when CUDA is available, else the CPU; ``"cuda"`` -> ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError(f"train.device={name!r} but CUDA is not available here; use train.device=cpu")
        return torch.device(f"cuda:{local_rank}") if name == "cuda" else torch.device(name)
    raise TrainingError(f"train.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run: ``rank`` of ``world_size``, ``local_rank`` on its node, its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device: str = "auto") -> DistContext:
        """Join torchrun's process group when ``WORLD_SIZE > 1`` (NCCL on CUDA devices, gloo on the CPU)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = resolve_device(device, local)
        if world > 1 and not dist.is_initialized():
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
        return cls(rank=rank, world_size=world, local_rank=local, device=dev)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (a picklable object), in rank order, on every rank."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def all_true(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on every rank (keeps skip decisions identical)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1 if flag else 0], device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
