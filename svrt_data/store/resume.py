"""Whether a stored sequence can be kept when resuming: complete, built from the same inputs, undamaged.

:func:`sequence_status` is what ``voxelize --resume`` asks of every sequence it would skip. A sequence
is kept (``"complete"``) only when it carries its completion marker, was built with this run's voxel
settings from inputs with the same fingerprint (:mod:`~svrt_data.store.fingerprint`), and every chunk
of every array exists (one read of each shard index; ``svrt-data verify`` also decodes and checks
every chunk). Damage gives ``"rebuild"``; other inputs or settings give ``"stale"``, which the caller
refuses without ``--overwrite`` (rebuilding would silently replace data made from other inputs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from svrt_data.store import layout as L
from svrt_data.store.fast_reader import ShardedArrayReader, parse_array_meta
from svrt_data.store.fingerprint import compare_fingerprint
from svrt_data.store.reader import node_attrs
from svrt_data.store.sources import SequenceSource
from svrt_data.store.writer import VoxelSettings, replaceable_sequence, sequence_dir, source_arrays
from svrt_errors import StoreError

__all__ = ["SequenceStatus", "sequence_status"]

SequenceStatus = tuple[str, str]  # (state, why): absent | complete | rebuild | stale


def _array_problem(folder: Path, a: L.ArrayLayout) -> str | None:
    try:
        meta = parse_array_meta(folder / a.name)
    except StoreError as exc:
        return str(exc)
    if meta.shape != a.shape or np.dtype(meta.dtype) != np.dtype(a.dtype):
        return f"{folder / a.name}: {np.dtype(meta.dtype)} {meta.shape}, expected {a.dtype} {a.shape}"
    if not meta.checksum:
        return f"{folder / a.name}: chunks carry no checksum (layout v{L.LAYOUT_VERSION} writes them)"
    missing = ShardedArrayReader(meta).missing_chunks(limit=1)
    return missing[0] if missing else None


def sequence_status(store: Path, source: SequenceSource, voxel: VoxelSettings) -> SequenceStatus:
    """The state of ``source``'s sequence in ``store`` and why (see the module docstring)."""
    folder = sequence_dir(store, source.split, source.sequence)
    if not folder.exists() and not folder.is_symlink():
        return "absent", ""
    if not replaceable_sequence(folder):
        raise StoreError(f"{folder} exists and is not an svrt sequence; refusing to replace it. Move it out of the "
                         "store, or write to another store")
    attrs, why = node_attrs(folder)
    if attrs is None:
        return "rebuild", why or f"{folder}: no zarr.json"
    marker: Any = attrs.get(L.COMPLETE_ATTR)
    if not isinstance(marker, dict):
        return "rebuild", "incomplete (no completion marker)"
    seq = attrs.get(L.SEQUENCE_ATTR, {})
    if seq.get("voxel") != voxel.as_attrs():
        return "stale", f"built with voxels {seq.get('voxel')}, this run asks for {voxel.as_attrs()}"
    changes = compare_fingerprint(marker.get("fingerprint"), source)
    if changes:
        return "stale", "; ".join(changes)
    for a in source_arrays(source, voxel).values():
        problem = _array_problem(folder, a)
        if problem is not None:
            return "rebuild", problem
    return "complete", ""
