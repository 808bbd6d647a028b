"""The checked sequences a dataset reads: :func:`scan_store` and its :class:`SequenceInfo` records.

:func:`scan_store` checks, in the process that builds a dataset, everything a worker would otherwise
trip over (missing or incomplete sequences, missing arrays, shapes and dtypes against the store layout
(:func:`svrt_data.store.layout.sequence_arrays`), windows, codecs) and returns plain, picklable
:class:`SequenceInfo` records, which :class:`~svrt_data.loader.clip_reader.ClipReader` reads from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from svrt_data.loader.clip_plan import ClipSource
from svrt_data.store import layout as L
from svrt_data.store.fast_reader import ArrayMeta, parse_array_meta
from svrt_errors import IncompleteSequenceError, StoreError, StoreLayoutError, SvrtValueError

__all__ = ["READERS", "SPIKE_INPUTS", "SequenceInfo", "scan_store"]

READERS = ("fast", "zarr")
SPIKE_INPUTS = ("voxels", "raw", "none")
SpikeInput = Literal["voxels", "raw", "none"]


@dataclass(frozen=True, eq=False)
class SequenceInfo:
    """One checked sequence: where its arrays are and their shapes (plain data, picklable)."""

    split: str
    name: str
    n_frames: int
    rgb_shape: tuple[int, int]
    spike_shape: tuple[int, int]
    bins: int | None
    windows: np.ndarray  # float64 (N, 2), in `spikes` frame units
    arrays: dict[str, ArrayMeta] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.split}/{self.name}" if self.split else self.name

    def clip_source(self) -> ClipSource:
        """What the clip plan needs of this sequence."""
        return ClipSource(self.key, self.n_frames, self.rgb_shape, self.spike_shape, self.windows)


def _array_shape(group: Any, name: str) -> tuple[tuple[int, ...], str] | None:
    if name not in group:
        return None
    a = group[name]
    return tuple(int(v) for v in a.shape), str(a.dtype)


def _check_sequence(seq: Any, needed: list[str]) -> list[str]:
    """Problems of one :class:`~svrt_data.store.reader.StoredSequence` (its arrays ``needed``), against the
    layout's arrays for the sequence's sizes (frames and RGB size from ``blur``, spike frames from
    ``spikes``, spike size and voxel settings from the sequence's attributes)."""
    g, key = seq.group, seq.key
    shapes = {n: s for n in needed if (s := _array_shape(g, n)) is not None}
    missing = [n for n in needed if n not in shapes]
    if missing:
        return [f"{key}: missing array(s) {missing} (it has {sorted(n for n, _ in g.arrays())})"]
    blur = shapes["blur"][0]
    try:
        voxels = "voxels" in shapes
        geometry = L.SequenceGeometry(
            blur[0], (blur[1], blur[2]), seq.spike_shape, shapes["spikes"][0][0] if "spikes" in shapes else 0,
            int(seq.voxel["bins"]) if voxels else 1, seq.voxel["mode"] if voxels else "count", "sharp" in shapes)
        layout = L.sequence_arrays(geometry)
    except (StoreLayoutError, KeyError, IndexError, TypeError, ValueError) as exc:
        return [f"{key}: its blur array {shapes['blur'][1]} {blur} and attributes do not describe a sequence of "
                f"this layout ({type(exc).__name__}: {exc}); rebuild it with `svrt-data voxelize --overwrite`"]
    out = []
    for name, (got_shape, got_dtype) in shapes.items():
        a = layout[name]
        if got_shape != a.shape or got_dtype != a.dtype:
            out.append(f"{key}: array {name!r} is {got_dtype} {got_shape}, expected {a.dtype} {a.shape} (from the "
                       "blur frames and the sequence attributes); rebuild it with `svrt-data voxelize --overwrite`")
    return out


def scan_store(
    store: str | os.PathLike,
    split: str,
    *,
    sequences: Sequence[str] | None = None,
    spike_input: SpikeInput = "voxels",
    sharp: bool | None = None,
    reader: Literal["fast", "zarr"] = "fast",
) -> tuple[list[SequenceInfo], bool]:
    """Check the sequences of ``split`` that a dataset will read; return them and whether sharp is read.

    Args:
        store: the store folder (``svrt-data voxelize`` output).
        split: the split (``""`` for a store without splits).
        sequences: names (``SEQ`` or ``split/SEQ``) to keep; None keeps all.
        spike_input: which spike arrays are needed (``voxels``; ``raw``: ``spikes`` + ``windows``; ``none``).
        sharp: True requires ``sharp`` in every sequence, False never reads it, None reads it when every
            sequence has it.
        reader: ``"fast"`` also checks that every array's codecs are the ones the fast reader decodes.

    Raises:
        StoreError / StoreLayoutError: not a store, another layout version, an unknown split or sequence,
            a missing array, a shape or dtype that disagrees with the sequence's attributes.
        IncompleteSequenceError: a selected sequence has no completion marker.
    """
    from svrt_data.store.reader import SvrtStore

    if spike_input not in SPIKE_INPUTS:
        raise SvrtValueError(f"spike_input must be one of {SPIKE_INPUTS}, got {spike_input!r}")
    if reader not in READERS:
        raise SvrtValueError(f"reader must be one of {READERS}, got {reader!r}")
    st = SvrtStore(store)
    where = str(st.path)
    all_keys = [k for k in st.sequence_keys(include_incomplete=True) if k[0] == split]
    if not all_keys:
        raise StoreError(f"{where}: no split {split!r}; the store has splits {st.splits()}")
    if sequences is not None:
        wanted = list(sequences)
        known = {q for _, q in all_keys} | {f"{s}/{q}" for s, q in all_keys}
        unknown = [q for q in wanted if q not in known]
        if unknown:
            raise StoreError(f"{where}: split {split!r} has no sequence(s) {unknown}; it has "
                             f"{sorted(q for _, q in all_keys)}")
        all_keys = [(s, q) for s, q in all_keys if q in wanted or f"{s}/{q}" in wanted]
    done = set(st.sequence_keys())
    bad = [f"{s}/{q}" if s else q for s, q in all_keys if (s, q) not in done]
    if bad:
        raise IncompleteSequenceError(
            f"{where}: {len(bad)} incomplete sequence(s): {', '.join(bad[:10])}; finish them with `svrt-data "
            "voxelize ... --resume`, or leave them out with sequences=[...]"
        )
    needed = ["blur", "windows"] + {"voxels": ["voxels"], "raw": ["spikes"], "none": []}[spike_input]
    stored = [st.sequence(s, q) for s, q in all_keys]
    have_sharp = ["sharp" in seq.group for seq in stored]
    if sharp is True and not all(have_sharp):
        lacking = [seq.key for seq, h in zip(stored, have_sharp, strict=True) if not h]
        raise StoreLayoutError(f"{where}: sharp=True but {len(lacking)} sequence(s) have no 'sharp' array: "
                               f"{', '.join(lacking[:10])}; use sharp=False (or None) to load blurry frames only")
    read_sharp = all(have_sharp) if sharp is None else bool(sharp)
    names = needed + (["sharp"] if read_sharp else [])
    problems: list[str] = []
    infos: list[SequenceInfo] = []
    for seq in stored:
        errs = _check_sequence(seq, names)
        if errs:
            problems += errs
            continue
        windows = seq.windows
        if spike_input == "raw":
            s_frames = int(seq.spikes.shape[0])
            bad_rows = (windows[:, 0] < 0) | (windows[:, 1] > s_frames) | (windows[:, 1] <= windows[:, 0])
            if bad_rows.any():
                problems.append(f"{seq.key}: windows reach outside its {s_frames} stored spike frames; the store is "
                                "damaged (run `svrt-data verify`)")
                continue
        metas = {}
        for name in names:
            if reader == "fast":
                metas[name] = parse_array_meta(Path(where) / seq.key / name)
            else:
                a = seq.group[name]
                metas[name] = ArrayMeta(str(Path(where) / seq.key / name), tuple(a.shape), np.dtype(a.dtype).str,
                                        0, tuple(a.shape), tuple(a.shape), False, True, None, "default", "/")
        bins = int(seq.voxel["bins"]) if spike_input == "voxels" else None
        infos.append(SequenceInfo(seq.split, seq.name, seq.n_frames, seq.rgb_shape, seq.spike_shape, bins,
                                  windows, metas))
    if problems:
        raise StoreLayoutError(f"{where}: {len(problems)} problem(s) in split {split!r}:\n  " + "\n  ".join(problems))
    if spike_input == "voxels":
        kinds = {(i.bins, i.arrays["voxels"].dtype) for i in infos}
        if len(kinds) > 1:
            raise StoreLayoutError(f"{where}: sequences of split {split!r} hold voxels of different bins/dtypes "
                                   f"{sorted(kinds)}; one dataset needs one K; select sequences with sequences=[...]")
    return infos, read_sharp
