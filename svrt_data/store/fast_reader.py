"""Chunk-aligned reads straight from Zarr v3 shard files: the training loader's fast path.

zarr-python's read path costs milliseconds of per-chunk bookkeeping for a single clip crop (even from
the page cache), which is more than the decode itself. This module reads the same bytes itself:

- a sharded array (codec ``sharding_indexed``) keeps, per shard file, an index of ``(offset, nbytes)``
  ``uint64`` pairs, one per inner chunk in C order over the shard's chunk grid, followed (``index_location``
  ``end``; ``start`` is read too) by the index's crc32c, 4 bytes little endian; an empty chunk is
  ``offset = nbytes = 2**64 - 1``;
- an unsharded array keeps one file per chunk;
- an inner chunk is ``bytes`` (C order, the stated endianness) optionally compressed by ``zstd`` or
  ``blosc``, optionally followed by its crc32c (4 bytes little endian), which is checked on every read
  (:attr:`ShardedArrayReader.verify_checksums`); it is decoded with numcodecs into a buffer of the whole
  chunk (edge chunks included, which zarr stores padded to the full chunk shape), then the part the
  request needs is copied out.

svrt writers store every chunk (layout v2), so an empty index entry or a missing file is damage: reads
raise :class:`StoreError` naming the array, the chunk and ``svrt-data verify``, never fill values.

:class:`ShardedArrayReader` does this; :class:`ZarrArrayReader` is the reference with the same
interface through zarr itself (tests compare the two bit for bit). Both are picklable and hold no open
file before their first read: files open lazily in the process that reads (DataLoader workers under
fork, forkserver or spawn), and a reader used after a fork reopens its files. An optional
:class:`ChunkCache` keeps decoded chunks, bounded in bytes, least recently used first out.

Any other codec chain is refused by :func:`~svrt_data.store.array_meta.parse_array_meta` with the codec
named, so a store written by another layout fails when a dataset is built, not in a worker.
"""

from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import google_crc32c
import numpy as np

from svrt_data.store.array_meta import ArrayMeta, parse_array_meta
from svrt_errors import StoreError

__all__ = ["ArrayMeta", "ChunkCache", "ShardedArrayReader", "ZarrArrayReader", "parse_array_meta", "Selection",
           "damaged"]

Selection = Sequence[tuple[int, int]]  # per axis [start, stop)
EMPTY = 2**64 - 1  # offset and nbytes of an empty inner chunk in a shard index
MAX_OPEN_FILES = 64  # per reader; shard files beyond this are closed least recently used first
DAMAGE_HINT = "the store is damaged"  # verify cuts messages here (it *is* the command they point to)


def damaged(meta: ArrayMeta, coords: Sequence[int] | None, what: str) -> StoreError:
    """The error of a damaged chunk: the array, the chunk, its file, what is wrong, and the fix."""
    where = f"chunk {tuple(coords)} (file {meta.file_of(coords)})" if coords is not None else "array"
    store = _store_of(meta.path)
    return StoreError(f"{meta.path}: {where}: {what}; {DAMAGE_HINT}: run `svrt-data verify {store}`, which lists "
                      "every damaged chunk and the command that rebuilds them")


def _store_of(array_path: str) -> str:
    """The store folder above an array (the nearest folder whose zarr.json carries svrt's root attribute)."""
    p = os.path.dirname(array_path)
    for _ in range(3):  # array <- sequence <- split <- store
        parent = os.path.dirname(p)
        if not parent or parent == p:
            break
        try:
            with open(os.path.join(p, "zarr.json"), "rb") as fh:
                if b'"svrt_layout"' in fh.read():
                    return p
        except OSError:
            pass
        p = parent
    return "STORE"


class ChunkCache:
    """Decoded chunks, least recently used first out, holding at most ``max_bytes``.

    One per process (each DataLoader worker builds its own after it starts); chunks are stored
    read-only so that no caller can change a cached chunk.
    """

    def __init__(self, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
            raise StoreError(f"ChunkCache: max_bytes must be an integer >= 0, got {max_bytes!r}")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple) -> np.ndarray | None:
        arr = self._items.get(key)
        if arr is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return arr

    def put(self, key: tuple, arr: np.ndarray) -> None:
        if arr.nbytes > self.max_bytes or key in self._items:
            return
        arr.flags.writeable = False
        self._items[key] = arr
        self.nbytes += arr.nbytes
        while self.nbytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.nbytes -= old.nbytes

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0


def _zstd_content_size(data: bytes) -> int | None:
    """The decoded size a zstd frame header declares (RFC 8878, 3.1.1.1), or None when it declares none."""
    if len(data) < 6 or int.from_bytes(data[:4], "little") != 0xFD2FB528:
        raise ValueError("not a zstd frame")
    descriptor = data[4]
    fcs_flag, single, dict_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    size = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if size == 0:
        return None
    value = int.from_bytes(data[pos : pos + size], "little")
    return value + 256 if size == 2 else value


def _decode(compressor: str | None, data: bytes, out: np.ndarray) -> None:
    """Decode one chunk's bytes into ``out`` (a contiguous 1-d uint8 view of the chunk buffer).

    numcodecs fills a larger destination partly without complaint, so the size each frame declares is
    checked first: a chunk that decodes to anything but the whole buffer is an error, never padded.
    """
    if compressor is None:
        if len(data) != out.nbytes:
            raise ValueError(f"{len(data)} bytes where the chunk holds {out.nbytes}")
        out[:] = np.frombuffer(data, np.uint8)
    elif compressor == "zstd":
        from numcodecs import zstd

        size = _zstd_content_size(data)
        if size != out.nbytes:
            raise ValueError(f"the zstd frame holds {size} bytes where the chunk holds {out.nbytes}")
        zstd.decompress(data, out)
    elif compressor == "blosc":
        from numcodecs import blosc

        size = int.from_bytes(data[4:8], "little") if len(data) >= 16 else None
        if size != out.nbytes:
            raise ValueError(f"the blosc frame holds {size} bytes where the chunk holds {out.nbytes}")
        # One thread: chunks are small and DataLoader workers are the parallelism; in a main process
        # numcodecs would start a thread per core, which costs more than it gains on chunks this size
        # (benchmarks/RESULTS.md, Loader). The flag is process-wide and read per call, so it is set
        # around this call only and restored.
        threads, blosc.use_threads = blosc.use_threads, False
        try:
            blosc.decompress(data, out)
        finally:
            blosc.use_threads = threads
    else:
        raise ValueError(f"unknown compressor {compressor!r}")


class ShardedArrayReader:
    """Reads boxes of one Zarr v3 array chunk by chunk from its files (see the module docstring).

    Args:
        meta: the array (from :func:`parse_array_meta`).
        cache: optional decoded-chunk cache (shared by the readers of one process).
        verify_checksums: check each chunk's crc32c when the array has them (on by default; off only to
            measure what the check costs, ``benchmarks/bench_loader.py``).
    """

    def __init__(self, meta: ArrayMeta, cache: ChunkCache | None = None, *, verify_checksums: bool = True) -> None:
        self.meta = meta
        self.cache = cache
        self.verify_checksums = bool(verify_checksums)
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._files: OrderedDict[str, int] = OrderedDict()  # path -> fd
        self._indexes: dict[tuple[int, ...], list[list[int]]] = {}
        self._scratch: np.ndarray | None = None
        self._per = self.meta.chunks_per_file

    def __getstate__(self) -> dict:
        return {"meta": self.meta, "cache": self.cache, "verify_checksums": self.verify_checksums}

    def __setstate__(self, state: dict) -> None:
        self.meta, self.cache = state["meta"], state["cache"]
        self.verify_checksums = state.get("verify_checksums", True)
        self._reset()

    def close(self) -> None:
        """Close the open files (reading again reopens them)."""
        if self._pid == os.getpid():
            for fd in self._files.values():
                os.close(fd)
        self._files.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to release
            pass

    # -- files and shard indexes -----------------------------------------------------------
    def _fd(self, key: str, coords: tuple[int, ...]) -> int:
        if self._pid != os.getpid():  # forked: the inherited descriptors belong to the parent's bookkeeping
            self._files.clear()
            self._pid = os.getpid()
        fd = self._files.get(key)
        if fd is not None:
            self._files.move_to_end(key)
            return fd
        try:
            fd = os.open(os.path.join(self.meta.path, key), os.O_RDONLY)
        except FileNotFoundError:
            raise damaged(self.meta, coords, f"its file {key} is missing") from None
        except OSError as exc:
            raise damaged(self.meta, coords, f"its file {key} cannot be opened ({exc.strerror})") from None
        self._files[key] = fd
        if len(self._files) > MAX_OPEN_FILES:
            _, old = self._files.popitem(last=False)
            os.close(old)
        return fd

    def _index(self, cell: tuple[int, ...], coords: tuple[int, ...]) -> list[list[int]]:
        """The ``(offset, nbytes)`` rows of shard ``cell`` (``coords``: the chunk asked for, for errors)."""
        index = self._indexes.get(cell)
        if index is not None:
            return index
        key = self.meta.file_key(cell)
        fd = self._fd(key, coords)
        n = int(np.prod(self.meta.chunks_per_file, dtype=np.int64))
        size = os.fstat(fd).st_size
        length = 16 * n + 4
        if size < length:
            raise damaged(self.meta, coords, f"the shard file of {size} bytes cannot hold its index of {length} bytes")
        raw = os.pread(fd, length, size - length if self.meta.index_at_end else 0)
        if google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            raise damaged(self.meta, coords, "shard index checksum mismatch")
        index = np.frombuffer(raw[:-4], "<u8").reshape(n, 2).tolist()  # Python ints: cheap to look up
        self._indexes[cell] = index
        return index

    def _chunk_bytes(self, coords: tuple[int, ...]) -> bytes:
        """The stored bytes of chunk ``coords`` (checksum included); raises when absent or cut short."""
        m = self.meta
        if not m.sharded:
            key = m.file_key(coords)
            fd = self._fd(key, coords)
            return os.pread(fd, os.fstat(fd).st_size, 0)
        # the hot path of training reads (~100 chunks per clip): plain integer arithmetic, no numpy calls
        cell, row = [], 0
        for c, p in zip(coords, self._per, strict=True):
            q, r = divmod(c, p)
            cell.append(q)
            row = row * p + r
        cell_t = tuple(cell)
        index = self._indexes.get(cell_t) or self._index(cell_t, coords)
        offset, nbytes = index[row]
        if offset == EMPTY and nbytes == EMPTY:
            raise damaged(m, coords, "the shard index marks it empty, but svrt stores every chunk")
        data = os.pread(self._fd(m.file_key(cell_t), coords), nbytes, offset)
        if len(data) != nbytes:
            raise damaged(m, coords, f"cut short ({len(data)} of {nbytes} bytes)")
        return data

    def _payload(self, coords: tuple[int, ...], data: bytes) -> bytes | np.ndarray:
        """The chunk's encoded bytes without its checksum, after checking it."""
        if not self.meta.checksum:
            return data
        if len(data) < 4:
            raise damaged(self.meta, coords, f"{len(data)} bytes cannot hold its 4-byte checksum")
        body = np.frombuffer(data, np.uint8)[:-4]  # a view: no copy of the chunk
        if self.verify_checksums:
            want, got = int.from_bytes(data[-4:], "little"), int(google_crc32c.value(body))
            if want != got:
                raise damaged(self.meta, coords, f"checksum mismatch (stored crc32c {want:08x}, computed {got:08x})")
        return body

    def chunk(self, coords: tuple[int, ...]) -> np.ndarray:
        """Chunk ``coords`` decoded (the full chunk shape, also at the edges); raises when it is damaged.

        Without a cache the result is a scratch buffer that the next call overwrites.
        """
        key = (self.meta.path, coords)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        data = self._payload(coords, self._chunk_bytes(coords))
        m = self.meta
        if self.cache is not None:
            buf = np.empty(m.chunks, m.dtype)
        else:
            if self._scratch is None:
                self._scratch = np.empty(m.chunks, m.dtype)
            buf = self._scratch
        try:
            _decode(m.compressor, data, buf.reshape(-1).view(np.uint8))
        except Exception as exc:
            raise damaged(m, coords, f"cannot be decoded with {m.compressor} ({exc})") from None
        if self.cache is not None:
            self.cache.put(key, buf)
        return buf

    def missing_chunks(self, limit: int | None = None) -> list[str]:
        """Problems of the chunks that should exist but do not (missing shard files, empty index entries,
        unreadable or mismatching shard indexes), without decoding anything: one ``pread`` per shard."""
        m = self.meta
        out: list[str] = []
        for cell in np.ndindex(*(-(-g // p) for g, p in zip(m.chunk_grid, self._per, strict=True))):
            first = tuple(c * p for c, p in zip(cell, self._per, strict=True))
            try:
                if not m.sharded:
                    self._fd(m.file_key(cell), first)
                    continue
                index = self._index(cell, first)
            except StoreError as exc:
                out.append(str(exc))
            else:
                for i, (offset, nbytes) in enumerate(index):
                    local = np.unravel_index(i, self._per)
                    coords = tuple(int(f + c) for f, c in zip(first, local, strict=True))
                    inside = all(c < g for c, g in zip(coords, m.chunk_grid, strict=True))
                    if inside and offset == EMPTY and nbytes == EMPTY:
                        out.append(str(damaged(m, coords, "the shard index marks it empty, but svrt stores "
                                                          "every chunk")))
            if limit is not None and len(out) >= limit:
                break
        return out

    # -- reads -----------------------------------------------------------------------------
    def read_into(self, box: Selection, out: np.ndarray) -> np.ndarray:
        """Copy ``array[box]`` into ``out`` (any strides, e.g. a flipped view) and return ``out``.

        Args:
            box: per axis ``(start, stop)`` with ``0 <= start <= stop <= size``.
            out: an array of shape ``stop - start`` per axis.
        """
        m = self.meta
        box = _check_box(m.path, m.shape, box)
        want = tuple(b - a for a, b in box)
        if tuple(out.shape) != want:
            raise StoreError(f"{m.path}: out has shape {tuple(out.shape)}, the box {box} needs {want}")
        if 0 in want:
            return out
        spans = [range(a // c, (b - 1) // c + 1) for (a, b), c in zip(box, m.chunks, strict=True)]
        for coords in itertools.product(*spans):
            src, dst = [], []
            for (a, b), c, k in zip(box, m.chunks, coords, strict=True):
                lo, hi = max(a, k * c), min(b, (k + 1) * c)
                src.append(slice(lo - k * c, hi - k * c))
                dst.append(slice(lo - a, hi - a))
            out[tuple(dst)] = self.chunk(coords)[tuple(src)]
        return out

    def read(self, box: Selection) -> np.ndarray:
        """``array[box]`` as a new C-contiguous array."""
        box = _check_box(self.meta.path, self.meta.shape, box)
        return self.read_into(box, np.empty(tuple(b - a for a, b in box), self.meta.dtype))

    def first_damage(self, box: Selection) -> StoreError | None:
        """The error of the first damaged chunk inside ``box`` (or None): the slow path that names the chunk
        when a read through zarr failed."""
        box = _check_box(self.meta.path, self.meta.shape, box)
        if any(a == b for a, b in box):
            return None
        spans = [range(a // c, (b - 1) // c + 1) for (a, b), c in zip(box, self.meta.chunks, strict=True)]
        for coords in itertools.product(*spans):
            try:
                self.chunk(coords)
            except StoreError as exc:
                return exc
        return None


class ZarrArrayReader:
    """The reference: the same interface as :class:`ShardedArrayReader`, reading through zarr-python.

    zarr checks the chunk checksums itself but reads a missing chunk as fill values, so the array's
    chunks are proven present (shard indexes) before its first read, and a failing read is reported
    with the damaged chunk named.
    """

    def __init__(self, meta: ArrayMeta) -> None:
        self.meta = meta
        self._array: Any = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {"meta": self.meta}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["meta"])

    def _open(self) -> Any:
        if self._array is None or self._pid != os.getpid():
            import zarr

            self._fast = ShardedArrayReader(parse_array_meta(self.meta.path))
            missing = self._fast.missing_chunks(limit=1)
            if missing:
                raise StoreError(missing[0])
            self._array = zarr.open_array(self.meta.path, mode="r")
            self._pid = os.getpid()
        return self._array

    def close(self) -> None:
        self._array = None

    def _get(self, box: tuple[tuple[int, int], ...]) -> np.ndarray:
        array = self._open()
        try:
            return array[tuple(slice(a, b) for a, b in box)]
        except Exception as exc:
            found = self._fast.first_damage(box)
            if found is None:
                raise
            raise found from exc

    def read_into(self, box: Selection, out: np.ndarray) -> np.ndarray:
        out[...] = self._get(_check_box(self.meta.path, self.meta.shape, box))
        return out

    def read(self, box: Selection) -> np.ndarray:
        return np.ascontiguousarray(self._get(_check_box(self.meta.path, self.meta.shape, box)))


def _check_box(path: str, shape: tuple[int, ...], box: Selection) -> tuple[tuple[int, int], ...]:
    box = tuple((int(a), int(b)) for a, b in box)
    if len(box) != len(shape) or any(not 0 <= a <= b <= n for (a, b), n in zip(box, shape, strict=False)):
        raise StoreError(f"{path}: box {list(box)} is outside the array of shape {shape}; each axis needs "
                         "0 <= start <= stop <= size")
    return box
