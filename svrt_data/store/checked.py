"""zarr arrays whose reads fail loudly on damage: :class:`CheckedArray`.

zarr-python checks each chunk's crc32c (layout v2) but reads a missing chunk or shard as fill values
and reports a damaged one without naming it. A :class:`CheckedArray` proves, before its first read,
that every chunk of the array exists (one ``pread`` of each shard index), and turns a failing read into
a :class:`~svrt_errors.StoreError` naming the array, the damaged chunk and ``svrt-data verify`` (found
by re-reading the selection chunk by chunk with the fast reader: the slow path, taken only on errors).
Everything else (``shape``, ``dtype``, ``chunks``, ``metadata``, ``attrs``...) is the zarr array's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from svrt_data.store.fast_reader import ShardedArrayReader, parse_array_meta
from svrt_errors import StoreError

__all__ = ["CheckedArray"]


def _box(selection: Any, shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """Per-axis ``[start, stop)`` covering a basic selection (ints, slices, Ellipsis); the whole array
    for anything else (the box is only used to look for the damaged chunk)."""
    whole = [(0, n) for n in shape]
    sel = selection if isinstance(selection, tuple) else (selection,)
    if sum(s is Ellipsis for s in sel) > 1:
        return whole
    if Ellipsis in sel:
        i = sel.index(Ellipsis)
        sel = sel[:i] + (slice(None),) * (len(shape) - len(sel) + 1) + sel[i + 1 :]
    sel = sel + (slice(None),) * (len(shape) - len(sel))
    if len(sel) != len(shape):
        return whole
    out = []
    for s, n in zip(sel, shape, strict=True):
        if isinstance(s, (int, np.integer)) and -n <= int(s) < n:
            i = int(s) % n
            out.append((i, i + 1))
        elif isinstance(s, slice):
            r = range(*s.indices(n))
            out.append((min(r[0], r[-1]), max(r[0], r[-1]) + 1) if len(r) else (0, 0))
        else:
            return whole
    return out


class CheckedArray:
    """A read-only zarr array (from a sequence group) whose reads prove their chunks present and intact.

    Args:
        array: the zarr array.
        path: its folder (``STORE/split/sequence/name``).
    """

    def __init__(self, array: Any, path: str) -> None:
        self._array = array
        self._path = path
        self._fast: ShardedArrayReader | None = None

    def _reader(self) -> ShardedArrayReader:
        if self._fast is None:
            fast = ShardedArrayReader(parse_array_meta(self._path))
            missing = fast.missing_chunks(limit=1)
            if missing:
                raise StoreError(missing[0])
            self._fast = fast
        return self._fast

    def __getattr__(self, name: str) -> Any:
        return getattr(self._array, name)

    def __len__(self) -> int:
        return len(self._array)

    def __repr__(self) -> str:
        return f"CheckedArray({self._path!r}, {self._array.dtype} {self._array.shape})"

    def __getitem__(self, selection: Any) -> Any:
        fast = self._reader()
        try:
            return self._array[selection]
        except Exception as exc:
            found = fast.first_damage(_box(selection, tuple(self._array.shape)))
            if found is None:
                raise
            raise found from exc

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = np.asarray(self[...])
        return data if dtype is None else data.astype(dtype, copy=False)
