"""Writing restored sequences as PNG frames: ``OUT/<sequence>/<frame>.png``, atomically, never over others' files.

A sequence folder is written beside its destination (a fresh ``OUT/.<sequence>.partial-*`` folder) and
renamed into place once every frame is written, so ``OUT/<sequence>`` is either absent or complete.
Each folder carries a manifest (:data:`MANIFEST`) listing the files this writer put there. An existing
``OUT/<sequence>`` is replaced only with ``overwrite=True`` and only when it is one of ours: its
manifest lists every file it holds. The old folder is moved aside, the new one moved in, and then
the old one's listed files are deleted (nothing else is, so nothing unknown is ever lost).

Sequence and frame names come from the data (store attributes, raw file names); they must be plain
names (no path separators, not ``.``/``..``, no leading dot, no control characters) before they
become paths.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from svrt_errors import SvrtValueError

__all__ = ["MANIFEST", "check_destination", "check_plain_name", "write_sequence_pngs"]

MANIFEST = ".svrt-infer.json"
_FORMAT = "svrt-infer-frames"


def check_plain_name(name: str, what: str) -> str:
    """``name`` if it is a plain file name (module docstring), else :class:`SvrtValueError` naming it."""
    bad = (
        not isinstance(name, str) or not name or name in (".", "..") or name.startswith(".")
        or any(c in name for c in "/\\") or any(ord(c) < 32 or c == "\x7f" for c in name)
    )
    if bad:
        raise SvrtValueError(f"{what} {name!r} is not a plain name (no path separators, no leading dot, no control "
                             "characters); rename it in the dataset")
    return name


def _ours(folder: Path) -> list[str] | None:
    """The files our manifest in ``folder`` lists, when the folder holds exactly those and the manifest."""
    try:
        meta = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    files = meta.get("files") if isinstance(meta, dict) and meta.get("format") == _FORMAT else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    present = sorted(p.name for p in folder.iterdir())
    return files if present == sorted([*files, MANIFEST]) else None


def check_destination(out: str | os.PathLike, sequence: str, *, overwrite: bool) -> Path:
    """``out/sequence`` if this writer may write it: a plain name, and absent (or, with ``overwrite``, a
    folder this writer made that holds nothing else); else :class:`SvrtValueError` saying why."""
    check_plain_name(sequence, "sequence name")
    target = Path(out) / sequence
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise SvrtValueError(f"{target} already exists; pass --overwrite to replace a folder this command wrote, "
                                 "or choose another --out")
        if target.is_symlink() or not target.is_dir() or _ours(target) is None:
            raise SvrtValueError(f"{target} exists and was not written by svrt-model infer (or holds other files); "
                                 "it is left alone: move it away or choose another --out")
    return target


def write_sequence_pngs(out: str | os.PathLike, sequence: str, frames: np.ndarray, frame_names: list[str], *,
                        overwrite: bool = False) -> Path:
    """Write ``frames`` (uint8 ``(N, H, W, 3)``) as ``out/sequence/<name>.png``; returns the folder.

    Raises:
        SvrtValueError: a name is not plain, names repeat, shapes disagree, or ``out/sequence`` exists and
            may not (``overwrite=False``) or cannot (not written by this function) be replaced.
    """
    target = check_destination(out, sequence, overwrite=overwrite)
    for n in frame_names:
        check_plain_name(n, f"frame name in sequence {sequence}")
    if len(set(frame_names)) != len(frame_names):
        raise SvrtValueError(f"sequence {sequence}: frame names repeat ({len(frame_names)} frames, "
                             f"{len(set(frame_names))} names); the frames' source files must have distinct names")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) != len(frame_names):
        raise SvrtValueError(f"sequence {sequence}: expected uint8 frames (N, H, W, 3) with N = {len(frame_names)} "
                             f"names, got {frames.dtype} {frames.shape}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{sequence}.partial-", dir=out))
    try:
        files = []
        for frame, name in zip(frames, frame_names, strict=True):
            Image.fromarray(frame).save(tmp / f"{name}.png", format="PNG")
            files.append(f"{name}.png")
        (tmp / MANIFEST).write_text(json.dumps({"format": _FORMAT, "sequence": sequence, "files": files}, indent=1))
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{sequence}.old-", dir=out))
            old_files = _ours(target)  # checked again just before the swap
            if old_files is None:
                raise SvrtValueError(f"{target} changed while writing and is no longer ours alone; it is left alone")
            os.replace(target, old / sequence)
            os.replace(tmp, target)
            for f in [*old_files, MANIFEST]:
                (old / sequence / f).unlink()
            (old / sequence).rmdir()
            old.rmdir()
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():  # made by mkdtemp above, so ours to remove
            shutil.rmtree(tmp)
    return target
