"""Reading clips of checked sequences into NumPy arrays: :class:`ClipReader`, opened lazily in every process.

:class:`ClipReader` holds only the :class:`~svrt_data.loader.store_scan.SequenceInfo` records of
:func:`~svrt_data.loader.store_scan.scan_store` until its first read; then it opens one array reader per
array it needs (the chunk-aligned :class:`~svrt_data.store.fast_reader.ShardedArrayReader`, or zarr itself
with ``reader="zarr"``), in the process that reads. It writes each crop straight into its
flipped/transposed place in the output (:meth:`~svrt_data.loader.clip_geometry.Dihedral.write_view`),
so a clip costs one decode and one copy per chunk it touches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from svrt_data.loader.clip_geometry import shift_packed
from svrt_data.loader.clip_plan import ClipSpec
from svrt_data.loader.store_scan import READERS, SequenceInfo, SpikeInput
from svrt_data.store.fast_reader import ChunkCache, ShardedArrayReader, ZarrArrayReader
from svrt_errors import StoreError, SvrtValueError

__all__ = ["ClipReader"]


class ClipReader:
    """Reads :class:`~svrt_data.loader.clip_plan.ClipSpec` clips of checked sequences into NumPy arrays.

    Args:
        sequences: from :func:`~svrt_data.loader.store_scan.scan_store`.
        spike_input: ``"voxels"``, ``"raw"`` or ``"none"``.
        sharp: read the sharp frames.
        reader: ``"fast"`` (chunk-aligned shard reads) or ``"zarr"`` (zarr-python; the reference).
        cache_bytes: decoded-chunk cache per process (fast reader only); 0 disables it.
        max_spike_frames: raw input: every clip's packed spikes are padded to this many frames.

    Output of :meth:`read` (shapes for a clip of T frames, output crop h x w, spike crop hs x ws):
    ``blur``/``sharp`` ``uint8 (T, 3, h, w)``; ``spikes`` ``(T, K, hs, ws)`` (the store's voxel dtype);
    raw: ``spike_bits`` ``uint8 (max_spike_frames, hs, ws / 8)``, ``spike_windows`` ``float64 (T, 2)`` and
    ``spike_len`` (see :mod:`svrt_data.loader.dataset` for the format).
    """

    def __init__(
        self,
        sequences: Sequence[SequenceInfo],
        *,
        spike_input: SpikeInput,
        sharp: bool,
        reader: Literal["fast", "zarr"] = "fast",
        cache_bytes: int = 0,
        max_spike_frames: int = 0,
    ) -> None:
        if reader not in READERS:
            raise SvrtValueError(f"reader must be one of {READERS}, got {reader!r}")
        if reader == "zarr" and cache_bytes:
            raise SvrtValueError("cache_bytes needs reader='fast' (zarr reads are the uncached reference)")
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, (int, np.integer)) or cache_bytes < 0:
            raise SvrtValueError(f"cache_bytes must be an integer >= 0, got {cache_bytes!r}")
        self.sequences = list(sequences)
        self.spike_input, self.sharp, self.reader = spike_input, sharp, reader
        self.cache_bytes, self.max_spike_frames = int(cache_bytes), int(max_spike_frames)
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._readers: dict[tuple[int, str], Any] = {}
        self.cache = ChunkCache(self.cache_bytes) if self.cache_bytes else None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for k in ("_readers", "cache", "_pid"):
            state.pop(k)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def close(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()

    def _array(self, seq: int, name: str) -> Any:
        if self._pid != os.getpid():  # a forked copy: keep the parent's decoded chunks, reopen the files
            self._pid = os.getpid()
            self._readers = {}
        r = self._readers.get((seq, name))
        if r is None:
            meta = self.sequences[seq].arrays[name]
            r = ShardedArrayReader(meta, self.cache) if self.reader == "fast" else ZarrArrayReader(meta)
            self._readers[(seq, name)] = r
        return r

    # -- shapes ----------------------------------------------------------------------------------
    def shapes(self, spec: ClipSpec) -> dict[str, tuple[tuple[int, ...], str]]:
        """``name -> (shape, dtype)`` of the arrays :meth:`read` returns for ``spec``."""
        info = self.sequences[spec.seq]
        t, (h, w), (hs, ws) = spec.length, spec.out_shape, spec.spike_out_shape
        out = {"blur": ((t, 3, h, w), "|u1")}
        if self.sharp:
            out["sharp"] = ((t, 3, h, w), "|u1")
        if self.spike_input == "voxels":
            out["spikes"] = ((t, info.bins, hs, ws), info.arrays["voxels"].dtype)
        elif self.spike_input == "raw":
            out["spike_bits"] = ((self.max_spike_frames, hs, ws // 8), "|u1")
            out["spike_windows"] = ((t, 2), "<f8")
        return out

    # -- reading ---------------------------------------------------------------------------------
    def read(self, spec: ClipSpec, out: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """Read one clip, into ``out`` (arrays of :meth:`shapes`) when given; returns the arrays (and
        ``spike_len`` for raw input)."""
        shapes = self.shapes(spec)
        if out is None:
            out = {k: np.empty(s, d) for k, (s, d) in shapes.items()}
        t0, t = spec.start, spec.length
        y0, x0, rh, rw = spec.box
        frames = (t0, t0 + t)
        for name in ("blur", "sharp") if self.sharp else ("blur",):
            dst = spec.dihedral.write_view(out[name].transpose(0, 2, 3, 1), 1, 2)  # T h w 3 view of T 3 h w
            self._array(spec.seq, name).read_into([frames, (y0, y0 + rh), (x0, x0 + rw), (0, 3)], dst)
        ys, xs, rhs, rws = spec.spike_box
        result: dict[str, Any] = dict(out)
        if self.spike_input == "voxels":
            k = self.sequences[spec.seq].bins
            dst = spec.dihedral.write_view(out["spikes"], 2, 3)
            self._array(spec.seq, "voxels").read_into([frames, (0, k), (ys, ys + rhs), (xs, xs + rws)], dst)
        elif self.spike_input == "raw":
            lo, hi = spec.spike_range
            q, bit = divmod(xs, 8)
            nb = rws // 8
            raw = self._array(spec.seq, "spikes").read([(lo, hi), (ys, ys + rhs), (q, q + nb + (bit > 0))])
            bits = spec.dihedral.apply_packed(shift_packed(raw, bit, nb))
            dst = out["spike_bits"]
            if hi - lo > len(dst):
                raise StoreError(f"internal: clip needs {hi - lo} spike frames, buffers hold {len(dst)}")
            dst[: hi - lo] = bits
            dst[hi - lo :] = 0
            out["spike_windows"][...] = self.sequences[spec.seq].windows[t0 : t0 + t] - lo
            result["spike_len"] = hi - lo
            result["spike_first"] = lo
        return result
