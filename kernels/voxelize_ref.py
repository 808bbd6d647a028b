"""Voxelization, NumPy reference: unpack each bin's frames and add them up. Slow, plain, the yardstick.

Both functions take the host-side plan of :mod:`svrt_data.voxelize` (bin frame ranges, and for
``linear`` the per-frame weights) and fill ``out`` in place:

- ``frames``: packed spikes ``uint8 (S, H, W/8)``, upright rows, pixel x is bit x%8 of byte x//8;
- ``ranges``: ``int64 (N, K, 2)``, the frames ``[first, stop)`` of each bin, indices into ``frames``;
- ``out``: ``(N, K, H, W)`` with ``W = 8 * (W/8)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["voxelize_count", "voxelize_linear"]


def _unpack(frames: np.ndarray) -> np.ndarray:
    """``uint8 (S, H, W/8)`` -> ``uint8 (S, H, W)`` in {0, 1}."""
    return np.unpackbits(frames, axis=-1, bitorder="little")


def voxelize_count(frames: np.ndarray, ranges: np.ndarray, out: np.ndarray) -> None:
    """``out[n, k] = sum of the unpacked frames of bin (n, k)``; ``out`` is ``uint8 (N, K, H, W)``.

    The caller guarantees a bin holds at most 255 frames.
    """
    n_windows, n_bins, _ = ranges.shape
    for n in range(n_windows):
        for k in range(n_bins):
            first, stop = ranges[n, k]
            out[n, k] = _unpack(frames[first:stop]).sum(axis=0, dtype=np.int64)


def voxelize_linear(
    frames: np.ndarray, ranges: np.ndarray, offsets: np.ndarray, weights: np.ndarray, out: np.ndarray
) -> None:
    """``out[n, k] = sum_t weight(t) * frame_t`` over bin (n, k)'s frames, in float64, rounded once.

    Bin ``b = n*K + k`` weighs frame ``ranges[n, k, 0] + j`` by ``weights[offsets[b] + j]``;
    ``out`` is ``float32 (N, K, H, W)``.
    """
    n_windows, n_bins, _ = ranges.shape
    for n in range(n_windows):
        for k in range(n_bins):
            first, stop = ranges[n, k]
            w = weights[offsets[n * n_bins + k] :]
            acc = np.zeros(out.shape[2:], np.float64)
            for j, frame in enumerate(_unpack(frames[first:stop])):
                acc += w[j] * frame
            out[n, k] = acc
