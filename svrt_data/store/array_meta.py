"""What reading one Zarr v3 array needs, parsed from its ``zarr.json`` and checked: :class:`ArrayMeta`.

Supported (what svrt layouts write): a regular chunk grid, the ``default`` or ``v2`` chunk key
encoding, and either one ``sharding_indexed`` codec (index ``bytes`` little endian + ``crc32c``, at
the start or the end of the shard) or no sharding; the chunk codec chain is ``bytes`` (either
endianness), an optional ``zstd`` or ``blosc`` compressor and an optional ``crc32c`` checksum, in
that order. Anything else is refused with the codec named, so a store written by another layout
fails when a dataset is built, not in a worker.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from svrt_errors import StoreLayoutError

__all__ = ["ArrayMeta", "parse_array_meta"]

_COMPRESSORS = ("zstd", "blosc")


@dataclass(frozen=True)
class ArrayMeta:
    """What reading one Zarr v3 array needs (plain data, picklable).

    ``grid`` is the shape of one file's content (the shard, or the chunk when unsharded); ``chunks``
    the decoded unit (the inner chunk when sharded; equal to ``grid`` otherwise). ``checksum``: every
    chunk ends in the crc32c of the bytes before it.
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
    checksum: bool = False

    @property
    def chunks_per_file(self) -> tuple[int, ...]:
        return tuple(g // c for g, c in zip(self.grid, self.chunks, strict=True))

    @property
    def chunk_nbytes(self) -> int:
        return int(np.prod(self.chunks, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    @property
    def chunk_grid(self) -> tuple[int, ...]:
        """Chunks per axis that hold array elements (chunks wholly past the edge are never stored)."""
        return tuple(math.ceil(s / c) for s, c in zip(self.shape, self.chunks, strict=True))

    def chunk_coords(self) -> Iterator[tuple[int, ...]]:
        """Every chunk that holds array elements, in C order."""
        return iter(np.ndindex(*self.chunk_grid))

    def file_key(self, coords: Sequence[int]) -> str:
        """The file of grid cell ``coords`` relative to the array folder (zarr's chunk key encoding)."""
        if self.key_encoding == "default":
            return self.separator.join(["c", *map(str, coords)]) if coords else "c"
        return self.separator.join(map(str, coords)) if coords else "0"

    def file_of(self, coords: Sequence[int]) -> str:
        """The file holding chunk ``coords`` (its shard when sharded)."""
        return self.file_key([c // p for c, p in zip(coords, self.chunks_per_file, strict=True)])


def _unsupported(path: Path, what: str) -> StoreLayoutError:
    return StoreLayoutError(
        f"{path}: {what}; svrt reads 'bytes' + optional zstd/blosc + optional crc32c chunks, sharded or not, as "
        "svrt layouts write them. Rebuild the store with `svrt-data voxelize RAW --out STORE --overwrite`"
    )


def _parse_inner(path: Path, codecs: list[dict]) -> tuple[str, str | None, bool]:
    """``(byte order, compressor, checksum)`` of a ``[bytes, (zstd | blosc)?, crc32c?]`` chain."""
    names = [c.get("name") for c in codecs]
    checksum = bool(names) and names[-1] == "crc32c"
    body = names[:-1] if checksum else names
    if not body or body[0] != "bytes" or len(body) > 2 or (len(body) == 2 and body[1] not in _COMPRESSORS):
        raise _unsupported(path, f"codec chain {names} is not supported")
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    if endian not in ("little", "big"):
        raise _unsupported(path, f"bytes codec endian {endian!r} is not supported")
    return ("<" if endian == "little" else ">"), (body[1] if len(body) == 2 else None), checksum


def _fill_value(path: Path, value: Any, dtype: np.dtype) -> float | int:
    specials = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
    if isinstance(value, str) and value in specials and dtype.kind == "f":
        return specials[value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _unsupported(path, f"fill_value {value!r} is not supported")
    return value


def _ints(path: Path, what: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                              for v in value):
        raise StoreLayoutError(f"{path}/zarr.json: {what} {value!r} is not a list of integers >= 0; the array "
                               "metadata is damaged (run `svrt-data verify`)")
    return tuple(value)


def parse_array_meta(array_dir: str | os.PathLike) -> ArrayMeta:
    """Read and check ``array_dir/zarr.json``; raise :class:`StoreLayoutError` for anything unsupported
    or damaged (unreadable, not JSON, fields of the wrong type)."""
    path = Path(array_dir)
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except OSError as exc:
        raise StoreLayoutError(f"{path}: no readable zarr.json ({exc}); is this a Zarr v3 array?") from None
    except ValueError as exc:
        raise StoreLayoutError(f"{path}/zarr.json is not valid JSON ({exc}); the array metadata is damaged "
                               "(run `svrt-data verify`)") from None
    try:
        return _parse(path, meta)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise StoreLayoutError(f"{path}/zarr.json lacks or mangles a field ({type(exc).__name__}: {exc}); the "
                               "array metadata is damaged (run `svrt-data verify`)") from None


def _parse(path: Path, meta: dict) -> ArrayMeta:
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
        got = (meta.get("zarr_format"), meta.get("node_type")) if isinstance(meta, dict) else type(meta).__name__
        raise _unsupported(path, f"zarr_format / node_type {got!r} is not a Zarr v3 array")
    if meta.get("storage_transformers"):
        raise _unsupported(path, "storage transformers are not supported")
    grid = meta.get("chunk_grid", {})
    if grid.get("name") != "regular":
        raise _unsupported(path, f"chunk grid {grid.get('name')!r} is not supported")
    shape = _ints(path, "shape", meta["shape"])
    outer = _ints(path, "chunk_shape", grid["configuration"]["chunk_shape"])
    if len(outer) != len(shape) or 0 in outer:
        raise StoreLayoutError(f"{path}/zarr.json: chunk shape {outer} does not fit the array shape {shape}")
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
        inner = _ints(path, "inner chunk_shape", conf["chunk_shape"])
        if len(inner) != len(outer) or 0 in inner or any(o % i for o, i in zip(outer, inner, strict=True)):
            raise _unsupported(path, f"inner chunks {inner} do not divide the shard {outer}")
        order, compressor, checksum = _parse_inner(path, conf["codecs"])
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
        order, compressor, checksum = _parse_inner(path, codecs)
        sharded, index_at_end = False, True
    dtype = base.newbyteorder(order) if base.itemsize > 1 else base
    return ArrayMeta(
        path=str(path), shape=shape, dtype=dtype.str, fill_value=_fill_value(path, meta.get("fill_value"), base),
        grid=outer, chunks=inner, sharded=sharded, index_at_end=index_at_end, compressor=compressor,
        key_encoding=key_name, separator=separator, checksum=checksum,
    )
