"""Voxelization on the GPU: the kernels of ``voxelize.cu``, compiled once through ``cupy.RawModule``.

One launch covers every window of a call. Each thread reads V packed bytes per frame (V the widest of
16, 8, 4, 2, 1 bytes that divides the frame size and the frame pointer's alignment: 16 for 360x640,
8 for 1000x1000, 4 for 250x400) and writes the 8V pixels they expand to; there are no atomics, so
results are deterministic. Kernels run on CuPy's current stream (:func:`svrt_data.voxelize.voxelize`
makes that torch's current stream for torch tensors).

Arguments follow :mod:`kernels.voxelize_ref`, as CuPy arrays: ``frames uint8 (S, H, W/8)``
C-contiguous, ``out (N, K, H, 8 * W/8)`` C-contiguous and 16-byte aligned; ``ranges`` (and the
linear plan) are host NumPy arrays, uploaded here.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import cupy as cp
import numpy as np

__all__ = ["voxelize_count", "voxelize_linear", "vector_bytes", "count_kernel_name", "CUDA_SOURCE"]

CUDA_SOURCE = Path(__file__).with_name("voxelize.cu")
THREADS = 256  # the kernels' __launch_bounds__ and the shared-memory staging assume 256
COUNT_V = (1, 2, 4, 8, 16)
LINEAR_V = (1, 2, 4)  # 8V float64 accumulators per thread: V = 4 already takes ~90 registers
# Count kernels with V >= STAGED_FROM_V store through shared memory (512 contiguous bytes per warp store);
# narrower ones store each lane's 8V bytes directly. Staging pays off only for wide vectors (the kernel
# timings of both store paths are in benchmarks/RESULTS.md, Voxelization).
STAGED_FROM_V = 8


def count_kernel_name(v: int, staged: bool) -> str:
    """The ``voxel_count`` instantiation for ``v`` bytes per thread, storing through shared memory or not
    (the template takes both at any ``v >= 4``; :func:`voxelize_count` uses ``staged = v >= STAGED_FROM_V``)."""
    return f"voxel_count<{v}, {'true' if staged and v >= 4 else 'false'}>"


def _linear_name(v: int) -> str:
    return f"voxel_linear<{v}>"


@functools.cache
def _module() -> Any:
    names = sorted({count_kernel_name(v, v >= STAGED_FROM_V) for v in COUNT_V} | {_linear_name(v) for v in LINEAR_V})
    return cp.RawModule(code=CUDA_SOURCE.read_text(), options=("-std=c++17",), name_expressions=names)


def vector_bytes(frame_bytes: int, pointer: int, widest: int = 16) -> int:
    """Bytes per thread and frame: the widest power of two <= ``widest`` dividing both arguments."""
    v = widest
    while v > 1 and (frame_bytes % v or pointer % v):
        v //= 2
    return v


def _launch(kernel: Any, total: int, args: tuple) -> None:
    if total:
        kernel(((total + THREADS - 1) // THREADS,), (THREADS,), args)


def voxelize_count(frames: Any, ranges: np.ndarray, out: Any) -> None:
    """Fill ``uint8 (N, K, H, W)`` ``out`` with spike counts (the caller guarantees <= 255 frames per bin)."""
    s, h, wb = frames.shape
    f = h * wb
    v = vector_bytes(f, frames.data.ptr)
    chunks = f // v
    total = ranges.shape[0] * ranges.shape[1] * chunks
    kernel = _module().get_function(count_kernel_name(v, v >= STAGED_FROM_V))
    _launch(kernel, total, (frames, cp.asarray(ranges, dtype=cp.int64), out, np.int64(f), np.int64(chunks),
                            np.int64(total)))


def voxelize_linear(frames: Any, ranges: np.ndarray, offsets: np.ndarray, weights: np.ndarray, out: Any) -> None:
    """Fill ``float32 (N, K, H, W)`` ``out`` with linearly shared spikes (float64 sums, rounded once)."""
    s, h, wb = frames.shape
    f = h * wb
    v = vector_bytes(f, frames.data.ptr, widest=max(LINEAR_V))
    chunks = f // v
    total = ranges.shape[0] * ranges.shape[1] * chunks
    kernel = _module().get_function(_linear_name(v))
    _launch(kernel, total, (frames, cp.asarray(ranges, dtype=cp.int64), cp.asarray(offsets, dtype=cp.int64),
                            cp.asarray(weights, dtype=cp.float64), out, np.int64(f), np.int64(chunks),
                            np.int64(total)))
