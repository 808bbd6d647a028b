"""Reading an svrt Zarr store: version check, complete sequences only, arrays by name."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from svrt_data.store import layout as L
from svrt_errors import IncompleteSequenceError, StoreError, StoreLayoutError

__all__ = ["SvrtStore", "StoredSequence", "open_store"]


@dataclass
class StoredSequence:
    """One complete sequence of a store. Arrays are zarr arrays (lazy); ``windows`` is loaded."""

    split: str
    name: str
    group: Any
    attrs: dict

    @property
    def key(self) -> str:
        return f"{self.split}/{self.name}" if self.split else self.name

    def array(self, name: str) -> Any:
        try:
            return self.group[name]
        except KeyError:
            raise StoreLayoutError(f"sequence {self.key} has no array {name!r}") from None

    @cached_property
    def blur(self) -> Any:
        return self.array("blur")

    @cached_property
    def sharp(self) -> Any | None:
        return self.group["sharp"] if "sharp" in self.group else None

    @cached_property
    def spikes(self) -> Any:
        return self.array("spikes")

    @cached_property
    def voxels(self) -> Any:
        return self.array("voxels")

    @cached_property
    def windows(self) -> np.ndarray:
        return np.asarray(self.array("windows")[...], dtype=np.float64)

    @property
    def n_frames(self) -> int:
        return int(self.blur.shape[0])

    @property
    def rgb_shape(self) -> tuple[int, int]:
        return int(self.blur.shape[1]), int(self.blur.shape[2])

    @property
    def spike_shape(self) -> tuple[int, int]:
        sp = self.attrs[L.SEQUENCE_ATTR]["spike"]
        return int(sp["height"]), int(sp["width"])

    @property
    def voxel(self) -> dict:
        return self.attrs[L.SEQUENCE_ATTR]["voxel"]

    @property
    def checksums(self) -> dict:
        return self.attrs[L.COMPLETE_ATTR]["checksums"]


class SvrtStore:
    """An svrt store opened read-only. Refuses other layout versions; hands out complete sequences only."""

    def __init__(self, path: str | os.PathLike) -> None:
        import zarr

        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise StoreError(f"{self.path}: not a Zarr store (no zarr.json); create one with `svrt-data voxelize`")
        self.root = zarr.open_group(str(self.path), mode="r")
        self.attrs = dict(self.root.attrs)
        L.check_layout_version(self.attrs, str(self.path))

    @property
    def voxel(self) -> dict:
        return self.attrs[L.ROOT_ATTR]["voxel"]

    def _groups(self, group: Any) -> list[str]:
        return sorted(name for name, _ in group.groups())

    def _is_sequence(self, group: Any) -> bool:
        return L.SEQUENCE_ATTR in group.attrs

    def sequence_keys(self, *, include_incomplete: bool = False) -> list[tuple[str, str]]:
        """``(split, sequence)`` of every sequence group (complete ones unless asked otherwise)."""
        keys = []
        for name in self._groups(self.root):
            g = self.root[name]
            if self._is_sequence(g):
                candidates = [("", name, g)]
            else:
                candidates = [(name, sub, g[sub]) for sub in self._groups(g)]
            for split, seq, sg in candidates:
                if include_incomplete or L.COMPLETE_ATTR in sg.attrs:
                    keys.append((split, seq))
        return keys

    def splits(self) -> list[str]:
        return sorted({s for s, _ in self.sequence_keys(include_incomplete=True)})

    def incomplete(self, split: str | None = None) -> list[str]:
        """Names (``split/sequence``) of sequences without a completion marker."""
        done = set(self.sequence_keys())
        return [f"{s}/{q}" if s else q for s, q in self.sequence_keys(include_incomplete=True)
                if (s, q) not in done and (split is None or s == split)]

    def sequence(self, split: str, name: str) -> StoredSequence:
        path = f"{split}/{name}" if split else name
        try:
            g = self.root[path]
        except KeyError:
            raise StoreError(f"{self.path}: no sequence {path!r}") from None
        attrs = dict(g.attrs)
        if L.COMPLETE_ATTR not in attrs:
            raise IncompleteSequenceError(
                f"{self.path}: sequence {path} is incomplete (its writer was interrupted); rerun "
                "`svrt-data voxelize ... --resume` to rebuild it"
            )
        return StoredSequence(split, name, g, attrs)

    def sequences(self, split: str | None = None) -> list[StoredSequence]:
        """Complete sequences (of one split). Raises if any of them is incomplete."""
        bad = self.incomplete(split)
        if bad:
            raise IncompleteSequenceError(
                f"{self.path}: {len(bad)} incomplete sequence(s): {', '.join(bad[:10])}; rerun "
                "`svrt-data voxelize ... --resume` to finish them"
            )
        return [self.sequence(s, q) for s, q in self.sequence_keys() if split is None or s == split]


def open_store(path: str | os.PathLike) -> SvrtStore:
    return SvrtStore(path)
