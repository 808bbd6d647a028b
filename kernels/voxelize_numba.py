"""Voxelization on the CPU with Numba: reads packed bytes directly, parallel over (bin, block of bytes).

A bin image is the packed frame expanded 8x: packed byte ``p`` of a frame (row-major over H and W/8)
holds pixels ``8p .. 8p+7`` of the flat ``H*W`` image, pixel ``8p+i`` in bit ``i``. So ``count`` turns
each packed byte into a ``uint64`` whose byte ``i`` is bit ``i`` (SWAR: eight pixel counts per add; no
byte lane overflows while a bin holds at most 255 frames) and adds it into the output viewed as
``uint64``: eight output pixels per load, add and store. The byte is spread with a multiply and masks
rather than a 256-entry lookup table: the table version cannot vectorize (a gather per byte) and is
several times slower (docs/voxelization.md; the kernel's own figures: benchmarks/RESULTS.md).
``linear`` expands each frame's bytes the same way into 0/1 bytes, then adds ``weight * bit`` into
float64 accumulators (a vectorized loop over pixels), in frame order, and rounds to float32 once.

Arguments follow :mod:`kernels.voxelize_ref`: ``frames uint8 (S, H, W/8)`` C-contiguous, ``ranges
int64 (N, K, 2)``, ``out (N, K, H, 8 * W/8)`` C-contiguous and 8-byte aligned.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["voxelize_count", "voxelize_linear"]

BLOCK = 4096  # packed bytes per parallel count item: 32 KiB of uint64 output, which stays in L1 across frames
LINEAR_BLOCK = 512  # packed bytes per parallel linear item: 4096 float64 accumulators (32 KiB)
# Pixels of a packed byte v as eight byte lanes: v * SPREAD copies v into every byte, PICK keeps bit i in
# byte i, adding HIGH carries a set bit into bit 7 of its byte, and (>> 7) & SPREAD leaves 0 or 1 there.
SPREAD = np.uint64(0x0101010101010101)
PICK = np.uint64(0x8040201008040201)
HIGH = np.uint64(0x7F7F7F7F7F7F7F7F)
SEVEN = np.uint64(7)


@njit(parallel=True, cache=True, nogil=True)
def _count_kernel(frames: np.ndarray, ranges: np.ndarray, out: np.ndarray) -> None:
    # frames (S, F) uint8, ranges (B, 2) int64, out (B, F) uint64: F packed bytes = 8F pixels per bin.
    n_bins, f = out.shape
    n_blocks = (f + BLOCK - 1) // BLOCK
    for item in prange(n_bins * n_blocks):
        b = item // n_blocks
        p0 = (item - b * n_blocks) * BLOCK
        n = min(f - p0, BLOCK)
        dst = out[b, p0 : p0 + n]
        dst[:] = 0
        for t in range(ranges[b, 0], ranges[b, 1]):
            src = frames[t, p0 : p0 + n]
            for p in range(n):
                dst[p] += ((((np.uint64(src[p]) * SPREAD) & PICK) + HIGH) >> SEVEN) & SPREAD


@njit(parallel=True, cache=True, nogil=True)
def _linear_kernel(
    frames: np.ndarray, ranges: np.ndarray, offsets: np.ndarray, weights: np.ndarray, out: np.ndarray
) -> None:
    # frames (S, F) uint8, ranges (B, 2), offsets (B + 1,), weights float64, out (B, 8F) float32.
    n_bins = ranges.shape[0]
    f = frames.shape[1]
    n_blocks = (f + LINEAR_BLOCK - 1) // LINEAR_BLOCK
    for item in prange(n_bins * n_blocks):
        b = item // n_blocks
        p0 = (item - b * n_blocks) * LINEAR_BLOCK
        n = min(f - p0, LINEAR_BLOCK)
        acc = np.zeros(8 * n, np.float64)
        lanes = np.empty(n, np.uint64)
        bits = lanes.view(np.uint8)  # pixel 8p+i of the block is bits[8p+i], 0 or 1
        first = ranges[b, 0]
        for t in range(first, ranges[b, 1]):
            w = weights[offsets[b] + t - first]
            src = frames[t, p0 : p0 + n]
            for p in range(n):
                lanes[p] = ((((np.uint64(src[p]) * SPREAD) & PICK) + HIGH) >> SEVEN) & SPREAD
            for q in range(8 * n):  # a vectorized float64 multiply-add; w * 0 adds an exact zero
                acc[q] += w * bits[q]
        out[b, 8 * p0 : 8 * (p0 + n)] = acc


def _flat(frames: np.ndarray, ranges: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s, h, wb = frames.shape
    n, k = ranges.shape[:2]
    return frames.reshape(s, h * wb), np.ascontiguousarray(ranges, np.int64).reshape(n * k, 2), out.reshape(n * k, -1)


def voxelize_count(frames: np.ndarray, ranges: np.ndarray, out: np.ndarray) -> None:
    """Fill ``uint8 (N, K, H, W)`` ``out`` with spike counts (the caller guarantees <= 255 frames per bin)."""
    if ranges.shape[0]:
        f, r, o = _flat(frames, ranges, out)
        _count_kernel(f, r, o.view(np.uint64))


def voxelize_linear(
    frames: np.ndarray, ranges: np.ndarray, offsets: np.ndarray, weights: np.ndarray, out: np.ndarray
) -> None:
    """Fill ``float32 (N, K, H, W)`` ``out`` with linearly shared spikes (float64 sums, rounded once)."""
    if ranges.shape[0]:
        f, r, o = _flat(frames, ranges, out)
        _linear_kernel(f, r, np.ascontiguousarray(offsets, np.int64), np.ascontiguousarray(weights, np.float64), o)
