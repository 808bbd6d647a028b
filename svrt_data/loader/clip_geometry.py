"""Geometry of training clips: the RGB/spike scale grid, and the eight flips/rotations of a square.

**Scale grid.** Spikes and RGB frames may differ in resolution (Spk-GoPro: spikes at half the RGB
size). Per axis the spike/RGB ratio is a reduced fraction ``num/den`` (``Hs/H``); an RGB offset or
size that is a multiple of ``den`` maps to the whole spike offset or size ``value * num / den``, and
only those are used, so an RGB crop and its spike crop cover exactly the same scene. A crop size that
is not on the grid is refused (:meth:`AxisScale.spike_size`), never rounded.

**Dihedral transforms.** :class:`Dihedral` ``(flip_y, flip_x, transpose)`` is one of the 8 symmetries of
a square: flip rows, flip columns, then swap the two axes (a 90-degree rotation is a flip followed by a
transpose). They act on the two spatial axes only, so spike bins and time order are untouched. Readers
write a crop through :meth:`Dihedral.write_view` straight into its transformed place; packed spike rows
(8 pixels per byte, bit ``x % 8`` of byte ``x // 8``) are transformed with :meth:`Dihedral.apply_packed`
without unpacking (bit reversal by a table, 8x8 bit-block transposes).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from svrt_errors import SvrtValueError

__all__ = ["AxisScale", "Dihedral", "IDENTITY", "shift_packed", "flip_packed_x", "transpose_packed"]


@dataclass(frozen=True)
class AxisScale:
    """One axis: ``rgb`` pixels of RGB frames against ``spike`` pixels of spike frames."""

    rgb: int
    spike: int

    @property
    def ratio(self) -> Fraction:
        return Fraction(self.spike, self.rgb)

    @property
    def step(self) -> int:
        """The RGB grid: offsets and sizes that are multiples of this map to whole spike pixels."""
        return self.ratio.denominator

    def on_grid(self, value: int) -> bool:
        return value % self.step == 0

    def to_spike(self, value: int) -> int:
        """An RGB offset or size on the grid, in spike pixels."""
        if value % self.step:
            raise SvrtValueError(f"{value} RGB pixels is not on the {self.step}-pixel scale grid")
        return value * self.ratio.numerator // self.ratio.denominator


class Dihedral(NamedTuple):
    """Flip rows, then flip columns, then transpose (swap y and x); see the module docstring."""

    flip_y: bool = False
    flip_x: bool = False
    transpose: bool = False

    @property
    def code(self) -> tuple[int, int, int]:
        return int(self.flip_y), int(self.flip_x), int(self.transpose)

    def apply(self, a: np.ndarray, y_axis: int, x_axis: int) -> np.ndarray:
        """The transformed array (a view): the reference definition."""
        if self.flip_y:
            a = np.flip(a, y_axis)
        if self.flip_x:
            a = np.flip(a, x_axis)
        if self.transpose:
            a = np.swapaxes(a, y_axis, x_axis)
        return a

    def write_view(self, out: np.ndarray, y_axis: int, x_axis: int) -> np.ndarray:
        """A view of ``out`` shaped like the untransformed crop: writing crop ``X`` into it leaves
        ``out == self.apply(X)``. (Swap first, then flip: the inverse order of :meth:`apply`.)"""
        v = np.swapaxes(out, y_axis, x_axis) if self.transpose else out
        if self.flip_x:
            v = np.flip(v, x_axis)
        if self.flip_y:
            v = np.flip(v, y_axis)
        return v

    def source_shape(self, h: int, w: int) -> tuple[int, int]:
        """The ``(h, w)`` of the region to read so that the transformed crop is ``(h, w)``."""
        return (w, h) if self.transpose else (h, w)

    def apply_packed(self, bits: np.ndarray) -> np.ndarray:
        """The transform of packed rows ``uint8 (..., H, W/8)``, C-contiguous; transposing needs H and W
        multiples of 8."""
        if self.flip_y:
            bits = bits[..., ::-1, :]
        if self.flip_x:
            bits = flip_packed_x(bits)
        if self.transpose:
            bits = transpose_packed(bits)
        return np.ascontiguousarray(bits)


IDENTITY = Dihedral()

# byte -> the byte with its 8 bits in reverse order
_REVERSED_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little")
_REVERSED_BITS = np.packbits(_REVERSED_BITS, axis=1, bitorder="big")[:, 0]


def shift_packed(raw: np.ndarray, bit: int, n_bytes: int) -> np.ndarray:
    """Packed rows starting ``bit`` (0-7) pixels into ``raw``: ``(..., n_bytes)`` from ``(..., n_bytes + 1)``
    (``(..., n_bytes)`` suffices when ``bit`` is 0).

    Pixel ``x`` of the result is pixel ``x + bit`` of ``raw`` (little bit order: pixel ``x`` is bit
    ``x % 8`` of byte ``x // 8``).
    """
    if not 0 <= bit < 8:
        raise SvrtValueError(f"shift_packed: bit must be in 0..7, got {bit}")
    if bit == 0:
        return raw[..., :n_bytes]
    out = np.right_shift(raw[..., :n_bytes], np.uint8(bit))
    out |= np.left_shift(raw[..., 1 : n_bytes + 1], np.uint8(8 - bit))
    return out


def flip_packed_x(bits: np.ndarray) -> np.ndarray:
    """Packed rows mirrored left-right (the width must be whole bytes): bytes reversed, bits reversed."""
    return np.take(_REVERSED_BITS, bits[..., ::-1])


def _transpose_8x8(x: np.ndarray) -> np.ndarray:
    """Transpose 8x8 bit matrices held in uint64 (byte r is row r, bit c of it is column c), in place
    (Hacker's Delight, "transpose8": three rounds of masked swaps)."""
    for shift, mask in ((7, 0x00AA00AA00AA00AA), (14, 0x0000CCCC0000CCCC), (28, 0x00000000F0F0F0F0)):
        t = np.right_shift(x, np.uint64(shift))
        t ^= x
        t &= np.uint64(mask)
        x ^= t
        x ^= np.left_shift(t, np.uint64(shift))
    return x


def transpose_packed(bits: np.ndarray) -> np.ndarray:
    """Swap y and x of packed rows ``uint8 (..., H, W/8)`` -> ``(..., W, H/8)``; H and W multiples of 8."""
    *lead, h, wb = bits.shape
    if h % 8:
        raise SvrtValueError(f"transpose_packed: the height ({h}) must be a multiple of 8 to transpose packed rows")
    n = int(np.prod(lead, dtype=np.int64))
    blocks = bits.reshape(n, h // 8, 8, wb)  # block row I, row r in the block, block column J
    gathered = np.empty((n, wb, h // 8, 8), np.uint8)  # each 8x8 block's rows made adjacent: one uint64
    gathered[...] = blocks.transpose(0, 3, 1, 2)
    _transpose_8x8(gathered.view("<u8")[..., 0])
    # block (J, I) of the result is block (I, J) transposed: its byte r is row 8 J + r, byte column I
    out = np.empty((n, wb, 8, h // 8), np.uint8)
    out[...] = gathered.transpose(0, 1, 3, 2)
    return out.reshape(*lead, 8 * wb, h // 8)
