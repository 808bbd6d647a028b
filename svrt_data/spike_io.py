"""Reading and writing raw spike streams (``.dat``).

Format contract (verified on the camera and Spk-GoPro/SREDS fixtures):

- headerless; frame after frame, each ``H * W_stored / 8`` bytes;
- pixels row-major, least significant bit first (``np.unpackbits(..., bitorder="little")``);
- rows stored bottom-up for camera data (``flip=True``: the reader turns them upright);
- nothing about resolution or rate is stored: the caller supplies a :class:`~svrt_data.geometry.Geometry`.

Reading is lazy: the file is memory-mapped and a slice touches only the bytes of its frames. Unpacked
frames are ``uint8 (S, H, W)`` in {0, 1}, upright; packed frames are upright rows of
``uint8 (S, H, W/8)`` in the same bit order, the form the voxelizer and the store consume.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from svrt_data.geometry import DEFAULT_RATE_HZ, Geometry, geometries_fitting
from svrt_errors import SpikeFormatError

__all__ = ["PackedStream", "SpikeStream", "read_dat", "write_dat", "write_dat_packed", "DatWriter", "pack_frames",
           "unpack_frames"]

BITORDER = "little"


def unpack_frames(packed: np.ndarray, width: int | None = None) -> np.ndarray:
    """Unpack upright packed rows ``uint8 (..., H, W/8)`` into ``uint8 (..., H, W)`` in {0, 1}."""
    out = np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=-1, bitorder=BITORDER)
    if width is not None and width != out.shape[-1]:
        out = out[..., :width]
    return out


def pack_frames(frames: np.ndarray) -> np.ndarray:
    """Pack ``uint8 (..., H, W)`` spikes in {0, 1} into rows ``uint8 (..., H, ceil(W/8))``."""
    return np.packbits(np.asarray(frames, dtype=np.uint8), axis=-1, bitorder=BITORDER)


class PackedStream(ABC):
    """What every lazily read spike stream offers, built on :meth:`packed` and :attr:`geometry`.

    Subclasses set ``geometry`` and ``_n`` and implement :meth:`packed`; they may override
    :meth:`_unpacked` with a faster path.
    """

    geometry: Geometry
    _n: int

    @property
    def height(self) -> int:
        return self.geometry.height

    @property
    def width(self) -> int:
        return self.geometry.width

    @property
    def flip(self) -> bool:
        return self.geometry.flip

    @property
    def rate_hz(self) -> float:
        return self.geometry.rate_hz

    @property
    def duration_s(self) -> float:
        return self._n / self.geometry.rate_hz

    def __len__(self) -> int:
        return self._n

    def _range(self, start: int | None, stop: int | None, step: int | None = None) -> tuple[int, int]:
        if step not in (None, 1):
            raise SpikeFormatError("spike streams are read in contiguous frame ranges (step 1)")
        a, b, _ = slice(start, stop).indices(self._n)
        return a, max(a, b)

    @abstractmethod
    def packed(self, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """Upright packed rows of frames [start, stop): ``uint8 (S, H, W/8)``, C-contiguous."""

    def _unpacked(self, a: int, b: int) -> np.ndarray:
        return unpack_frames(self.packed(a, b), self.width)

    def __getitem__(self, key: int | slice) -> np.ndarray:
        """Upright frames ``uint8 (S, H, W)`` in {0, 1} for a slice, ``(H, W)`` for an index."""
        if isinstance(key, slice):
            return self._unpacked(*self._range(key.start, key.stop, key.step))
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self._n if key < 0 else 0)
            if not 0 <= i < self._n:
                raise IndexError(f"frame {key} out of range for a stream of {self._n} frames")
            return self._unpacked(i, i + 1)[0]
        raise TypeError(f"spike stream indices are ints or slices, got {type(key).__name__}")

    def iter_packed(
        self, chunk: int = 1024, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_frame, packed rows)`` over [start, stop) in chunks of ``chunk`` frames."""
        a, b = self._range(start, stop)
        for s in range(a, b, chunk):
            yield s, self.packed(s, min(b, s + chunk))

    def spike_count(self, start: int | None = None, stop: int | None = None, chunk: int = 2048) -> int:
        """Number of spikes in frames [start, stop), counted on packed bits."""
        a, b = self._range(start, stop)
        if self.width % 8:
            return sum(int(self[s : min(b, s + chunk)].sum(dtype=np.int64)) for s in range(a, b, chunk))
        return sum(int(np.bitwise_count(p).sum(dtype=np.int64)) for _, p in self.iter_packed(chunk, a, b))

    def firing_rate(self, start: int | None = None, stop: int | None = None) -> float:
        """Mean spikes per pixel per frame over [start, stop) (NaN for an empty range)."""
        a, b = self._range(start, stop)
        if b == a:
            return float("nan")
        return self.spike_count(a, b) / ((b - a) * self.height * self.width)

    def mean_image(self, start: int | None = None, stop: int | None = None, chunk: int = 512) -> np.ndarray:
        """Time-averaged upright frame over [start, stop): ``float32 (H, W)`` in [0, 1]."""
        a, b = self._range(start, stop)
        acc = np.zeros((self.height, self.width), np.int64)
        for s in range(a, b, chunk):
            acc += self._unpacked(s, min(b, s + chunk)).sum(axis=0, dtype=np.int64)
        return (acc / max(1, b - a)).astype(np.float32)


class SpikeStream(PackedStream):
    """A lazily read ``.dat`` spike stream with an explicit geometry.

    ``len(stream)`` is the frame count; ``stream[a:b]`` (or ``stream[i]``) returns upright
    ``uint8 (S, H, W)`` frames in {0, 1}; ``stream.packed(a, b)`` returns upright packed rows
    ``uint8 (S, H, W/8)``. Nothing beyond the requested frames is read.
    """

    def __init__(self, path: str | os.PathLike, geometry: Geometry, *, truncate: bool = False) -> None:
        self.path = Path(path)
        self.geometry = geometry
        if not self.path.is_file():
            raise SpikeFormatError(f"{self.path}: no such spike file")
        size = self.path.stat().st_size
        fb = geometry.frame_bytes
        n, rest = divmod(size, fb)
        if rest and not truncate:
            fits = geometries_fitting(size)
            hint = (
                "geometries that fit this size: "
                + "; ".join(f"{g.name} ({g.describe()}, {size // g.frame_bytes} frames)" for g in fits)
                if fits
                else "no registered geometry fits this size"
            )
            raise SpikeFormatError(
                f"{self.path}: size {size} bytes is not a whole number of {geometry.height}x"
                f"{geometry.row_width} frames ({fb} bytes each; {n} frames and {rest} bytes left over). "
                f"{hint}. Pass the right geometry, or truncate=True (--truncate) to drop the partial frame."
            )
        self.truncated_bytes = rest
        self._n = n
        # A memmap of a zero-length file is an error; keep an empty array instead.
        self._mm = (
            np.memmap(self.path, dtype=np.uint8, mode="r", shape=(n, fb)) if n else np.zeros((0, fb), np.uint8)
        )

    def __repr__(self) -> str:
        return f"SpikeStream({str(self.path)!r}, {self._n} frames, {self.geometry.describe()})"

    def _raw_rows(self, a: int, b: int) -> np.ndarray:
        """Stored rows of frames [a, b) as ``(S, H, W_stored/8)`` (only byte-aligned rows)."""
        g = self.geometry
        return self._mm[a:b].reshape(b - a, g.height, g.row_width // 8)

    def packed(self, start: int | None = None, stop: int | None = None) -> np.ndarray:
        a, b = self._range(start, stop)
        g = self.geometry
        if g.width % 8:
            raise SpikeFormatError(
                f"{self.path}: packed rows need a width that is a multiple of 8, geometry is "
                f"{g.height}x{g.width}; read unpacked frames with stream[a:b] instead"
            )
        if g.row_width % 8:
            return pack_frames(self._unpacked(a, b))
        c0 = g.col_offset // 8
        rows = self._raw_rows(a, b)[:, :, c0 : c0 + g.packed_width]
        return np.ascontiguousarray(rows[:, ::-1] if g.flip else rows)

    def _unpacked(self, a: int, b: int) -> np.ndarray:
        g = self.geometry
        if g.row_width % 8 == 0:
            # Flip the packed rows first, then unpack: the flip then moves W/8 bytes per row instead of W.
            rows = self._raw_rows(a, b)
            out = unpack_frames(rows[:, ::-1] if g.flip else rows)
            if g.row_width != g.width:
                out = np.ascontiguousarray(out[:, :, g.col_offset : g.col_offset + g.width])
            return out
        # Rows are not byte-aligned: unpack whole frames, then cut rows.
        bits = np.unpackbits(self._mm[a:b], axis=-1, bitorder=BITORDER)
        out = bits.reshape(b - a, g.height, g.row_width)[:, :, g.col_offset : g.col_offset + g.width]
        return np.ascontiguousarray(out[:, ::-1] if g.flip else out)


def read_dat(
    path: str | os.PathLike,
    *,
    height: int,
    width: int,
    flip: bool = True,
    rate_hz: float = DEFAULT_RATE_HZ,
    stored_width: int | None = None,
    col_offset: int = 0,
    truncate: bool = False,
) -> SpikeStream:
    """Open a ``.dat`` spike stream lazily.

    Args:
        path: the file.
        height, width: decoded image size (``H``, ``W``).
        flip: rows are stored bottom-up (camera data and most synthetic sets); frames come out upright.
        rate_hz: spike frames per second.
        stored_width, col_offset: for captures whose stored rows are wider than the image.
        truncate: drop a trailing partial frame instead of raising.

    Raises:
        SpikeFormatError: the file size is not a whole number of frames (the message lists the
            registered geometries that would fit).
    """
    geometry = Geometry(height, width, flip, rate_hz, stored_width, col_offset, name=f"{height}x{width}")
    return SpikeStream(path, geometry, truncate=truncate)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise SpikeFormatError(f"write_dat expects frames of shape (S, H, W), got shape {frames.shape}")
    if frames.dtype != np.uint8 and frames.dtype != np.bool_:
        raise SpikeFormatError(f"write_dat expects uint8 or bool frames in {{0, 1}}, got dtype {frames.dtype}")
    frames = frames.view(np.uint8)
    if frames.size and frames.max() > 1:
        raise SpikeFormatError(
            f"write_dat expects spikes in {{0, 1}}, got a maximum of {int(frames.max())}; binarise first"
        )
    if (frames.shape[1] * frames.shape[2]) % 8:
        raise SpikeFormatError(
            f"a .dat frame holds H*W/8 bytes, but {frames.shape[1]}x{frames.shape[2]} is not a multiple of 8 bits"
        )
    return frames


def _frames_to_bytes(frames: np.ndarray, flip: bool) -> np.ndarray:
    """Encode upright (S, H, W) frames as stored frame bytes (S, H*W/8)."""
    rows = frames[:, ::-1] if flip else frames
    return np.packbits(rows.reshape(rows.shape[0], -1), axis=-1, bitorder=BITORDER)


class DatWriter:
    """Write a ``.dat`` stream incrementally and atomically.

    Frames go to a temporary file beside ``path``; :meth:`close` (or leaving the ``with`` block
    without an exception) renames it into place, so a crash never leaves a partial ``.dat``.
    """

    def __init__(self, path: str | os.PathLike, *, flip: bool = True) -> None:
        self.path = Path(path)
        self.flip = flip
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")
        self.frames_written = 0
        self._frame_shape: tuple[int, int] | None = None

    def write(self, frames: np.ndarray) -> None:
        """Append upright ``uint8 (S, H, W)`` frames in {0, 1}."""
        frames = _check_frames(frames)
        self._check_shape(frames.shape[1:])
        self._fh.write(_frames_to_bytes(frames, self.flip).tobytes())
        self.frames_written += frames.shape[0]

    def write_packed(self, packed: np.ndarray) -> None:
        """Append upright packed rows ``uint8 (S, H, W/8)``."""
        packed = np.asarray(packed)
        if packed.ndim != 3 or packed.dtype != np.uint8:
            raise SpikeFormatError(f"packed frames must be uint8 (S, H, W/8), got {packed.dtype} {packed.shape}")
        self._check_shape((packed.shape[1], packed.shape[2] * 8))
        rows = packed[:, ::-1] if self.flip else packed
        self._fh.write(np.ascontiguousarray(rows).tobytes())
        self.frames_written += packed.shape[0]

    def _check_shape(self, hw: tuple[int, int]) -> None:
        if self._frame_shape is None:
            self._frame_shape = tuple(hw)
        elif tuple(hw) != self._frame_shape:
            raise SpikeFormatError(
                f"{self.path}: frames of {hw[0]}x{hw[1]} cannot follow frames of "
                f"{self._frame_shape[0]}x{self._frame_shape[1]} in one stream"
            )

    def close(self) -> None:
        if self._fh.closed:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> DatWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_dat(path: str | os.PathLike, frames: np.ndarray, *, flip: bool = True) -> Path:
    """Write upright ``uint8 (S, H, W)`` spike frames in {0, 1} as a ``.dat`` file, atomically.

    The exact inverse of :func:`read_dat` with the same ``flip``: the round trip is bit-exact.
    """
    with DatWriter(path, flip=flip) as w:
        w.write(frames)
    return Path(path)


def write_dat_packed(path: str | os.PathLike, packed: np.ndarray, *, flip: bool = True) -> Path:
    """Write upright packed rows ``uint8 (S, H, W/8)`` (as :meth:`SpikeStream.packed` returns) atomically."""
    with DatWriter(path, flip=flip) as w:
        w.write_packed(packed)
    return Path(path)
