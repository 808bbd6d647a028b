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

__all__ = ["bit_shifts", "check_bits_and_ranges", "pack_bits", "unpack_bits"]


def bit_shifts(device: torch.device) -> torch.Tensor:
    """The 8 shifts :func:`unpack_bits` applies; a caller unpacking in a loop makes them once."""
    return torch.arange(8, dtype=torch.uint8, device=device)


def unpack_bits(bits: torch.Tensor, width: int | None = None, *, shifts: torch.Tensor | None = None) -> torch.Tensor:
    """``uint8 (..., Wb)`` packed rows -> ``uint8 (..., width)`` of 0/1 (default width ``8 * Wb``);
    ``shifts``: :func:`bit_shifts` of ``bits``' device, when the caller has them."""
    if bits.dtype != torch.uint8:
        raise SvrtValueError(f"unpack_bits: packed rows must be uint8, got {bits.dtype}")
    full = 8 * bits.shape[-1]
    width = full if width is None else width
    if not full - 8 < width <= full:
        raise SvrtValueError(f"unpack_bits: width {width} does not fit rows of {bits.shape[-1]} bytes")
    shifts = bit_shifts(bits.device) if shifts is None else shifts
    planes = torch.bitwise_and(torch.bitwise_right_shift(bits.unsqueeze(-1), shifts), 1)  # ... Wb 8
    return planes.flatten(-2)[..., :width]


def pack_bits(planes: torch.Tensor) -> torch.Tensor:
    """``uint8 (..., W)`` of 0/1 -> ``uint8 (..., ceil(W / 8))`` packed rows (padding bits 0)."""
    if planes.dtype != torch.uint8:
        raise SvrtValueError(f"pack_bits: planes must be uint8 0/1, got {planes.dtype}")
    padded = F.pad(planes, (0, -planes.shape[-1] % 8)).unflatten(-1, (-1, 8))  # ... Wb 8
    return torch.bitwise_left_shift(padded, bit_shifts(planes.device)).sum(-1, dtype=torch.uint8)


def check_bits_and_ranges(op: str, bits: torch.Tensor, ranges: torch.Tensor, width: int | None, validate: bool) -> int:
    """Validate the packed frames and bin ranges a spike op reads; return the frame width ``W``.

    Args:
        op: the op's name, for the messages.
        bits: ``uint8 (B, S, H, Wb)`` packed spike frames (``spike_bits``).
        ranges: ``int64 (B, T, K, 2)`` frame ranges ``[r0, r1)`` (``spike_bin_ranges``), on ``bits``' device.
        width: ``W`` when the rows' last byte holds padding bits (``8 * (Wb - 1) < W <= 8 * Wb``); None: ``8 * Wb``.
        validate: also check ``0 <= r0 <= r1 <= S`` (one host synchronisation on a GPU).

    Raises:
        SvrtValueError: a tensor of the wrong type, rank, shape, dtype or device, a bad ``width``, or (with
            ``validate``) a range outside ``0 <= r0 <= r1 <= S``; the message says which and how to fix it.
    """
    for name, t in (("bits", bits), ("ranges", ranges)):
        if not isinstance(t, torch.Tensor):
            raise SvrtValueError(f"{op}: {name} must be a torch tensor, got {type(t).__name__}")
    if bits.dtype != torch.uint8 or bits.dim() != 4:
        raise SvrtValueError(
            f"{op}: bits must be uint8 (B, S, H, W/8) packed spike frames (SpikeTransform(raw_output='bits') "
            f"hands them over as spike_bits); got {bits.dtype} of shape {tuple(bits.shape)}"
        )
    B, S, H, Wb = bits.shape
    if ranges.dtype != torch.int64 or ranges.dim() != 4 or ranges.shape[0] != B or ranges.shape[3] != 2:
        raise SvrtValueError(
            f"{op}: ranges must be int64 (B, T, K, 2) = ({B}, T, K, 2) frame ranges [r0, r1) (as spike_bin_ranges); "
            f"got {ranges.dtype} of shape {tuple(ranges.shape)}"
        )
    if ranges.device != bits.device:
        raise SvrtValueError(
            f"{op}: ranges is on {ranges.device} but bits are on {bits.device}; move all tensors to one device"
        )
    if width is None:
        W = 8 * Wb
    elif isinstance(width, bool) or not isinstance(width, int) or not 8 * (Wb - 1) < width <= 8 * Wb:
        raise SvrtValueError(
            f"{op}: width={width!r} does not fit packed rows of {Wb} bytes; expected an int from "
            f"{8 * (Wb - 1) + 1} to {8 * Wb} (the padding bits of each row's last byte are dropped)"
        )
    else:
        W = width
    if validate and ranges.numel():
        r0, r1 = ranges[..., 0], ranges[..., 1]
        bad = (r0 < 0) | (r1 < r0) | (r1 > S)
        if bool(bad.any()):  # one host synchronisation
            i = tuple(int(v) for v in bad.nonzero()[0])
            got = tuple(int(v) for v in ranges[i])
            raise SvrtValueError(
                f"{op}: ranges[{', '.join(map(str, i))}] = [{got[0]}, {got[1]}) is outside the {S} spike frames "
                f"of bits; expected 0 <= r0 <= r1 <= {S}. Build ranges with SpikeTransform.bin_ranges for "
                "these bits"
            )
    return W
