"""Load-time transforms of voxels: counts to float, ``log1p``, mean/std normalisation.

These lose no information, so they are applied when loading, never baked into a store. Every function
takes and returns the same kind of array it was given: NumPy, CuPy or torch (CPU or CUDA); nothing is
moved between devices except the K (or 1) statistics. Voxels are ``(..., K, H, W)``: bins are axis -3,
so ``(K, H, W)``, ``(N, K, H, W)`` and ``(B, T, K, H, W)`` all work.

    stats = VoxelStats(per_bin=True)
    for v in voxel_chunks:               # e.g. read from a store
        stats.update(log1p(v))
    transform = voxel_transform(log1p=True, stats=stats)
    x = transform(voxels)                # float32, log1p, then (x - mean) / std per bin
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from svrt_errors import SvrtValueError

__all__ = ["to_float", "log1p", "normalize", "Compose", "compose", "voxel_transform", "VoxelStats"]

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _xp(x: Any) -> Any:
    """The NumPy-like module of a NumPy or CuPy array."""
    if type(x).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def _is_float(x: Any) -> bool:
    return x.dtype.is_floating_point if _is_torch(x) else np.issubdtype(x.dtype, np.floating)


def to_float(x: Any, dtype: str = "float32") -> Any:
    """Cast voxels (e.g. ``uint8`` counts) to a float dtype, same array kind and device."""
    if dtype not in FLOAT_DTYPES:
        raise SvrtValueError(f"to_float: dtype must be one of {', '.join(FLOAT_DTYPES)}, got {dtype!r}")
    if _is_torch(x):
        import torch

        return x.to(getattr(torch, dtype))
    if dtype == "bfloat16":
        raise SvrtValueError("to_float: bfloat16 exists for torch tensors only; use float16 or float32")
    return x.astype(dtype, copy=False)


def log1p(x: Any, dtype: str = "float32") -> Any:
    """``log(1 + x)``; integer voxels are cast to ``dtype`` first (NumPy would pick float16 for uint8)."""
    if not _is_float(x):
        x = to_float(x, dtype)
    if _is_torch(x):
        import torch

        return torch.log1p(x)
    return _xp(x).log1p(x)


_log1p = log1p  # voxel_transform's keyword ``log1p`` shadows the function there


def _per_bin(values: Any, x: Any, name: str) -> Any:
    """Scalar or ``(K,)`` statistics as an array broadcasting over ``(..., K, H, W)`` on ``x``'s device."""
    v = np.asarray(values, np.float64)
    if v.ndim == 1:
        if x.ndim < 3 or v.shape[0] != x.shape[-3]:
            raise SvrtValueError(
                f"normalize: {name} holds {v.shape[0]} per-bin values but the voxels {tuple(x.shape)} have "
                f"{x.shape[-3] if x.ndim >= 3 else 'no'} bins on axis -3; compute the stats with the same K"
            )
        v = v.reshape(-1, 1, 1)
    elif v.ndim != 0:
        raise SvrtValueError(f"normalize: {name} must be a scalar or a (K,) array, got shape {v.shape}")
    if _is_torch(x):
        import torch

        return torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return _xp(x).asarray(v, dtype=x.dtype)


def normalize(x: Any, mean: Any, std: Any, *, eps: float = 1e-6) -> Any:
    """``(x - mean) / max(std, eps)`` with scalar (global) or ``(K,)`` (per-bin) statistics.

    ``x`` must already be float (see :func:`to_float`); the statistics take its dtype and device.
    """
    if not _is_float(x):
        raise SvrtValueError(f"normalize: voxels must be float, got {x.dtype}; apply to_float (or log1p) first")
    floor = np.maximum(np.asarray(std, np.float64), eps)
    return (x - _per_bin(mean, x, "mean")) / _per_bin(floor, x, "std")


class Compose:
    """Steps applied left to right; picklable when its steps are (DataLoader workers need that)."""

    def __init__(self, *steps: Callable[[Any], Any]) -> None:
        self.steps = steps

    def __call__(self, x: Any) -> Any:
        for step in self.steps:
            x = step(x)
        return x

    def __repr__(self) -> str:
        return f"Compose({', '.join(map(repr, self.steps))})"


def compose(*steps: Callable[[Any], Any]) -> Compose:
    """One callable applying ``steps`` left to right."""
    return Compose(*steps)


def voxel_transform(*, log1p: bool = False, stats: VoxelStats | None = None, dtype: str = "float32",
                    eps: float = 1e-6) -> Compose:
    """The usual load-time chain: cast to ``dtype``, optionally ``log1p``, optionally normalise by ``stats``.

    ``stats`` must describe the values after ``log1p`` when both are on (feed it ``log1p(voxels)``).
    """
    if dtype not in FLOAT_DTYPES:
        raise SvrtValueError(f"voxel_transform: dtype must be one of {', '.join(FLOAT_DTYPES)}, got {dtype!r}")
    steps: list[Callable[[Any], Any]] = [functools.partial(to_float, dtype=dtype)]
    if log1p:
        steps.append(_log1p)
    if stats is not None:
        steps.append(functools.partial(normalize, mean=stats.mean, std=stats.std, eps=eps))
    return Compose(*steps)


class VoxelStats:
    """Running mean and standard deviation of voxels, per bin (axis -3) or over everything.

    ``update`` reduces on the array's device and keeps float64 counts, means and sums of squared
    deviations (merged exactly as Chan et al. do), so stats can be accumulated chunk by chunk from a store
    and merged across workers.
    """

    def __init__(self, *, per_bin: bool = True) -> None:
        self.per_bin = per_bin
        self.count = np.zeros(0)  # shapes are fixed by the first update: (K,) per bin, () global
        self._mean = np.zeros(0)
        self._m2 = np.zeros(0)

    def update(self, x: Any) -> VoxelStats:
        """Add the values of ``x`` (``(..., K, H, W)`` when per bin); returns ``self``."""
        if self.per_bin and x.ndim < 3:
            raise SvrtValueError(f"VoxelStats: per-bin stats need voxels (..., K, H, W), got shape {tuple(x.shape)}")
        axes = tuple(i for i in range(x.ndim) if not (self.per_bin and i == x.ndim - 3))
        if _is_torch(x):
            v = x.double()
            mean = v.mean(dim=axes)
            m2 = ((v - (mean.reshape(-1, 1, 1) if self.per_bin else mean)) ** 2).sum(dim=axes)
            mean, m2 = mean.cpu().numpy(), m2.cpu().numpy()
        else:
            xp = _xp(x)
            v = x.astype(xp.float64)
            mean = v.mean(axis=axes)
            m2 = ((v - (mean.reshape(-1, 1, 1) if self.per_bin else mean)) ** 2).sum(axis=axes)
            mean, m2 = (np.asarray(a.get() if xp is not np else a) for a in (mean, m2))
        n = x.numel() if _is_torch(x) else x.size
        count = np.full(mean.shape, n / (mean.size or 1), np.float64)
        self._merge(count, mean, m2)
        return self

    def merge(self, other: VoxelStats) -> VoxelStats:
        """Fold another accumulator (same ``per_bin`` and K) into this one; returns ``self``."""
        if other.per_bin != self.per_bin:
            raise SvrtValueError("VoxelStats.merge: cannot merge per-bin and global statistics")
        if other.count.size:
            self._merge(other.count, other._mean, other._m2)
        return self

    def _merge(self, count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        if not self.count.size:
            self.count, self._mean, self._m2 = count.copy(), mean.copy(), m2.copy()
            return
        if count.shape != self.count.shape:
            raise SvrtValueError(
                f"VoxelStats: got {count.size} bins after {self.count.size}; every update needs the same K"
            )
        total = self.count + count
        delta = mean - self._mean
        self._mean = self._mean + delta * count / total
        self._m2 = self._m2 + m2 + delta**2 * self.count * count / total
        self.count = total

    @property
    def mean(self) -> np.ndarray:
        """float64 ``(K,)`` per bin, or a 0-d array."""
        self._require()
        return self._mean

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation, float64 ``(K,)`` per bin, or a 0-d array."""
        self._require()
        return np.sqrt(self._m2 / self.count)

    def _require(self) -> None:
        if not self.count.size:
            raise SvrtValueError("VoxelStats: no data yet; call update() first")
