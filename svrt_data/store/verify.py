"""``svrt-data verify``: every damaged array and chunk of a store, never a crash.

Per sequence: the completion marker, the voxel settings, and per array its metadata (readable, the
layout's codecs with crc32c, dimension names, shape and dtype), then every chunk read through the fast
reader (present, crc32c, decodable) and the array's sha256 against the one recorded when it was
written. Damage is listed chunk by chunk (the first :data:`MAX_LISTED` per array, then a count);
nothing a damaged store holds raises out of :func:`verify_store`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from svrt_data.store import layout as L
from svrt_data.store.fast_reader import DAMAGE_HINT, ShardedArrayReader, parse_array_meta
from svrt_data.store.reader import SvrtStore
from svrt_errors import StoreError, SvrtError

__all__ = ["VerifyReport", "verify_store", "array_checksum"]

MAX_LISTED = 10


@dataclass
class VerifyReport:
    path: str
    sequences: int = 0
    frames: int = 0
    problems: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # keys of sequences with problems

    @property
    def ok(self) -> bool:
        return not self.problems

    def rebuild_hint(self, raw: str = "RAW") -> str:
        """The command that rebuilds exactly the damaged sequences."""
        keys = ",".join(self.damaged) if self.damaged else "..."
        return f"svrt-data voxelize {raw} --out {self.path} --sequences {keys} --no-resume"


def array_checksum(array, block_frames: int | None = None) -> str:
    """sha256 of the array's C-order bytes, read in blocks along the first axis."""
    h = hashlib.sha256()
    n = array.shape[0]
    step = block_frames or max(1, (array.shards or array.chunks)[0])
    for a in range(0, n, step):
        h.update(np.ascontiguousarray(array[a : min(n, a + step)]).data)
    return "sha256:" + h.hexdigest()


def _short(message: str) -> str:
    return message.split(f"; {DAMAGE_HINT}")[0]


def _scan(fast: ShardedArrayReader, checksums: bool) -> tuple[list[str], str | None]:
    """``(problems, sha256)``: every damaged chunk, and the array's checksum when all chunks are whole."""
    m = fast.meta
    if not checksums:
        return [_short(p) for p in fast.missing_chunks()], None
    h, problems = hashlib.sha256(), []
    step = m.grid[0]
    for a in range(0, m.shape[0], step):
        box = [(a, min(m.shape[0], a + step)), *((0, n) for n in m.shape[1:])]
        try:
            block = fast.read(box)
        except StoreError:  # find every damaged chunk of this block
            spans = [range(lo // c, -(-hi // c)) for (lo, hi), c in zip(box, m.chunks, strict=True)]
            for coords in itertools.product(*spans):
                try:
                    fast.chunk(coords)
                except StoreError as exc:
                    problems.append(_short(str(exc)))
            continue
        if not problems:
            h.update(np.ascontiguousarray(block).data)
    return problems, (None if problems else "sha256:" + h.hexdigest())


def _dims(folder: Path) -> tuple[str, ...] | None:
    try:
        return tuple(json.loads((folder / "zarr.json").read_text()).get("dimension_names") or ())
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def _check_array(folder: Path, where: str, name: str, want: L.ArrayLayout | None, recorded: str | None,
                 checksums: bool) -> tuple[list[str], np.ndarray | None]:
    """Problems of one array (``where``: its name in messages) against ``want`` (None: the sequence's sizes are
    unknown, so shape and dtype go unchecked and the codecs are checked for the array's own dtype), and its
    data when it is whole ``windows``."""
    try:
        meta = parse_array_meta(folder)
    except StoreError as exc:
        return [_short(str(exc))], None
    out = []
    dtype = want.dtype if want is not None else str(np.dtype(meta.dtype))
    if (meta.compressor, meta.checksum) != L.codec_names(name, dtype):
        out.append(f"{where}: codecs ({meta.compressor}, crc32c={meta.checksum}) differ from layout "
                   f"v{L.LAYOUT_VERSION}'s {L.codec_names(name, dtype)}")
    if want is not None and (meta.shape != want.shape or np.dtype(meta.dtype) != np.dtype(want.dtype)):
        out.append(f"{where}: {np.dtype(meta.dtype)} {meta.shape}, expected {want.dtype} {want.shape}")
    dims, want_dims = _dims(folder), L.array_spec(name).dims
    if dims != want_dims:
        out.append(f"{where}: dimension names {dims}, expected {want_dims}")
    fast = ShardedArrayReader(meta)
    damaged, digest = _scan(fast, checksums)
    out += damaged[:MAX_LISTED]
    if len(damaged) > MAX_LISTED:
        out.append(f"{where}: ... and {len(damaged) - MAX_LISTED} more damaged chunk(s)")
    if digest is not None and recorded is not None and digest != recorded:
        out.append(f"{where}: checksum {digest[:19]}... differs from the recorded {recorded[:19]}... (whole chunks "
                   "that decode to other data than was written)")
    data = None
    if name == "windows" and not damaged:
        try:
            data = fast.read([(0, n) for n in meta.shape])
        except StoreError:
            data = None
    return out, data


def _check_sequence(folder: Path, key: str, attrs: dict, voxel: dict, checksums: bool) -> tuple[list[str], int]:
    """Problems of one complete sequence, and its frame count."""
    out: list[str] = []
    seq = attrs.get(L.SEQUENCE_ATTR) or {}
    marker = attrs.get(L.COMPLETE_ATTR) or {}
    recorded = marker.get("checksums") if isinstance(marker.get("checksums"), dict) else {}
    if seq.get("voxel") != voxel:
        out.append(f"{key}: voxel settings {seq.get('voxel')} differ from the store's {voxel}")
    names = [a.name for a in L.ARRAYS if a.required or a.name in recorded or (folder / a.name).exists()]
    absent = [n for n in names if not (folder / n / "zarr.json").is_file()]
    out += [f"{key}/{n}: missing (no {folder / n}/zarr.json)" for n in absent]
    try:
        n = parse_array_meta(folder / "blur").shape[0]
        spike = seq["spike"]
        geometry = L.SequenceGeometry(n, (int(seq["rgb"]["height"]), int(seq["rgb"]["width"])),
                                      (int(spike["height"]), int(spike["width"])), int(spike["frames"]),
                                      int(voxel["bins"]), voxel["mode"], "sharp" in names)
        expect = L.sequence_arrays(geometry)
    except (StoreError, KeyError, TypeError, ValueError) as exc:
        out.append(f"{key}: shapes cannot be derived ({type(exc).__name__}: {_short(str(exc))})")
        n, expect = 0, {}
    for name in names:
        if name in absent:
            continue
        problems, data = _check_array(folder / name, f"{key}/{name}", name, expect.get(name), recorded.get(name),
                                      checksums)
        out += problems
        if name == "windows" and data is not None and "spikes" in expect:
            s = expect["spikes"].shape[0]
            bad = np.flatnonzero(~((data[:, 0] >= 0) & (data[:, 0] < data[:, 1]) & (data[:, 1] <= s)))
            if bad.size:
                i = int(bad[0])
                out.append(f"{key}/windows: {bad.size} window(s) outside [0, {s}) or empty, first at frame {i}: "
                           f"[{data[i, 0]}, {data[i, 1]})")
    return out, n


def verify_store(path: str | os.PathLike, *, checksums: bool = True) -> VerifyReport:
    """Check every sequence of a store; never raises for damage, lists it instead."""
    report = VerifyReport(str(path))
    try:
        store = SvrtStore(path)
    except (SvrtError, OSError) as exc:
        report.problems.append(str(exc))
        return report
    for key, why in store.damaged.items():
        report.problems.append(f"{key}: {why}")
        report.damaged.append(key)
    for key in store.incomplete():
        if key not in store.damaged:
            report.problems.append(f"{key}: incomplete (no completion marker)")
            report.damaged.append(key)
    for split, name in store.sequence_keys():
        key = f"{split}/{name}" if split else name
        folder = store.path / split / name if split else store.path / name
        problems, frames = _check_sequence(folder, key, store.sequence_attrs(split, name), store.voxel, checksums)
        report.sequences += 1
        report.frames += frames
        if problems:
            report.problems += problems
            report.damaged.append(key)
    return report
