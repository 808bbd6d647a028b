"""Which clips each epoch serves, in which order, on which DDP rank: :class:`ClipSampler`.

It yields :class:`ClipKey` ``(epoch, index)`` pairs, so a dataset indexed with them knows the epoch in
any worker process (persistent workers included) without being told.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import NamedTuple

import numpy as np
from torch.utils.data import Sampler

from svrt_data.loader.args import positive_int
from svrt_errors import SvrtValueError

__all__ = ["ClipKey", "ClipSampler"]


class ClipKey(NamedTuple):
    """A dataset index that carries its epoch (what :class:`ClipSampler` yields)."""

    epoch: int
    index: int


class ClipSampler(Sampler[ClipKey]):
    """Yields :class:`ClipKey` ``(epoch, index)``: a permutation drawn from ``(seed, epoch)`` (or index order),
    split across ``num_replicas`` DDP ranks like ``DistributedSampler`` (padded by wrapping around, or
    cut with ``drop_last``). Call :meth:`set_epoch` before each epoch.

    ``epochs > 1`` makes one pass yield epochs ``epoch .. epoch + epochs - 1`` back to back (for loops
    counted in iterations: the workers' prefetch queue never drains between epochs).
    """

    def __init__(self, dataset: Sized, *, shuffle: bool = True, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0, drop_last: bool = False, epochs: int = 1) -> None:
        self.n = len(dataset)
        self.shuffle, self.seed, self.epoch = shuffle, int(seed), 0
        self.epochs = positive_int("epochs", epochs)
        self.num_replicas = positive_int("num_replicas", num_replicas)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
            raise SvrtValueError(f"rank must be in [0, {num_replicas}), got {rank!r}")
        self.rank, self.drop_last = int(rank), drop_last
        if self.n == 0:
            raise SvrtValueError("ClipSampler: the dataset is empty")
        if drop_last and self.n < num_replicas:
            raise SvrtValueError(f"ClipSampler: {self.n} clips cannot feed {num_replicas} replicas with drop_last")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _per_epoch(self) -> int:
        return self.n // self.num_replicas if self.drop_last else -(-self.n // self.num_replicas)

    def __len__(self) -> int:
        return self._per_epoch() * self.epochs

    def __iter__(self) -> Iterator[ClipKey]:
        total = self._per_epoch() * self.num_replicas
        for epoch in range(self.epoch, self.epoch + self.epochs):
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            else:
                order = np.arange(self.n)
            order = order[:total] if self.drop_last else np.resize(order, total)  # np.resize wraps around
            for i in order[self.rank :: self.num_replicas]:
                yield ClipKey(epoch, int(i))
