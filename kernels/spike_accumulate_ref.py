"""The spike accumulator written from its definition, in float64 NumPy loops: the slow, obviously-correct
reference that tests compare every path of :mod:`kernels.spike_accumulate` with."""

from __future__ import annotations

import numpy as np

__all__ = ["spike_accumulate_gamma_grad_reference", "spike_accumulate_reference", "unpack_frames"]


def unpack_frames(bits: np.ndarray, width: int | None = None) -> np.ndarray:
    """``uint8 (..., H, Wb)`` packed rows -> ``float64 (..., H, W)`` spikes (pixel x = bit x % 8 of byte x // 8)."""
    frames = np.unpackbits(bits, axis=-1, bitorder="little").astype(np.float64)
    return frames if width is None else frames[..., :width]


def spike_accumulate_reference(
    bits: np.ndarray, ranges: np.ndarray, gamma: np.ndarray, width: int | None = None
) -> np.ndarray:
    """``V[b, t, k] = sum_{s in [r0, r1)} S[b, s] * gamma[k] ** (r1 - 1 - s)``: ``float64 (B, T, K, H, W)``."""
    frames = unpack_frames(bits, width)  # B S H W
    B, T, K = ranges.shape[:3]
    out = np.zeros((B, T, K, *frames.shape[2:]))
    for b in range(B):
        for t in range(T):
            for k in range(K):
                r0, r1 = (int(v) for v in ranges[b, t, k])
                for s in range(r0, r1):
                    out[b, t, k] += frames[b, s] * float(gamma[k]) ** (r1 - 1 - s)
    return out


def spike_accumulate_gamma_grad_reference(
    bits: np.ndarray, ranges: np.ndarray, gamma: np.ndarray, grad_out: np.ndarray, width: int | None = None
) -> np.ndarray:
    """``dL/dgamma_k = sum grad_out[b, t, k] * sum_s S[b, s] * e * gamma_k ** (e - 1)``, ``e = r1 - 1 - s``."""
    frames = unpack_frames(bits, width)
    B, T, K = ranges.shape[:3]
    grad = np.zeros(K)
    for b in range(B):
        for t in range(T):
            for k in range(K):
                r0, r1 = (int(v) for v in ranges[b, t, k])
                for s in range(r0, r1):
                    e = r1 - 1 - s
                    if e:  # the newest frame's weight gamma ** 0 does not depend on gamma
                        grad[k] += e * float(gamma[k]) ** (e - 1) * float((grad_out[b, t, k] * frames[b, s]).sum())
    return grad
