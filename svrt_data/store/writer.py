"""Writing sequences into an svrt Zarr store, resumably.

A sequence is written by exactly one task into its own group: frames in shard-aligned blocks (so no
shard is ever rewritten), every array hashed as it is written, and the completion marker (holding
the checksums) set LAST. A run killed at any moment leaves at most incomplete groups, which the next
run deletes and rebuilds; complete groups are skipped. Contents are deterministic, so a resumed run
produces the same store as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from svrt_data.store import layout as L
from svrt_data.store.sources import SequenceSource
from svrt_errors import StoreError, StoreLayoutError

__all__ = ["VoxelSettings", "SequenceSummary", "create_store", "write_sequence", "sequence_state", "tool_version"]


@dataclass(frozen=True)
class VoxelSettings:
    bins: int
    mode: str = "count"
    backend: str = "auto"

    def as_attrs(self) -> dict[str, Any]:
        return {"bins": self.bins, "mode": self.mode, "dtype": L.voxel_dtype(self.mode)}


@dataclass(frozen=True)
class SequenceSummary:
    key: str
    frames: int
    spike_frames: int
    bytes_in: int
    bytes_out: int
    skipped: bool = False


def tool_version() -> str:
    from svrt_data import __version__

    return __version__


def _sha256_file(path: Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def create_store(path: str | os.PathLike, voxel: VoxelSettings, source: dict[str, Any], *,
                 overwrite: bool = False) -> None:
    """Create the root group (or check that an existing one has the same layout and voxel settings)."""
    import zarr

    path = Path(path)
    if overwrite and path.exists():
        shutil.rmtree(path)
    root_meta = {"version": L.LAYOUT_VERSION, "tool_version": tool_version(), "voxel": voxel.as_attrs()}
    if (path / "zarr.json").exists():
        root = zarr.open_group(str(path), mode="r")
        L.check_layout_version(dict(root.attrs), str(path))
        have = dict(root.attrs)[L.ROOT_ATTR].get("voxel")
        if have != voxel.as_attrs():
            raise StoreLayoutError(
                f"{path} holds voxels {have}, but this run asks for {voxel.as_attrs()}; "
                "pass --overwrite to rebuild the store, or write to a new path"
            )
        return
    root = zarr.open_group(str(path), mode="w")
    root.attrs.update({L.ROOT_ATTR: root_meta, "source": source})


def sequence_state(store: str | os.PathLike, split: str, sequence: str) -> str:
    """``"complete"``, ``"incomplete"`` (exists without a valid marker) or ``"absent"``."""
    import json

    group_dir = Path(store) / split / sequence if split else Path(store) / sequence
    meta = group_dir / "zarr.json"
    if not group_dir.exists():
        return "absent"
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return "incomplete"
    return "complete" if isinstance(attrs.get(L.COMPLETE_ATTR), dict) else "incomplete"


class _HashedWriter:
    """Writes frame blocks to one zarr array in order, hashing the C-order bytes as they go."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.hash = hashlib.sha256()
        self.pos = 0

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block)
        self.array[self.pos : self.pos + block.shape[0]] = block
        self.hash.update(block.data)
        self.pos += block.shape[0]

    def digest(self) -> str:
        if self.pos != self.array.shape[0]:
            raise StoreError(f"internal: wrote {self.pos} of {self.array.shape[0]} frames of {self.array.path}")
        return "sha256:" + self.hash.hexdigest()


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _create(group: Any, a: L.ArrayLayout) -> Any:
    return group.create_array(
        a.name, shape=a.shape, dtype=a.dtype, chunks=a.chunks, shards=a.shards, compressors=a.compressors(),
        dimension_names=a.dims, fill_value=0, attributes={"description": a.description},
    )


def write_sequence(
    store: str | os.PathLike,
    source: SequenceSource,
    voxel: VoxelSettings,
    *,
    progress: Callable[[int], None] | None = None,
) -> SequenceSummary:
    """Write one sequence (deleting any incomplete earlier attempt) and mark it complete last.

    ``progress(n)`` is called with the number of frames finished after each block.
    """
    import zarr

    from svrt_data.voxelize import voxelize

    store = Path(store)
    g = source.geometry
    n, (h, w) = source.n_frames, source.rgb_shape
    # the layout first: a sequence it cannot hold fails before anything is deleted or written
    arrays = L.sequence_arrays(L.SequenceGeometry(n, (h, w), (g.height, g.width), source.n_spike_frames, voxel.bins,
                                                  voxel.mode, bool(source.sharp_files)))
    group_dir = store / source.split / source.sequence if source.split else store / source.sequence
    if group_dir.exists():
        shutil.rmtree(group_dir)
    root = zarr.open_group(str(store), mode="r+")
    parent = root.require_group(source.split) if source.split else root
    provenance = {
        "tool_version": tool_version(),
        "spike_sources": [
            {"file": r.file, "start": r.start, "frames": r.frames, "offset": r.offset,
             "bytes": (source.raw_root / r.file).stat().st_size, "sha256": _sha256_file(source.raw_root / r.file)}
            for r in source.spike_ranges
        ],
        "blur_files": list(source.blur_files),
        "sharp_files": list(source.sharp_files) if source.sharp_files else None,
    }
    seq = parent.create_group(source.sequence, attributes={L.SEQUENCE_ATTR: {
        "split": source.split, "sequence": source.sequence,
        "spike": {"rate_hz": g.rate_hz, "height": g.height, "width": g.width, "source_flip": g.flip,
                  "frames": source.n_spike_frames},
        "rgb": {"height": h, "width": w},
        "voxel": voxel.as_attrs(),
        "provenance": provenance,
    }})
    vdtype = arrays["voxels"].dtype
    writers = {name: _HashedWriter(_create(seq, arrays[name]))
               for name in ("blur", "spikes", "windows", "voxels", "sharp") if name in arrays}
    bytes_in = sum(s["bytes"] for s in provenance["spike_sources"])

    spikes = source.spikes()
    step = arrays["spikes"].write_block[0]
    for a in range(0, len(spikes), step):
        writers["spikes"].write(spikes.packed(a, min(len(spikes), a + step)))
    writers["windows"].write(source.windows)

    block = L.FRAMES_PER_SHARD
    for a in range(0, n, block):
        b = min(n, a + block)
        for name, files in (("blur", source.blur_files), ("sharp", source.sharp_files)):
            if name in writers:
                paths = [source.raw_root / f for f in files[a:b]]
                bytes_in += sum(p.stat().st_size for p in paths)
                writers[name].write(np.stack([_read_rgb(p) for p in paths]))
        win = source.windows[a:b]
        lo, hi = int(np.floor(win[:, 0].min())), int(np.ceil(win[:, 1].max()))
        vox = voxelize(spikes.packed(lo, hi), win, bins=voxel.bins, mode=voxel.mode, backend=voxel.backend,
                       first_frame=lo)
        if hasattr(vox, "get"):  # CuPy result: bring the block to the host for zarr
            vox = vox.get()
        writers["voxels"].write(np.asarray(vox, dtype=vdtype))
        if progress is not None:
            progress(b - a)
    checksums = {name: wr.digest() for name, wr in writers.items()}
    # The completion marker goes last: its presence means every array above is whole.
    seq.attrs.update({L.COMPLETE_ATTR: {"layout": L.LAYOUT_VERSION, "checksums": checksums}})
    bytes_out = sum(f.stat().st_size for f in group_dir.rglob("*") if f.is_file())
    return SequenceSummary(source.key, n, source.n_spike_frames, bytes_in, bytes_out)
