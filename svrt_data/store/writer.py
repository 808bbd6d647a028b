"""Writing sequences into an svrt Zarr store: never destroying, always complete or absent.

A sequence is built by exactly one task under a temporary name beside its final place
(``<split>/.<sequence>.svrt-new``, see :mod:`~svrt_data.store.owned`): frames in shard-aligned blocks
(so no shard is ever rewritten), every chunk stored (all-fill ones too) with its crc32c, every array
hashed as it is written, the completion marker (holding the checksums) set last; then it is swapped
in. So ``<split>/<sequence>`` is always a complete sequence (an older one until its replacement is
complete), and a run killed at any moment leaves only temporary folders, which the next run deletes.
Contents are deterministic, so a resumed run produces the same store as an uninterrupted one.

What exists at the output is classified first (:func:`output_kind`): only an absent path, an empty
folder or an svrt store is written to; a sequence folder is replaced only when it is an svrt sequence.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from svrt_data.names import check_name, check_split, inside
from svrt_data.store import layout as L
from svrt_data.store import owned
from svrt_data.store.fingerprint import FileStamp, geometry_record, stamp_file, windows_digest
from svrt_data.store.reader import node_attrs
from svrt_data.store.sources import SequenceSource
from svrt_errors import StoreError, StoreLayoutError

__all__ = ["VoxelSettings", "SequenceSummary", "create_store", "finish_store", "write_sequence", "output_kind",
           "replaceable_sequence", "sequence_dir", "source_arrays", "tool_version"]


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


# -- what is at the output --------------------------------------------------------------------------


def output_kind(path: Path) -> str:
    """``"absent"``, ``"empty"`` (an empty folder), ``"svrt"`` (an svrt store of this layout) or
    ``"svrt-other"`` (an svrt store of another layout version). Anything else raises, naming it."""
    if not path.exists() and not path.is_symlink():
        return "absent"
    if not path.is_dir():
        raise StoreError(f"{path} exists and is not a folder; svrt writes stores only to a new path, an empty "
                         "folder or an svrt store. Choose another --out")
    if not any(path.iterdir()):
        return "empty"
    attrs, why = node_attrs(path)
    if attrs is None or not isinstance(attrs.get(L.ROOT_ATTR), dict):
        detail = why or f"it holds {owned.describe_entries(path)} and no svrt store's zarr.json"
        raise StoreError(f"{path} is a folder svrt did not write ({detail}); refusing to write into it or delete "
                         "anything there. Choose a new --out path (or an empty folder)")
    return "svrt" if attrs[L.ROOT_ATTR].get("version") == L.LAYOUT_VERSION else "svrt-other"


def sequence_dir(store: Path, split: str, sequence: str) -> Path:
    """The folder of a sequence, after checking both names and that it stays inside the store."""
    check_split(split)
    check_name(sequence, "sequence")
    return inside(store, split, sequence) if split else inside(store, sequence)


def replaceable_sequence(folder: Path) -> bool:
    """Whether ``folder`` provably holds an svrt sequence (svrt_sequence attribute) or the remains of one
    whose metadata was damaged (nothing but zarr metadata and layout arrays in it)."""
    attrs, why = node_attrs(folder)
    if attrs is not None:
        return L.SEQUENCE_ATTR in attrs
    if why is None or not folder.is_dir():
        return False
    names = {a.name for a in L.ARRAYS}
    return all(p.name in names or p.name == "zarr.json" or p.name.endswith(".partial") for p in folder.iterdir())


def _root_meta(voxel: VoxelSettings) -> dict[str, Any]:
    return {"version": L.LAYOUT_VERSION, "tool_version": tool_version(), "voxel": voxel.as_attrs()}


def create_store(path: str | os.PathLike, voxel: VoxelSettings, source: dict[str, Any], *,
                 overwrite: bool = False) -> list[str]:
    """Make ``path`` ready for this run: a new store (built beside and renamed into place), or an existing
    svrt store with the same voxel settings (any svrt store with ``overwrite``: its sequences are then
    replaced one by one and :func:`finish_store` rewrites its root). Leftovers of killed runs are cleaned
    up first. Returns what that cleanup did."""
    import zarr

    path = Path(path)
    done = owned.recover_path(path)  # a whole-store swap (import-h5 --overwrite) that was interrupted
    kind = output_kind(path)
    if kind == "absent":
        owned.check_parent(path, "store")
        tmp = owned.temp_path(path)
        root = zarr.open_group(str(tmp), mode="w-")
        root.attrs.update({L.ROOT_ATTR: _root_meta(voxel), "source": source})
        os.rename(tmp, path)
        return done
    if kind == "empty":
        root = zarr.open_group(str(path), mode="w-")
        root.attrs.update({L.ROOT_ATTR: _root_meta(voxel), "source": source})
        return done
    attrs, _ = node_attrs(path)
    if kind == "svrt-other" and not overwrite:
        L.check_layout_version(attrs or {}, str(path))
    have = (attrs or {})[L.ROOT_ATTR].get("voxel")
    if kind == "svrt" and have != voxel.as_attrs() and not overwrite:
        raise StoreLayoutError(f"{path} holds voxels {have}, but this run asks for {voxel.as_attrs()}; pass "
                               "--overwrite to rebuild the store (sequence by sequence), or write to a new path")
    done += owned.recover_folder(path)
    for split in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        done += owned.recover_folder(split)
    return done


def finish_store(path: str | os.PathLike, voxel: VoxelSettings, source: dict[str, Any], keep: set[str]) -> list[str]:
    """After an ``overwrite`` run: delete the svrt sequences the run did not write (``keep``: the keys it
    wrote) and set the root attributes to this run's, so the store equals a fresh build. Returns the deleted."""
    import zarr

    path = Path(path)
    deleted = []
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        attrs, _ = node_attrs(folder)
        if attrs is not None and L.SEQUENCE_ATTR in attrs:
            candidates = [("", folder)]
        else:
            candidates = [(folder.name, sub) for sub in sorted(folder.iterdir()) if sub.is_dir()]
        for split, seq in candidates:
            key = f"{split}/{seq.name}" if split else seq.name
            if key in keep or seq.name.startswith(".") or not replaceable_sequence(seq):
                continue
            gone = owned.temp_path(seq)
            os.rename(seq, gone)  # out of sight at once, then deleted
            owned.remove_temp(gone)
            deleted.append(key)
        if candidates and candidates[0][0] and {p.name for p in folder.iterdir()} == {"zarr.json"}:
            split_attrs, _ = node_attrs(folder)
            if split_attrs == {}:  # a split group svrt made that now holds nothing
                (folder / "zarr.json").unlink()
                folder.rmdir()
    root = zarr.open_group(str(path), mode="r+")
    root.attrs.update({L.ROOT_ATTR: _root_meta(voxel), "source": source})
    return deleted


# -- one sequence -----------------------------------------------------------------------------------


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


def _read_rgb(root: Path, rel: str) -> tuple[np.ndarray, FileStamp]:
    """Decode one image and stamp it from the same bytes (read once)."""
    data = (root / rel).read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as exc:  # checked before writing; a file changed since then lands here
        raise StoreError(f"{root / rel}: cannot decode this image ({exc}); nothing of its sequence was swapped in") \
            from None
    return rgb, stamp_file(root, rel, data)


def source_arrays(source: SequenceSource, voxel: VoxelSettings) -> dict[str, L.ArrayLayout]:
    """The arrays (:func:`~svrt_data.store.layout.sequence_arrays`) of the sequence built from ``source``.

    Raises:
        StoreLayoutError: the layout cannot hold this sequence (e.g. a spike width off the byte grid), naming it.
    """
    g = source.geometry
    try:
        return L.sequence_arrays(L.SequenceGeometry(source.n_frames, source.rgb_shape, (g.height, g.width),
                                                    source.n_spike_frames, voxel.bins, voxel.mode,
                                                    bool(source.sharp_files)))
    except StoreLayoutError as exc:
        raise StoreLayoutError(f"{source.key}: {exc}") from None


def write_sequence(
    store: str | os.PathLike,
    source: SequenceSource,
    voxel: VoxelSettings,
    *,
    progress: Callable[[int], None] | None = None,
) -> SequenceSummary:
    """Build one sequence beside its place, mark it complete, then swap it in (see the module docstring).

    ``progress(n)`` is called with the number of frames finished after each block.
    """
    store = Path(store)
    final = sequence_dir(store, source.split, source.sequence)  # names checked before any file system call
    arrays = source_arrays(source, voxel)  # the layout next: before anything is deleted or written
    if (final.exists() or final.is_symlink()) and not replaceable_sequence(final):
        raise StoreError(f"{final} exists and is not an svrt sequence; refusing to replace it. Move it out of the "
                         "store, or write to another store")
    parent_dir = final.parent
    if parent_dir != store.resolve():
        if parent_dir.exists() and not parent_dir.is_dir():
            raise StoreError(f"{parent_dir} is a file where the store needs the folder of split {source.split!r}")
        _require_split_group(store, source.split)
    tmp = owned.temp_path(final)
    if tmp.exists() or tmp.is_symlink():
        owned.remove_temp(tmp)  # an earlier attempt at this sequence that never finished
    try:
        return _build(source, voxel, arrays, tmp, final, progress)
    except Exception:
        owned.remove_temp(tmp)  # our own unfinished build; the sequence at `final` is untouched
        raise


def _require_split_group(store: Path, split: str) -> None:
    """Open or create the group of ``split``. Workers writing sequences of one split at the same time may
    all find it missing; zarr's ``require_group`` then fails in every one but the first with
    ``ContainsGroupError``, and those open the group the first one made."""
    import zarr
    from zarr.errors import ContainsGroupError

    root = zarr.open_group(str(store), mode="r+")
    try:
        root.require_group(split)
    except ContainsGroupError:
        root.require_group(split)  # made by another worker since the check: now it opens


def _build(source: SequenceSource, voxel: VoxelSettings, arrays: dict[str, L.ArrayLayout], tmp: Path, final: Path,
           progress: Callable[[int], None] | None) -> SequenceSummary:
    import zarr

    from svrt_data.voxelize import voxelize

    g = source.geometry
    n, (h, w) = source.n_frames, source.rgb_shape
    spike_stamps = [stamp_file(source.raw_root, r.file) for r in source.spike_ranges]
    provenance = {
        "tool_version": tool_version(),
        "spike_sources": [
            {"file": r.file, "start": r.start, "frames": r.frames, "offset": r.offset, "bytes": s.bytes,
             "sha256": s.sha256}
            for r, s in zip(source.spike_ranges, spike_stamps, strict=True)
        ],
        "blur_files": list(source.blur_files),
        "sharp_files": list(source.sharp_files) if source.sharp_files else None,
    }
    seq = zarr.open_group(str(tmp), mode="w-", attributes={L.SEQUENCE_ATTR: {
        "split": source.split, "sequence": source.sequence,
        "spike": {"rate_hz": g.rate_hz, "height": g.height, "width": g.width, "source_flip": g.flip,
                  "frames": source.n_spike_frames},
        "rgb": {"height": h, "width": w},
        "voxel": voxel.as_attrs(),
        "provenance": provenance,
    }})
    vdtype = arrays["voxels"].dtype
    writers = {name: _HashedWriter(arrays[name].create_in(seq))
               for name in ("blur", "spikes", "windows", "voxels", "sharp") if name in arrays}
    bytes_in = sum(s.bytes for s in spike_stamps)
    image_stamps: dict[str, list[FileStamp]] = {"blur": [], "sharp": []}

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
                decoded = [_read_rgb(source.raw_root, f) for f in files[a:b]]
                image_stamps[name] += [s for _, s in decoded]
                bytes_in += sum(s.bytes for _, s in decoded)
                writers[name].write(np.stack([rgb for rgb, _ in decoded]))
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
    fingerprint = {
        "files": [s.record() for s in spike_stamps + image_stamps["blur"] + image_stamps["sharp"]],
        "windows": windows_digest(source.windows),
        "geometry": geometry_record(source),
    }
    # The completion marker goes last: its presence means every array above is whole.
    seq.attrs.update({L.COMPLETE_ATTR: {"layout": L.LAYOUT_VERSION, "checksums": checksums,
                                        "fingerprint": fingerprint}})
    bytes_out = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    owned.swap_in(tmp, final)
    return SequenceSummary(source.key, n, source.n_spike_frames, bytes_in, bytes_out)
