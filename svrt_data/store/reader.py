"""Reading an svrt Zarr store: version check, complete sequences only, arrays by name, damage reported.

Sequences are found from the folders and their ``zarr.json`` files (hidden folders, svrt's temporary
ones, are skipped), so a damaged node is listed as damaged instead of crashing the listing. Arrays
come back as :class:`~svrt_data.store.checked.CheckedArray`: a read of a missing or damaged chunk
raises, naming the array and the chunk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from svrt_data.names import check_name, check_split, name_problem
from svrt_data.store import layout as L
from svrt_data.store.checked import CheckedArray
from svrt_errors import IncompleteSequenceError, StoreError, StoreLayoutError

__all__ = ["SvrtStore", "StoredSequence", "open_store", "node_attrs"]


def node_attrs(folder: Path) -> tuple[dict | None, str | None]:
    """``(attributes, None)`` of the zarr node in ``folder``; ``(None, None)`` when it has no zarr.json;
    ``(None, why)`` when its zarr.json cannot be read."""
    meta = folder / "zarr.json"
    try:
        text = meta.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{meta} cannot be read ({exc.strerror})"
    try:
        doc = json.loads(text)
        attrs = doc.get("attributes", {})
        if not isinstance(attrs, dict):
            raise ValueError("attributes is not an object")
    except (ValueError, AttributeError) as exc:
        return None, f"{meta} is not valid zarr metadata ({exc}); it is damaged"
    return attrs, None


@dataclass
class StoredSequence:
    """One complete sequence of a store. Arrays are zarr arrays (lazy); ``windows`` is loaded."""

    split: str
    name: str
    group: Any
    attrs: dict
    folder: Path | None = None  # the sequence's folder (default: from the zarr group's local store)

    def _folder(self) -> Path:
        return self.folder if self.folder is not None else Path(str(self.group.store.root)) / self.group.path

    @property
    def key(self) -> str:
        return f"{self.split}/{self.name}" if self.split else self.name

    def array(self, name: str) -> CheckedArray:
        folder = self._folder() / name
        if not (folder / "zarr.json").is_file():
            raise StoreLayoutError(f"sequence {self.key} has no array {name!r} (no {folder}/zarr.json); if it had "
                                   "one, the store is damaged: run `svrt-data verify`")
        try:
            return CheckedArray(self.group[name], str(folder))
        except Exception as exc:  # zarr's own errors for damaged metadata (JSON, fields, codecs)
            raise StoreError(f"{folder}: the array metadata cannot be read ({type(exc).__name__}: {exc}); the "
                             "store is damaged: run `svrt-data verify`") from None

    @cached_property
    def blur(self) -> Any:
        return self.array("blur")

    @cached_property
    def sharp(self) -> Any | None:
        folder = self._folder() / "sharp"
        return self.array("sharp") if folder.is_dir() else None

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
        attrs, why = node_attrs(self.path)
        if why is not None:
            raise StoreError(f"{why}; this store's root cannot be read. Rebuild it with `svrt-data voxelize RAW "
                             f"--out {self.path} --overwrite` (or restore the file)")
        L.check_layout_version(attrs or {}, str(self.path))
        self.attrs = attrs or {}
        self.root = zarr.open_group(str(self.path), mode="r")
        self.damaged: dict[str, str] = {}  # "split/sequence" (or a folder) -> why its node cannot be read
        self._attrs: dict[tuple[str, str], dict] = {}
        self._scan()

    def _scan(self) -> None:
        def children(folder: Path) -> list[Path]:
            try:
                entries = sorted(folder.iterdir())
            except OSError:
                return []
            return [p for p in entries if p.is_dir() and name_problem(p.name) is None]

        for top in children(self.path):
            attrs, why = node_attrs(top)
            if why is not None or attrs is None:
                self.damaged[top.name] = why or f"{top}: no zarr.json (not a zarr group); the store is damaged"
                continue
            if L.SEQUENCE_ATTR in attrs:
                self._attrs[("", top.name)] = attrs
                continue
            for sub in children(top):
                attrs, why = node_attrs(sub)
                key = f"{top.name}/{sub.name}"
                if why is not None or attrs is None:
                    self.damaged[key] = why or f"{sub}: no zarr.json (a sequence without metadata); the store is " \
                                               "damaged"
                elif L.SEQUENCE_ATTR in attrs:
                    self._attrs[(top.name, sub.name)] = attrs
                else:
                    self.damaged[key] = f"{sub}/zarr.json has no '{L.SEQUENCE_ATTR}' attribute; the store is damaged"

    @property
    def voxel(self) -> dict:
        return self.attrs[L.ROOT_ATTR]["voxel"]

    def sequence_keys(self, *, include_incomplete: bool = False) -> list[tuple[str, str]]:
        """``(split, sequence)`` of every sequence group (complete ones unless asked otherwise; with
        ``include_incomplete`` also those whose metadata is damaged)."""
        keys = [k for k, a in self._attrs.items() if include_incomplete or isinstance(a.get(L.COMPLETE_ATTR), dict)]
        if include_incomplete:
            keys += [tuple(k.split("/")) if "/" in k else ("", k) for k in self.damaged]
        return sorted(set(keys))

    def sequence_attrs(self, split: str, name: str) -> dict:
        """The attributes of a sequence's group (complete or not), as read from its zarr.json."""
        try:
            return self._attrs[(split, name)]
        except KeyError:
            raise StoreError(f"{self.path}: no sequence {split + '/' if split else ''}{name}") from None

    def splits(self) -> list[str]:
        return sorted({s for s, _ in self.sequence_keys(include_incomplete=True)})

    def incomplete(self, split: str | None = None) -> list[str]:
        """Names (``split/sequence``) of sequences without a completion marker or with damaged metadata."""
        done = set(self.sequence_keys())
        return [f"{s}/{q}" if s else q for s, q in self.sequence_keys(include_incomplete=True)
                if (s, q) not in done and (split is None or s == split)]

    def sequence(self, split: str, name: str) -> StoredSequence:
        check_split(split)
        check_name(name, "sequence")
        path = f"{split}/{name}" if split else name
        if path in self.damaged:
            raise StoreError(f"{self.path}: sequence {path} cannot be read: {self.damaged[path]}; run `svrt-data "
                             "verify`, then `svrt-data voxelize ... --resume` to rebuild it")
        attrs = self._attrs.get((split, name))
        if attrs is None:
            raise StoreError(f"{self.path}: no sequence {path!r}")
        if not isinstance(attrs.get(L.COMPLETE_ATTR), dict):
            raise IncompleteSequenceError(
                f"{self.path}: sequence {path} is incomplete (its writer was interrupted); rerun "
                "`svrt-data voxelize ... --resume` to rebuild it"
            )
        return StoredSequence(split, name, self.root[path], attrs, self.path / path)

    def sequences(self, split: str | None = None) -> list[StoredSequence]:
        """Complete sequences (of one split). Raises if any of them is incomplete."""
        bad = self.incomplete(split)
        if bad:
            raise IncompleteSequenceError(
                f"{self.path}: {len(bad)} incomplete sequence(s) (or with damaged metadata): {', '.join(bad[:10])}; "
                "rerun `svrt-data voxelize ... --resume` to finish them (`svrt-data verify` lists the damage)"
            )
        return [self.sequence(s, q) for s, q in self.sequence_keys() if split is None or s == split]


def open_store(path: str | os.PathLike) -> SvrtStore:
    return SvrtStore(path)
