"""Chunk-aligned reads straight from Zarr v3 shard files: the training loader's fast path.

zarr-python's read path costs milliseconds of per-chunk bookkeeping for a single clip crop (even from
the page cache), which is more than the decode itself. This module reads the same bytes itself:

- a sharded array (codec ``sharding_indexed``) keeps, per shard file, an index of ``(offset, nbytes)``
  ``uint64`` pairs, one per inner chunk in C order over the shard's chunk grid, followed (``index_location``
  ``end``; ``start`` is read too) by the index's crc32c, 4 bytes little endian; an empty chunk is
  ``offset = nbytes = 2**64 - 1`` and reads as the fill value, and so does a missing shard file;
- an unsharded array keeps one file per chunk;
- an inner chunk is ``bytes`` (C order, the stated endianness) optionally compressed by ``zstd`` or
  ``blosc``; it is decoded with numcodecs into a buffer of the whole chunk (edge chunks included,
  which zarr stores padded to the full chunk shape), then the part the request needs is copied out.

:class:`ShardedArrayReader` does this; :class:`ZarrArrayReader` is the reference with the same
interface through zarr itself (tests compare the two bit for bit). Both are picklable and hold no open
file before their first read: files open lazily in the process that reads (DataLoader workers under
fork, forkserver or spawn), and a reader used after a fork reopens its files. An optional
:class:`ChunkCache` keeps decoded chunks, bounded in bytes, least recently used first out.

Any other codec chain is refused by :func:`parse_array_meta` with the codec named, so a store written
by another layout fails when a dataset is built, not in a worker.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from svrt_errors import StoreError, StoreLayoutError

__all__ = ["ArrayMeta", "ChunkCache", "ShardedArrayReader", "ZarrArrayReader", "parse_array_meta", "Selection"]

Selection = Sequence[tuple[int, int]]  # per axis [start, stop)
EMPTY = 2**64 - 1  # offset and nbytes of an empty inner chunk in a shard index
MAX_OPEN_FILES = 64  # per reader; shard files beyond this are closed least recently used first
_COMPRESSORS = ("zstd", "blosc")


@dataclass(frozen=True)
class ArrayMeta:
    """What reading one Zarr v3 array needs, parsed from its ``zarr.json`` (plain data, picklable).

    ``grid`` is the shape of one file's content (the shard, or the chunk when unsharded); ``chunks``
    the decoded unit (the inner chunk when sharded; equal to ``grid`` otherwise).
    """

    path: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype string with byte order, e.g. "|u1", "<f2"
    fill_value: float | int
    grid: tuple[int, ...]
    chunks: tuple[int, ...]
    sharded: bool
    index_at_end: bool
    compressor: str | None  # "zstd", "blosc" or None
    key_encoding: str  # "default" or "v2"
    separator: str

    @property
    def chunks_per_file(self) -> tuple[int, ...]:
        return tuple(g // c for g, c in zip(self.grid, self.chunks, strict=True))

    @property
    def chunk_nbytes(self) -> int:
        return int(np.prod(self.chunks, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def file_key(self, coords: Sequence[int]) -> str:
        """The file of grid cell ``coords`` relative to the array folder (zarr's chunk key encoding)."""
        if self.key_encoding == "default":
            return self.separator.join(["c", *map(str, coords)]) if coords else "c"
        return self.separator.join(map(str, coords)) if coords else "0"


def _unsupported(path: Path, what: str) -> StoreLayoutError:
    return StoreLayoutError(
        f"{path}: {what}; the fast reader reads 'bytes' + optional zstd/blosc chunks, sharded or not, as svrt "
        "layout v1 writes them. Rebuild the store with `svrt-data voxelize --overwrite`, or read it with "
        "reader='zarr' (slower)"
    )


def _parse_inner(path: Path, codecs: list[dict]) -> tuple[str, str | None]:
    """``(byte order, compressor)`` of a ``[bytes, (zstd | blosc)?]`` chain."""
    names = [c.get("name") for c in codecs]
    if not names or names[0] != "bytes" or len(names) > 2 or (len(names) == 2 and names[1] not in _COMPRESSORS):
        raise _unsupported(path, f"codec chain {names} is not supported")
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    if endian not in ("little", "big"):
        raise _unsupported(path, f"bytes codec endian {endian!r} is not supported")
    return ("<" if endian == "little" else ">"), (names[1] if len(names) == 2 else None)


def _fill_value(path: Path, value: Any, dtype: np.dtype) -> float | int:
    specials = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
    if isinstance(value, str) and value in specials and dtype.kind == "f":
        return specials[value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _unsupported(path, f"fill_value {value!r} is not supported")
    return value


def parse_array_meta(array_dir: str | os.PathLike) -> ArrayMeta:
    """Read and check ``array_dir/zarr.json``; raise :class:`StoreLayoutError` for anything unsupported."""
    path = Path(array_dir)
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except OSError as exc:
        raise StoreLayoutError(f"{path}: no readable zarr.json ({exc}); is this a Zarr v3 array?") from None
    except ValueError as exc:
        raise StoreLayoutError(f"{path}/zarr.json is not valid JSON ({exc})") from None
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
        raise _unsupported(path, f"zarr_format {meta.get('zarr_format')!r} / node_type {meta.get('node_type')!r} "
                                 "is not a Zarr v3 array")
    if meta.get("storage_transformers"):
        raise _unsupported(path, "storage transformers are not supported")
    grid = meta.get("chunk_grid", {})
    if grid.get("name") != "regular":
        raise _unsupported(path, f"chunk grid {grid.get('name')!r} is not supported")
    shape = tuple(int(v) for v in meta["shape"])
    outer = tuple(int(v) for v in grid["configuration"]["chunk_shape"])
    try:
        base = np.dtype(meta["data_type"])
    except TypeError:
        raise _unsupported(path, f"data type {meta['data_type']!r} is not supported") from None
    enc = meta.get("chunk_key_encoding", {"name": "default"})
    key_name = enc.get("name")
    if key_name not in ("default", "v2"):
        raise _unsupported(path, f"chunk key encoding {key_name!r} is not supported")
    separator = (enc.get("configuration") or {}).get("separator", "/" if key_name == "default" else ".")
    codecs = meta.get("codecs", [])
    if len(codecs) == 1 and codecs[0].get("name") == "sharding_indexed":
        conf = codecs[0]["configuration"]
        inner = tuple(int(v) for v in conf["chunk_shape"])
        if len(inner) != len(outer) or any(o % i for o, i in zip(outer, inner, strict=True)):
            raise _unsupported(path, f"inner chunks {inner} do not divide the shard {outer}")
        order, compressor = _parse_inner(path, conf["codecs"])
        index_names = [c.get("name") for c in conf.get("index_codecs", [])]
        if index_names != ["bytes", "crc32c"]:
            raise _unsupported(path, f"shard index codecs {index_names} are not supported (expected bytes, crc32c)")
        if (conf["index_codecs"][0].get("configuration") or {}).get("endian", "little") != "little":
            raise _unsupported(path, "a big-endian shard index is not supported")
        location = conf.get("index_location", "end")
        if location not in ("start", "end"):
            raise _unsupported(path, f"shard index location {location!r} is not supported")
        sharded, index_at_end = True, location == "end"
    else:
        inner = outer
        order, compressor = _parse_inner(path, codecs)
        sharded, index_at_end = False, True
    dtype = base.newbyteorder(order) if base.itemsize > 1 else base
    return ArrayMeta(
        path=str(path), shape=shape, dtype=dtype.str, fill_value=_fill_value(path, meta.get("fill_value"), base),
        grid=outer, chunks=inner, sharded=sharded, index_at_end=index_at_end, compressor=compressor,
        key_encoding=key_name, separator=separator,
    )


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
    """

    def __init__(self, meta: ArrayMeta, cache: ChunkCache | None = None) -> None:
        self.meta = meta
        self.cache = cache
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._files: OrderedDict[str, int] = OrderedDict()  # path -> fd
        self._indexes: dict[tuple[int, ...], list[list[int]] | None] = {}
        self._scratch: np.ndarray | None = None
        self._per = self.meta.chunks_per_file

    def __getstate__(self) -> dict:
        return {"meta": self.meta, "cache": self.cache}

    def __setstate__(self, state: dict) -> None:
        self.meta, self.cache = state["meta"], state["cache"]
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
    def _fd(self, key: str) -> int | None:
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
            return None
        self._files[key] = fd
        if len(self._files) > MAX_OPEN_FILES:
            _, old = self._files.popitem(last=False)
            os.close(old)
        return fd

    def _index(self, cell: tuple[int, ...]) -> list[list[int]] | None:
        """The ``(offset, nbytes)`` rows of shard ``cell``, or None when its file does not exist."""
        if cell in self._indexes:
            return self._indexes[cell]
        key = self.meta.file_key(cell)
        fd = self._fd(key)
        if fd is None:
            self._indexes[cell] = None
            return None
        n = int(np.prod(self.meta.chunks_per_file, dtype=np.int64))
        size = os.fstat(fd).st_size
        length = 16 * n + 4
        if size < length:
            raise StoreError(f"{self.meta.path}/{key}: shard file of {size} bytes cannot hold its index of "
                             f"{length} bytes; the store is damaged (run `svrt-data verify`)")
        raw = os.pread(fd, length, size - length if self.meta.index_at_end else 0)
        import google_crc32c

        if google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            raise StoreError(f"{self.meta.path}/{key}: shard index checksum mismatch; the store is damaged "
                             "(run `svrt-data verify`)")
        index = np.frombuffer(raw[:-4], "<u8").reshape(n, 2).tolist()  # Python ints: cheap to look up
        self._indexes[cell] = index
        return index

    def _chunk_bytes(self, coords: tuple[int, ...]) -> bytes | None:
        """The encoded bytes of chunk ``coords``, or None for an empty or missing chunk."""
        m = self.meta
        if not m.sharded:
            fd = self._fd(m.file_key(coords))
            if fd is None:
                return None
            return os.pread(fd, os.fstat(fd).st_size, 0)
        # the hot path of training reads (~100 chunks per clip): plain integer arithmetic, no numpy calls
        cell, row = [], 0
        for c, p in zip(coords, self._per, strict=True):
            q, r = divmod(c, p)
            cell.append(q)
            row = row * p + r
        cell_t = tuple(cell)
        index = self._indexes[cell_t] if cell_t in self._indexes else self._index(cell_t)
        if index is None:
            return None
        offset, nbytes = index[row]
        if offset == EMPTY and nbytes == EMPTY:
            return None
        data = os.pread(self._fd(m.file_key(cell_t)), nbytes, offset)
        if len(data) != nbytes:
            raise StoreError(f"{m.path}/{m.file_key(cell_t)}: chunk {coords} is cut short ({len(data)} of {nbytes} "
                             "bytes); the store is damaged (run `svrt-data verify`)")
        return data

    def chunk(self, coords: tuple[int, ...]) -> np.ndarray | None:
        """Chunk ``coords`` decoded (the full chunk shape, also at the edges), or None if it holds only fill.

        Without a cache the result is a scratch buffer that the next call overwrites.
        """
        key = (self.meta.path, coords)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        data = self._chunk_bytes(coords)
        if data is None:
            return None
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
            raise StoreError(f"{m.path}: chunk {coords} cannot be decoded with {m.compressor} ({exc}); the store "
                             "is damaged (run `svrt-data verify`)") from None
        if self.cache is not None:
            self.cache.put(key, buf)
        return buf

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
            chunk = self.chunk(coords)
            if chunk is None:
                out[tuple(dst)] = m.fill_value
            else:
                out[tuple(dst)] = chunk[tuple(src)]
        return out

    def read(self, box: Selection) -> np.ndarray:
        """``array[box]`` as a new C-contiguous array."""
        box = _check_box(self.meta.path, self.meta.shape, box)
        return self.read_into(box, np.empty(tuple(b - a for a, b in box), self.meta.dtype))


class ZarrArrayReader:
    """The reference: the same interface as :class:`ShardedArrayReader`, reading through zarr-python."""

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

            self._array = zarr.open_array(self.meta.path, mode="r")
            self._pid = os.getpid()
        return self._array

    def close(self) -> None:
        self._array = None

    def read_into(self, box: Selection, out: np.ndarray) -> np.ndarray:
        box = _check_box(self.meta.path, self.meta.shape, box)
        out[...] = self._open()[tuple(slice(a, b) for a, b in box)]
        return out

    def read(self, box: Selection) -> np.ndarray:
        box = _check_box(self.meta.path, self.meta.shape, box)
        return np.ascontiguousarray(self._open()[tuple(slice(a, b) for a, b in box)])


def _check_box(path: str, shape: tuple[int, ...], box: Selection) -> tuple[tuple[int, int], ...]:
    box = tuple((int(a), int(b)) for a, b in box)
    if len(box) != len(shape) or any(not 0 <= a <= b <= n for (a, b), n in zip(box, shape, strict=False)):
        raise StoreError(f"{path}: box {list(box)} is outside the array of shape {shape}; each axis needs "
                         "0 <= start <= stop <= size")
    return box
