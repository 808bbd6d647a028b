"""Inter-spike-interval voxels on packed bits: the firing rate at each bin's centre from the spike times
around it, scaled to the bin's length (a count the bin would hold at that rate).

For clip ``b``, frame ``t`` and bin ``k`` with frame range ``(r0, r1) = ranges[b, t, k]`` and centre
``c = (r0 + r1 - 1) // 2``::

    V[b, t, k] = (r1 - r0) * (2m - 1) / (t_after - t_before)

with ``t_before`` the ``m``-th spike at or before ``c`` and ``t_after`` the ``m``-th spike after it
(``m = spikes_each_side``), both among the clip's frames ``[lo, hi)`` (``lo`` the smallest ``r0`` and ``hi``
the largest ``r1`` of the clip's bins: padding frames after ``hi`` are never read). A pixel with fewer than
``m`` spikes on a side gets its mean rate over ``[lo, hi)`` instead; an empty bin gives 0.

Why: a count over a bin is shot noise (a pixel at rate 0.25 fires about once in a 3-frame bin), while the
interval spanning the centre adapts to the pixel's brightness and has exact spike times as its ends.
On ``train_quality``'s test frames the interval estimate (m = 2, no learning) reconstructs the sharp
luminance 2.3 dB better than the best count window; as the input of a small model trained for 300 steps on
the CPU it did worse than normalised count voxels (``benchmarks/RESULTS.md``, session 10).

The reference is :func:`svrt_data.reconstruct.interval_rate` (NumPy, per centre) on the clip's frames
``[lo, hi)``; this is its vectorized torch form (any device; with ``validate=False`` no host
synchronisation, so it can be recorded into a CUDA graph): one cumulative spike count per pixel and two
``searchsorted`` per bin centre. No gradient: the input is bits.
"""

from __future__ import annotations

import torch

from kernels.packed_bits import check_bits_and_ranges, unpack_bits
from svrt_errors import SvrtValueError

__all__ = ["interval_rates", "spike_intervals"]

_OP = "spike_intervals"


def spike_intervals(bits: torch.Tensor, ranges: torch.Tensor, *, spikes_each_side: int = 2,
                    width: int | None = None, dtype: torch.dtype = torch.float32, validate: bool = True
                    ) -> torch.Tensor:
    """Interval voxels of packed spike frames (module docstring).

    Args:
        bits: ``uint8 (B, S, H, Wb)`` packed spike frames (``spike_bits``).
        ranges: ``int64 (B, T, K, 2)``: bin ``k`` of frame ``t`` of clip ``b`` spans frames ``[r0, r1)`` of
            ``bits[b]`` (``spike_bin_ranges``).
        spikes_each_side: ``m >= 1``.
        width: ``W`` when the rows' last byte holds padding bits; default ``8 * Wb``.
        dtype: of the result and of the arithmetic (a floating dtype).
        validate: check ``0 <= r0 <= r1 <= S`` (one host synchronisation on a GPU; off while a CUDA graph is
            being recorded). Either way the ranges are clamped into ``[0, S]``.

    Returns:
        ``(B, T, K, H, W)`` in ``dtype``.
    """
    rates = interval_rates(bits, ranges, (spikes_each_side,), width=width, dtype=dtype, validate=validate)[:, :, :, 0]
    r0 = ranges[..., 0].clamp(0, bits.shape[1])
    length = (torch.maximum(ranges[..., 1].clamp(max=bits.shape[1]), r0) - r0).to(dtype)  # B T K
    return rates * length[..., None, None]


def interval_rates(bits: torch.Tensor, ranges: torch.Tensor, spikes_each_side: tuple[int, ...] = (2,), *,
                   width: int | None = None, dtype: torch.dtype = torch.float32, validate: bool = True
                   ) -> torch.Tensor:
    """Firing rates (spikes per frame) at every bin's centre, one per ``m`` in ``spikes_each_side``, from one
    cumulative count: ``(B, T, K, M, H, W)`` in ``dtype``. :func:`spike_intervals` is this with one ``m``,
    times each bin's length; the arguments are its own (``spikes_each_side`` a non-empty tuple of ``m >= 1``).
    An empty bin gives 0.
    """
    W = check_bits_and_ranges(_OP, bits, ranges, width, validate)
    B, S, H, _ = bits.shape
    ms = tuple(spikes_each_side) if isinstance(spikes_each_side, (tuple, list)) else (spikes_each_side,)
    if not ms or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in ms):
        raise SvrtValueError(f"{_OP}: spikes_each_side must be an int >= 1 (or a non-empty tuple of them), got "
                             f"{spikes_each_side!r}")
    if not dtype.is_floating_point:
        raise SvrtValueError(f"{_OP}: dtype must be a floating dtype, got {dtype}")
    T, K = ranges.shape[1:3]
    frames = unpack_bits(bits, W)  # B S H W
    r0 = ranges[..., 0].clamp(0, S)
    r1 = torch.maximum(ranges[..., 1].clamp(max=S), r0)
    if not frames.numel() or not ranges.numel():
        return torch.zeros(B, T, K, len(ms), H, W, dtype=dtype, device=bits.device)
    lo = r0.flatten(1).amin(1)  # B
    hi = r1.flatten(1).amax(1)
    step = torch.arange(S, device=bits.device)
    inside = ((step >= lo[:, None]) & (step < hi[:, None])).to(torch.int32)  # B S
    counts = (frames.to(torch.int32) * inside[:, :, None, None]).cumsum(1)  # spikes in [lo, s]
    counts = counts.permute(0, 2, 3, 1).contiguous()  # B H W S, non-decreasing along S
    total = counts[..., -1:]  # B H W 1
    centre = ((r0 + r1 - 1) // 2).clamp(0, max(S - 1, 0)).flatten(1)  # B TK
    before = counts.gather(-1, centre[:, None, None, :].expand(B, H, W, T * K))  # spikes in [lo, c]
    mean = total.to(dtype) / (hi - lo).clamp(min=1).to(dtype).view(B, 1, 1, 1)
    empty = (r1 == r0).flatten(1)[:, None, None, :]  # B 1 1 TK
    rates = {}
    for m in dict.fromkeys(ms):  # an m asked for twice is computed once
        # the n-th spike of a pixel is at the first frame whose running count reaches n
        t_before = torch.searchsorted(counts, before - (m - 1))
        t_after = torch.searchsorted(counts, before + m)
        found = (before >= m) & (before + m <= total)
        span = torch.where(found, t_after - t_before, 1).to(dtype)
        rates[m] = torch.where(found, (2 * m - 1) / span, mean).masked_fill(empty, 0)  # B H W TK
    return torch.stack([rates[m] for m in ms], -1).unflatten(-2, (T, K)).permute(0, 3, 4, 5, 1, 2).contiguous()
