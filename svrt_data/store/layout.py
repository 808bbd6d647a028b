"""The Zarr store layout, version 2: names, dimensions, dtypes, chunks, shards and codecs.

This module is the only place that knows how a store is laid out; writers, readers, the verifier and
the job planner ask it. :func:`sequence_arrays` gives every array of a sequence (shape, dtype, chunks,
shards, dimension names) from the sequence's sizes (:class:`SequenceGeometry`). (Modelled on ome-zarr's
``format.py``: one declaration, a version, readers that check it.)

::

    store.zarr/                         attrs: svrt_layout, tool_version, created_by, source
      <split>/<sequence>/               attrs: svrt_sequence (geometry, voxel settings, provenance),
                                               svrt_complete (checksums; written LAST)
        blur     uint8   (N, H, W, 3)      dims frame, y, x, channel
        sharp    uint8   (N, H, W, 3)      optional (absent for real captures)
        spikes   uint8   (S, Hs, Ws/8)     dims spike_frame, spike_y, spike_x_byte: upright packed rows,
                                           bit order little, the frames the windows need, concatenated
                                           (Ws must be a multiple of 8: rows are whole bytes)
        windows  float64 (N, 2)            dims frame, bound: [t0, t1) in `spikes` frame units
        voxels   uint8   (N, K, Hs, Ws)    dims frame, bin, spike_y, spike_x (float16 for mode 'linear')

Spike-resolution axes have their own dimension names (``spike_y``...), so a sequence group opens as
one xarray Dataset even when spikes and RGB differ in size.

Chunks are spatial tiles so that a random crop reads little beyond itself: RGB tiles of
``RGB_TILE`` px, spike-bit tiles of ``SPIKE_TILE`` px (half of RGB_TILE: Spk-GoPro spikes are at
half the RGB resolution, so an RGB tile and its spike tile cover the same scene) and voxel tiles of
``VOXEL_TILE`` px (a quarter of that scene: a voxel tile holds all K bins, so a 128 px random crop on
64 px tiles decodes 1.8x fewer voxels than on 128 px tiles; readers take any tile size, and stores
written with 128 px voxel tiles stay valid). Shards group
``FRAMES_PER_SHARD`` frames (``SPIKE_FRAMES_PER_CHUNK * SPIKE_CHUNKS_PER_SHARD`` spike frames) of
the whole image into one file, keeping the file count of a large dataset small. Every shard belongs
to one sequence, so writers of different sequences never touch the same file. The numbers behind
these choices are in ``docs/store.md`` (``benchmarks/bench_store_layout.py`` reproduces them).

Version 2 (this one) adds integrity: every chunk of every array ends in its crc32c (the ``crc32c``
codec after the compressor; shard indexes carry their own), and writers store every chunk, all-fill
ones included (``write_empty_chunks``), so a chunk absent from its shard index, or a missing shard
file, is damage and never reads as fill values. Version 1 stores (no chunk checksums) are refused
with the command that rebuilds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral
from typing import Any

from svrt_errors import StoreLayoutError

__all__ = [
    "LAYOUT_VERSION",
    "ROOT_ATTR",
    "SEQUENCE_ATTR",
    "COMPLETE_ATTR",
    "ArraySpec",
    "ARRAYS",
    "ArrayLayout",
    "SequenceGeometry",
    "array_spec",
    "sequence_arrays",
    "chunking",
    "compressors",
    "codec_names",
    "WRITE_CONFIG",
    "check_layout_version",
    "voxel_dtype",
]

LAYOUT_VERSION = 2
# zarr's per-array runtime config for writers: store chunks that hold only the fill value too, so that
# a missing chunk always means damage (readers rely on it).
WRITE_CONFIG = {"write_empty_chunks": True}
ROOT_ATTR = "svrt_layout"
SEQUENCE_ATTR = "svrt_sequence"
COMPLETE_ATTR = "svrt_complete"

RGB_TILE = 256
SPIKE_TILE = 128
VOXEL_TILE = 64
FRAMES_PER_SHARD = 8
SPIKE_FRAMES_PER_CHUNK = 256
SPIKE_CHUNKS_PER_SHARD = 4


@dataclass(frozen=True)
class ArraySpec:
    """One array of a sequence group."""

    name: str
    dims: tuple[str, ...]
    dtype: str  # "uint8", "float64", or "voxel" (uint8 for count, float16 for linear)
    required: bool = True
    description: str = ""


ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("blur", ("frame", "y", "x", "channel"), "uint8", description="blurry RGB frames"),
    ArraySpec("sharp", ("frame", "y", "x", "channel"), "uint8", required=False,
              description="sharp RGB frames (ground truth; absent for real captures)"),
    ArraySpec("spikes", ("spike_frame", "spike_y", "spike_x_byte"), "uint8",
              description="upright packed spike rows (bit order little), the frames the windows use"),
    ArraySpec("windows", ("frame", "bound"), "float64", description="[t0, t1) per frame in spikes frame units"),
    ArraySpec("voxels", ("frame", "bin", "spike_y", "spike_x"), "voxel", description="K-bin spike voxels per frame"),
)


def array_spec(name: str) -> ArraySpec:
    for spec in ARRAYS:
        if spec.name == name:
            return spec
    raise StoreLayoutError(f"layout v{LAYOUT_VERSION} has no array {name!r}; arrays: {[a.name for a in ARRAYS]}")


def voxel_dtype(mode: str) -> str:
    if mode == "count":
        return "uint8"
    elif mode == "linear":
        return "float16"
    else:
        raise StoreLayoutError(f"voxel mode must be 'count' or 'linear', got {mode!r}")


def _tile(size: int, tile: int) -> int:
    return min(size, tile)


def _shard_extent(size: int, tile: int) -> int:
    """The whole axis rounded up to a multiple of the chunk (zarr needs shards divisible by chunks)."""
    t = _tile(size, tile)
    return max(t, math.ceil(size / t) * t)


def chunking(name: str, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """``(chunks, shards)`` of array ``name`` with ``shape`` (shards None: unsharded)."""
    if name in ("blur", "sharp"):
        n, h, w, c = shape
        chunks = (1, _tile(h, RGB_TILE), _tile(w, RGB_TILE), c)
        shards = (FRAMES_PER_SHARD, _shard_extent(h, RGB_TILE), _shard_extent(w, RGB_TILE), c)
    elif name == "spikes":
        s, h, wb = shape
        tb = SPIKE_TILE // 8
        chunks = (SPIKE_FRAMES_PER_CHUNK, _tile(h, SPIKE_TILE), _tile(wb, tb))
        shards = (SPIKE_FRAMES_PER_CHUNK * SPIKE_CHUNKS_PER_SHARD, _shard_extent(h, SPIKE_TILE), _shard_extent(wb, tb))
    elif name == "voxels":
        n, k, h, w = shape
        chunks = (1, k, _tile(h, VOXEL_TILE), _tile(w, VOXEL_TILE))
        shards = (FRAMES_PER_SHARD, k, _shard_extent(h, VOXEL_TILE), _shard_extent(w, VOXEL_TILE))
    elif name == "windows":
        return (max(1, shape[0]), 2), None
    else:
        raise StoreLayoutError(f"layout v{LAYOUT_VERSION} has no array {name!r}")
    # Never make a shard larger than needed along the frame axis (short sequences stay one shard).
    shards = (max(chunks[0], min(shards[0], math.ceil(max(1, shape[0]) / chunks[0]) * chunks[0])), *shards[1:])
    return chunks, shards


@dataclass(frozen=True)
class SequenceGeometry:
    """The sizes of one stored sequence: all :func:`sequence_arrays` needs to lay out its arrays."""

    frames: int  # N blurry (and sharp) frames
    rgb_shape: tuple[int, int]  # H, W
    spike_shape: tuple[int, int]  # Hs, Ws (Ws a multiple of 8)
    spike_frames: int  # S stored spike frames
    bins: int  # K voxel bins
    voxel_mode: str = "count"  # "count" (uint8 voxels) or "linear" (float16)
    has_sharp: bool = True


@dataclass(frozen=True)
class ArrayLayout:
    """One array of a sequence as this layout stores it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None  # None: unsharded
    dims: tuple[str, ...]
    description: str

    @property
    def write_block(self) -> tuple[int, ...]:
        """The unit one writer owns: a shard, or a chunk when unsharded."""
        return self.shards or self.chunks

    def compressors(self) -> list:
        return compressors(self.name, self.dtype)

    def create_in(self, group: Any, *, attributes: dict[str, Any] | None = None) -> Any:
        """Create this array in the zarr ``group`` as this layout writes it: its chunks, shards, codecs
        (crc32c last), dimension names, fill value 0, and every chunk stored (:data:`WRITE_CONFIG`).
        ``attributes`` default to the array's description."""
        return group.create_array(
            self.name, shape=self.shape, dtype=self.dtype, chunks=self.chunks, shards=self.shards,
            compressors=self.compressors(), dimension_names=self.dims, fill_value=0,
            attributes={"description": self.description} if attributes is None else attributes, config=WRITE_CONFIG,
        )


def sequence_arrays(geometry: SequenceGeometry) -> dict[str, ArrayLayout]:
    """Every array of a sequence with ``geometry``, by name (``sharp`` only when ``has_sharp``).

    Raises:
        StoreLayoutError: a size that is not a whole number >= 0 (>= 1 for sizes and bins), an unknown
            voxel mode, or a spike width that is not a multiple of 8 (packed rows are whole bytes; the
            ``.dat`` readers refuse to pack other widths, so the writer could not fill such an array).
    """
    g = geometry
    (h, w), (hs, ws) = g.rgb_shape, g.spike_shape
    counts = {"frames": g.frames, "spike_frames": g.spike_frames}
    sizes = {"RGB height": h, "RGB width": w, "spike height": hs, "spike width": ws, "bins": g.bins}
    for what, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, Integral) or v < 0:
            raise StoreLayoutError(f"sequence geometry: {what} must be an integer >= 0, got {v!r}")
    for what, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
            raise StoreLayoutError(f"sequence geometry: {what} must be an integer >= 1, got {v!r}")
    if ws % 8:
        raise StoreLayoutError(
            f"sequence geometry: spike width {ws} is not a multiple of 8; layout v{LAYOUT_VERSION} stores spikes "
            f"as packed rows of whole bytes (Ws/8 per row) and cannot hold {ws}-pixel rows; use a spike geometry "
            "whose width is a multiple of 8"
        )
    shapes = {
        "blur": ((g.frames, h, w, 3), "uint8"),
        "sharp": ((g.frames, h, w, 3), "uint8"),
        "spikes": ((g.spike_frames, hs, ws // 8), "uint8"),
        "windows": ((g.frames, 2), "float64"),
        "voxels": ((g.frames, g.bins, hs, ws), voxel_dtype(g.voxel_mode)),
    }
    out = {}
    for spec in ARRAYS:
        if spec.name == "sharp" and not g.has_sharp:
            continue
        shape, dtype = shapes[spec.name]
        chunks, shards = chunking(spec.name, shape)
        out[spec.name] = ArrayLayout(spec.name, shape, dtype, chunks, shards, spec.dims, spec.description)
    return out


def compressors(name: str, dtype: str) -> list:
    """Bytes-to-bytes codecs by array: the compressor, then crc32c, so every chunk carries the checksum
    of its stored bytes. Compressors are chosen on the measurements in ``docs/store.md``
    (``benchmarks/bench_store_layout.py``): voxel counts (small integers) take Blosc lz4 with bit-shuffle,
    float16 voxels byte-shuffle; RGB photographs, which no codec shrinks much and which are most of what
    training reads, take Blosc lz4 for its decode speed; spike bits take zstd-1, the better ratio, as they
    are the largest input and raw-bit training reads them rarely."""
    from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

    if name == "voxels" and dtype == "uint8":
        chain = [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")]
    elif name == "voxels":
        chain = [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]
    elif name in ("blur", "sharp"):
        chain = [BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")]
    elif name == "spikes":
        chain = [ZstdCodec(level=1)]
    elif name == "windows":
        chain = []
    else:
        raise StoreLayoutError(f"layout v{LAYOUT_VERSION} has no array {name!r}")
    return [*chain, Crc32cCodec()]


def codec_names(name: str, dtype: str) -> tuple[str | None, bool]:
    """``(compressor, checksummed)`` as a reader sees the chunk codec chain of array ``name``."""
    names = [c.to_dict()["name"] for c in compressors(name, dtype)]
    return (names[0] if names[0] != "crc32c" else None), names[-1] == "crc32c"


def check_layout_version(attrs: dict, where: str) -> int:
    """Refuse stores of another layout with a clear error."""
    meta = attrs.get(ROOT_ATTR)
    if not isinstance(meta, dict) or "version" not in meta:
        raise StoreLayoutError(f"{where} is not an svrt store (no '{ROOT_ATTR}' attribute); "
                               "create one with `svrt-data voxelize`")
    version = meta["version"]
    if version != LAYOUT_VERSION:
        why = " (version 1 stores carry no chunk checksums)" if version == 1 else ""
        raise StoreLayoutError(
            f"{where} has svrt store layout version {version}; this svrt reads version {LAYOUT_VERSION}{why}. "
            f"Rebuild it from the raw data with `svrt-data voxelize RAW --out {where} --overwrite` (the old "
            f"sequences stay until their replacements are complete), or use the svrt release that wrote it "
            f"({meta.get('tool_version', 'unknown')})"
        )
    return version
