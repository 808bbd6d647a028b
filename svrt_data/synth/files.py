"""Writing the dataset's files so that an interrupted run never leaves one that looks complete.

Every file is written to a hidden temporary name beside its destination and renamed into place
(``os.replace`` is atomic on one filesystem); sequences are built in a staging folder
(``OUT/.partial/<split>/<sequence>``, out of reach of the raw-dataset scanners) and moved to
``OUT/<split>/<sequence>`` only when complete. ``synth.json`` says ``"complete": false`` until the
align log has been written. PNG encoding stores no timestamp, so the bytes depend only on the pixels.

Replacing a dataset (``overwrite``) never deletes first: the new dataset is built whole in
``OUT/.synth.svrt-new`` and its entries are then swapped with the old ones (atomic exchanges where the
file system offers them, ``synth.json`` last), after which the old entries are deleted.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from svrt_data.store.owned import exchange
from svrt_errors import SvrtValueError

__all__ = ["MANIFEST", "STAGING", "REPLACEMENT", "OWNED", "prepare_output", "swap_dataset", "write_bytes",
           "write_json", "write_npy", "write_png"]

MANIFEST = "synth.json"
STAGING = ".partial"
REPLACEMENT = ".synth.svrt-new"  # where overwrite=True builds the new dataset
# What a synthetic dataset consists of at its top level: all that overwrite=True replaces (manifest last).
OWNED = ("train", "test", "align.csv", MANIFEST)


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_png(path: Path, image: np.ndarray) -> Path:
    """Write uint8 ``(H, W, 3)`` as an RGB PNG."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return write_bytes(path, buf.getvalue())


def write_npy(path: Path, array: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return write_bytes(path, buf.getvalue())


def write_json(path: Path, obj: Any) -> Path:
    return write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def prepare_output(out_dir: str | os.PathLike, *, overwrite: bool) -> tuple[Path, bool]:
    """Make ``out_dir`` ready for a new dataset; return it and whether an existing dataset will be replaced.

    An absent or empty folder is used as is. A non-empty one is refused unless ``overwrite`` is set and it
    holds a previous synthetic dataset (its ``synth.json``); nothing is deleted here (the replacement is
    built beside, see :func:`swap_dataset`), except leftovers of killed runs under svrt's own names.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SvrtValueError(f"{out}: exists and is not a folder; give a folder for the dataset")
    out.mkdir(parents=True, exist_ok=True)
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return out, False
    if not overwrite:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise SvrtValueError(
            f"{out}: folder is not empty ({len(entries)} entries: {shown}); choose an empty folder, or pass "
            "overwrite=True (--overwrite) to replace a synthetic dataset written there before"
        )
    if not (out / MANIFEST).is_file():
        raise SvrtValueError(
            f"{out}: not empty and holds no {MANIFEST}, so it is not a synthetic dataset svrt wrote; refusing to "
            "delete files svrt did not write. Choose another folder or empty this one yourself"
        )
    for name in (STAGING, REPLACEMENT):  # our own leftovers
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    return out, True


def swap_dataset(new: Path, out: Path) -> None:
    """Swap the complete dataset in ``new`` (``OUT/.synth.svrt-new``) into ``out``, entry by entry, then delete
    ``new`` (which then holds the old entries). Entries of the old dataset that the new one lacks go too."""
    for name in OWNED:
        src, dst = new / name, out / name
        if src.exists():
            if dst.exists() and not exchange(src, dst):
                os.rename(dst, new / f".old-{name}")
                os.rename(src, dst)
            elif not dst.exists():
                os.rename(src, dst)
        elif dst.exists():
            os.rename(dst, new / f".old-{name}")
    shutil.rmtree(new)
