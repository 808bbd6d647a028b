"""Packed spike rows as torch tensors on any device: unpacking and packing.

A model fed raw bits (``VRTSpike(spike_input="raw" | "intervals")``) takes
:class:`~svrt_model.spike.inputs.RawSpikes`: ``uint8 (B, S, Hs, Ws/8)`` rows, pixel x in bit ``x % 8`` of
byte ``x // 8`` (the store's and the ``.dat`` files' order), and the bins' frame ranges. The spike ops
unpack them (:func:`unpack_bits`); the restorer unpacks a clip once (one byte per pixel), cuts and pads
spatial tiles like any image (a tile starts and ends anywhere on the spike grid, not on byte boundaries),
and packs each batch of tiles again (:func:`pack_bits`). The NumPy functions of :mod:`svrt_data.spike_io`
are the reference the tests compare with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from svrt_errors import SvrtValueError

__all__ = ["pack_bits", "unpack_bits"]


def _shifts(device: torch.device) -> torch.Tensor:
    return torch.arange(8, dtype=torch.uint8, device=device)


def unpack_bits(bits: torch.Tensor, width: int | None = None) -> torch.Tensor:
    """``uint8 (..., Wb)`` packed rows -> ``uint8 (..., width)`` of 0/1 (default width ``8 * Wb``)."""
    if bits.dtype != torch.uint8:
        raise SvrtValueError(f"unpack_bits: packed rows must be uint8, got {bits.dtype}")
    full = 8 * bits.shape[-1]
    width = full if width is None else width
    if not full - 8 < width <= full:
        raise SvrtValueError(f"unpack_bits: width {width} does not fit rows of {bits.shape[-1]} bytes")
    planes = torch.bitwise_and(torch.bitwise_right_shift(bits.unsqueeze(-1), _shifts(bits.device)), 1)  # ... Wb 8
    return planes.flatten(-2)[..., :width]


def pack_bits(planes: torch.Tensor) -> torch.Tensor:
    """``uint8 (..., W)`` of 0/1 -> ``uint8 (..., ceil(W / 8))`` packed rows (padding bits 0)."""
    if planes.dtype != torch.uint8:
        raise SvrtValueError(f"pack_bits: planes must be uint8 0/1, got {planes.dtype}")
    padded = F.pad(planes, (0, -planes.shape[-1] % 8)).unflatten(-1, (-1, 8))  # ... Wb 8
    return torch.bitwise_left_shift(padded, _shifts(planes.device)).sum(-1, dtype=torch.uint8)
