"""The fingerprint of a sequence's inputs, recorded in the store and compared when resuming.

A stored sequence records, per input file (spike ``.dat`` files, then blurry and sharp images, all
relative to the raw root), its size, modification time and sha256 (the hash the writer computes
anyway for provenance), plus the sha256 of its windows and its geometry. Resuming compares the files
of the current raw dataset: same size and mtime is the same file; a different mtime with the same
size is hashed and compared (a copied dataset keeps its content); anything else is a change.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from svrt_data.store.sources import SequenceSource

__all__ = ["FileStamp", "stamp_file", "sha256_file", "windows_digest", "geometry_record", "compare_fingerprint"]

_BLOCK = 1 << 22


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_BLOCK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class FileStamp:
    file: str  # relative to the raw root
    bytes: int
    mtime_ns: int
    sha256: str

    def record(self) -> list:
        return [self.file, self.bytes, self.mtime_ns, self.sha256]


def stamp_file(root: Path, rel: str, data: bytes | None = None) -> FileStamp:
    """Stamp one input (``data``: its bytes when the caller read them anyway, so they are hashed once)."""
    path = root / rel
    st = os.stat(path)
    digest = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(path)
    return FileStamp(rel, int(st.st_size), int(st.st_mtime_ns), digest)


def windows_digest(windows: np.ndarray) -> str:
    return "sha256:" + hashlib.sha256(np.ascontiguousarray(windows, dtype="<f8").tobytes()).hexdigest()


def geometry_record(source: SequenceSource) -> dict[str, Any]:
    g = source.geometry
    return {"height": g.height, "width": g.width, "flip": g.flip, "rate_hz": g.rate_hz,
            "rgb": list(source.rgb_shape)}


def _files(source: SequenceSource) -> list[str]:
    return [r.file for r in source.spike_ranges] + list(source.blur_files) + list(source.sharp_files or ())


def compare_fingerprint(recorded: Any, source: SequenceSource, *, limit: int = 3) -> list[str]:
    """How the current inputs of ``source`` differ from the ``recorded`` fingerprint ([] when they match)."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("files"), list):
        return ["the stored sequence records no fingerprint of its inputs"]
    out: list[str] = []
    if recorded.get("geometry") != geometry_record(source):
        out.append(f"geometry {recorded.get('geometry')} is now {geometry_record(source)}")
    if recorded.get("windows") != windows_digest(source.windows):
        out.append("the align log gives other spike windows")
    stored = {}
    for row in recorded["files"]:
        if isinstance(row, list) and len(row) == 4:
            stored[row[0]] = row
    now = _files(source)
    if [r[0] for r in recorded["files"] if isinstance(r, list) and r] != now:
        added = [f for f in now if f not in stored]
        gone = [f for f in stored if f not in now]
        out.append(f"the input files differ (new: {added[:limit]}, no longer used: {gone[:limit]})")
        return out
    for rel in now:
        _, size, mtime, digest = stored[rel]
        path = source.raw_root / rel
        try:
            st = os.stat(path)
        except OSError as exc:
            out.append(f"{rel} cannot be read ({exc.strerror})")
        else:
            if st.st_size != size:
                out.append(f"{rel} has {st.st_size} bytes, {size} when stored")
            elif st.st_mtime_ns != mtime and sha256_file(path) != digest:
                out.append(f"{rel} changed since it was stored (same size, other content)")
        if len(out) >= limit:
            break
    return out
