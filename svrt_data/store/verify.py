"""``svrt-data verify``: completeness, shapes, dtypes, windows and recomputed checksums of a store."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

from svrt_data.store import layout as L
from svrt_data.store.reader import StoredSequence, SvrtStore
from svrt_errors import SvrtError

__all__ = ["VerifyReport", "verify_store", "array_checksum"]


@dataclass
class VerifyReport:
    path: str
    sequences: int = 0
    frames: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def array_checksum(array, block_frames: int | None = None) -> str:
    """sha256 of the array's C-order bytes, read in blocks along the first axis."""
    h = hashlib.sha256()
    n = array.shape[0]
    step = block_frames or max(1, (array.shards or array.chunks)[0])
    for a in range(0, n, step):
        h.update(np.ascontiguousarray(array[a : min(n, a + step)]).data)
    return "sha256:" + h.hexdigest()


def _check_sequence(seq: StoredSequence, voxel: dict, checksums: bool) -> list[str]:
    where = seq.key
    out: list[str] = []
    n = seq.n_frames
    geometry = L.SequenceGeometry(n, seq.rgb_shape, seq.spike_shape, int(seq.spikes.shape[0]), int(voxel["bins"]),
                                  voxel["mode"], seq.sharp is not None)
    for name, a in L.sequence_arrays(geometry).items():
        arr = seq.array(name)
        if tuple(arr.shape) != a.shape or str(arr.dtype) != a.dtype:
            out.append(f"{where}/{name}: {arr.dtype} {tuple(arr.shape)}, expected {a.dtype} {a.shape}")
        dims = tuple(arr.metadata.dimension_names or ())
        if dims != a.dims:
            out.append(f"{where}/{name}: dimension names {dims}, expected {a.dims}")
    if seq.voxel != voxel:
        out.append(f"{where}: voxel settings {seq.voxel} differ from the store's {voxel}")
    w = seq.windows
    s = seq.spikes.shape[0]
    bad = np.flatnonzero(~((w[:, 0] >= 0) & (w[:, 0] < w[:, 1]) & (w[:, 1] <= s)))
    if bad.size:
        i = int(bad[0])
        out.append(f"{where}/windows: {bad.size} window(s) outside [0, {s}) or empty, first at frame {i}: "
                   f"[{w[i, 0]}, {w[i, 1]})")
    if checksums:
        for name, want in seq.checksums.items():
            got = array_checksum(seq.array(name))
            if got != want:
                out.append(f"{where}/{name}: checksum {got[:19]}... differs from the recorded {want[:19]}...")
    return out


def verify_store(path: str | os.PathLike, *, checksums: bool = True) -> VerifyReport:
    """Check every sequence of a store; never raises for content problems, lists them instead."""
    report = VerifyReport(str(path))
    try:
        store = SvrtStore(path)
    except SvrtError as exc:
        report.problems.append(str(exc))
        return report
    for key in store.incomplete():
        report.problems.append(f"{key}: incomplete (no completion marker); rerun `svrt-data voxelize --resume`")
    for split, name in store.sequence_keys():
        seq = store.sequence(split, name)
        report.sequences += 1
        report.frames += seq.n_frames
        try:
            report.problems.extend(_check_sequence(seq, store.voxel, checksums))
        except (SvrtError, KeyError, ValueError, OSError) as exc:
            report.problems.append(f"{seq.key}: cannot be read ({type(exc).__name__}: {exc})")
    return report
