"""Spike-rate estimates at one instant, without learning: a reference for what the spikes hold.

A spike-camera pixel integrates its light and fires when the sum passes a threshold, so its firing rate
(spikes per frame) times the threshold is its intensity. Two ways to read the rate at an instant ``c``:

- a **count** over a window of frames centred on ``c``: short windows are shot noise, long ones blur
  again under motion;
- the **interval** method (texture from inter-spike intervals): the span between the ``k``-th spike at
  or before ``c`` and the ``k``-th spike after it holds ``2k - 1`` whole intervals, so
  ``rate = (2k - 1) / span``. The span adapts to the pixel: short where it is bright, long where it is
  dark, and its endpoints are exact spike times, not window edges.

``benchmarks/train_quality.py`` scores both as reference points for the trained model.
"""

from __future__ import annotations

import numpy as np

from svrt_errors import SvrtValueError

__all__ = ["interval_rate"]


def interval_rate(frames: np.ndarray, centre: int, spikes_each_side: int = 2) -> np.ndarray:
    """Firing rate (spikes per frame) of every pixel at frame ``centre`` from its inter-spike intervals.

    Args:
        frames: ``(S, H, W)`` binary spike frames (bool or 0/1 integers).
        centre: the instant, a frame index in ``[0, S)``; spikes at frames ``<= centre`` are before it.
        spikes_each_side: ``k``: the rate is ``(2k - 1) / (t_after - t_before)`` with ``t_before`` the
            ``k``-th spike at or before ``centre`` and ``t_after`` the ``k``-th spike after it.

    Returns:
        float32 ``(H, W)``. A pixel with fewer than ``k`` spikes on a side gets its mean rate over the whole
        stream (spikes / S) instead.
    """
    frames = np.asarray(frames)
    if frames.ndim != 3 or not len(frames):
        raise SvrtValueError(f"interval_rate: frames must be (S, H, W) with S >= 1, got shape {frames.shape}")
    s = len(frames)
    k = int(spikes_each_side)
    if not 0 <= centre < s or k < 1:
        raise SvrtValueError(f"interval_rate: expected 0 <= centre < {s} and spikes_each_side >= 1, got "
                             f"centre={centre}, spikes_each_side={spikes_each_side}")
    fired = frames.astype(bool)
    before = np.cumsum(fired[centre::-1], axis=0, dtype=np.int32)  # spikes in [centre - j, centre]
    after = np.cumsum(fired[centre + 1:], axis=0, dtype=np.int32)  # spikes in [centre + 1, centre + 1 + j]
    have_before = before[-1] >= k
    have_after = after[-1] >= k if len(after) else np.zeros(before.shape[1:], bool)
    t_before = centre - np.argmax(before >= k, axis=0)
    t_after = centre + 1 + (np.argmax(after >= k, axis=0) if len(after) else 0)
    mean = fired.sum(axis=0, dtype=np.float32) / np.float32(s)
    ok = have_before & have_after
    span = np.where(ok, t_after - t_before, 1).astype(np.float32)
    return np.where(ok, np.float32(2 * k - 1) / span, mean).astype(np.float32)
