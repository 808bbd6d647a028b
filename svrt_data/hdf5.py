"""HDF5 import/export of spike streams, for users of HDF5 tools.

Layout of an exported file (one stream per file, format version 1)::

    /spikes   uint8 (S, H, W/8)   upright packed rows, bit order little (pixel x = bit x%8 of byte x//8),
                                  chunked along time (``chunk_frames`` x H x W/8)
      attrs: svrt_format="spike-stream", format_version=1, height, width, rate_hz, bitorder="little",
             source_flip (the row order of the .dat it came from), source (file name)

The packed rows are exactly what :meth:`SpikeStream.packed` returns, so an export is a byte copy and
:func:`import_h5` writes back the original ``.dat`` bit for bit.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from svrt_data.geometry import Geometry
from svrt_data.spike_io import DatWriter, PackedStream
from svrt_errors import SpikeFormatError

__all__ = ["H5SpikeStream", "export_h5", "import_h5", "read_h5", "open_h5", "is_svrt_h5", "STORE_FORMAT"]

FORMAT = "spike-stream"
FORMAT_VERSION = 1
DEFAULT_CHUNK_FRAMES = 256
STORE_FORMAT = "svrt-store"  # the file-level svrt_format of a store export (svrt_data.store.h5)


def open_h5(path: str | os.PathLike):
    """Open an HDF5 file read-only; anything that is not one is a :class:`SpikeFormatError` naming it."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise SpikeFormatError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise SpikeFormatError(f"{path}: not a readable HDF5 file ({exc}); give a file written by "
                               "`svrt-data export-h5`") from None


def is_svrt_h5(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an HDF5 file svrt wrote (a store export or a spike-stream export)."""
    try:
        with open_h5(path) as f:
            if f.attrs.get("svrt_format") == STORE_FORMAT:
                return True
            ds = f.get("spikes")
            return ds is not None and ds.attrs.get("svrt_format") == FORMAT
    except (SpikeFormatError, OSError, ValueError):
        return False


def export_h5(
    stream: PackedStream,
    path: str | os.PathLike,
    *,
    dataset: str = "spikes",
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    compression: str | None = None,
    progress: bool = True,
) -> Path:
    """Write ``stream`` to an HDF5 file as upright packed rows, atomically.

    Args:
        stream: a :class:`SpikeStream` (or any packed stream) whose width is a multiple of 8.
        chunk_frames: frames per HDF5 chunk along time.
        compression: an h5py filter name ("gzip", "lzf") or None; spikes at 5-30% firing compress little.
    """
    import h5py

    path = Path(path)
    if chunk_frames < 1:
        raise SpikeFormatError(f"chunk_frames must be >= 1, got {chunk_frames}")
    n, g = len(stream), stream.geometry
    if g.width % 8:
        raise SpikeFormatError(f"HDF5 export stores packed rows; width {g.width} is not a multiple of 8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            shape = (n, g.height, g.width // 8)
            chunks = (max(1, min(chunk_frames, n)), g.height, g.width // 8) if n else None
            ds = f.create_dataset(dataset, shape=shape, dtype=np.uint8, chunks=chunks, compression=compression)
            ds.attrs.update(
                svrt_format=FORMAT, format_version=FORMAT_VERSION, height=g.height, width=g.width,
                rate_hz=g.rate_hz, bitorder="little", source_flip=g.flip,
                source=str(getattr(stream, "path", "")),
            )
            step = chunk_frames * max(1, 4096 // chunk_frames)  # whole chunks, ~4096 frames per write
            for s, block in tqdm(stream.iter_packed(step), total=-(-n // step), desc=f"export {path.name}",
                                 unit="block", disable=not progress):
                ds[s : s + len(block)] = block
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class H5SpikeStream(PackedStream):
    """A spike stream stored in HDF5 by :func:`export_h5`; same reading interface as :class:`SpikeStream`.

    The file stays open until :meth:`close` (or the end of a ``with`` block).
    """

    def __init__(self, path: str | os.PathLike, *, dataset: str = "spikes") -> None:
        self.path = Path(path)
        self._file = open_h5(self.path)
        try:
            self._ds = _checked_dataset(self._file, self.path, dataset)
        except BaseException:
            self._file.close()
            raise
        a = self._ds.attrs
        h, w = int(a["height"]), int(a["width"])
        # Frames inside the file are upright: ``flip`` records the row order of the source .dat.
        self.geometry = Geometry(h, w, bool(a["source_flip"]), float(a["rate_hz"]), name=f"{h}x{w}")
        self._n = int(self._ds.shape[0])

    def packed(self, start: int | None = None, stop: int | None = None) -> np.ndarray:
        a, b = self._range(start, stop)
        return np.ascontiguousarray(self._ds[a:b])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> H5SpikeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"H5SpikeStream({str(self.path)!r}, {self._n} frames, {self.geometry.height}x{self.geometry.width})"


def _checked_dataset(f, path: Path, dataset: str):
    if dataset not in f:
        raise SpikeFormatError(f"{path}: no dataset {dataset!r} (has: {', '.join(f.keys())})")
    ds = f[dataset]
    a = ds.attrs
    if a.get("svrt_format") != FORMAT:
        raise SpikeFormatError(
            f"{path}:/{dataset} is not an svrt spike stream (svrt_format={a.get('svrt_format')!r}); "
            "write it with svrt_data.hdf5.export_h5 / `svrt-data export-h5`"
        )
    try:
        version, h, w = int(a["format_version"]), int(a["height"]), int(a["width"])
        float(a["rate_hz"]), bool(a["source_flip"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SpikeFormatError(f"{path}:/{dataset}: attribute {exc} is missing or not a number; the file is "
                               "damaged (export it again with `svrt-data export-h5`)") from None
    if version != FORMAT_VERSION:
        raise SpikeFormatError(
            f"{path}: format_version {a['format_version']} is not supported (this svrt reads {FORMAT_VERSION})"
        )
    if ds.ndim != 3 or ds.shape[1:] != (h, w // 8) or ds.dtype != np.uint8:
        raise SpikeFormatError(f"{path}:/{dataset} has {ds.dtype} {ds.shape}, expected uint8 (S, {h}, {w // 8})")
    return ds


def read_h5(path: str | os.PathLike, *, dataset: str = "spikes") -> H5SpikeStream:
    """Open an HDF5 spike stream written by :func:`export_h5`."""
    return H5SpikeStream(path, dataset=dataset)


def import_h5(
    h5_path: str | os.PathLike,
    dat_path: str | os.PathLike,
    *,
    dataset: str = "spikes",
    flip: bool | None = None,
    chunk_frames: int = 4096,
) -> Path:
    """Write an HDF5 spike stream back to ``.dat`` (rows bottom-up when ``flip``; default: the source's)."""
    with read_h5(h5_path, dataset=dataset) as src:
        with DatWriter(dat_path, flip=src.flip if flip is None else flip) as w:
            for _, block in src.iter_packed(chunk_frames):
                w.write_packed(block)
    return Path(dat_path)
