"""svrt_data: spike-stream I/O, align logs, voxelization, Zarr stores and training data for S-VRT."""

from __future__ import annotations

from svrt_data.geometry import GEOMETRIES, Geometry, get_geometry, parse_geometry
from svrt_data.spike_io import DatWriter, SpikeStream, read_dat, write_dat, write_dat_packed
from svrt_data.voxelize import bin_frame_ranges, voxelize
from svrt_errors import (
    AlignLogError,
    BackendUnavailableError,
    GeometryError,
    IncompleteSequenceError,
    ManifestError,
    SpikeFormatError,
    StoreError,
    StoreLayoutError,
    SvrtError,
    SvrtValueError,
    WindowError,
)

__version__ = "0.1.0"

_LOADER_NAMES = ("SpikeDeblurDataset", "SpikeTransform", "make_loader")


def __getattr__(name: str) -> object:
    """The loader's names (:mod:`svrt_data.loader`), which need torch, load on first use (PEP 562), so
    ``import svrt_data`` never imports torch."""
    if name not in _LOADER_NAMES:
        raise AttributeError(f"module 'svrt_data' has no attribute {name!r}")
    from svrt_data import loader

    value = getattr(loader, name)
    globals()[name] = value
    return value


__all__ = [
    "AlignLogError",
    "BackendUnavailableError",
    "DatWriter",
    "GEOMETRIES",
    "Geometry",
    "GeometryError",
    "IncompleteSequenceError",
    "ManifestError",
    "SpikeDeblurDataset",
    "SpikeFormatError",
    "SpikeStream",
    "SpikeTransform",
    "StoreError",
    "StoreLayoutError",
    "SvrtError",
    "SvrtValueError",
    "WindowError",
    "bin_frame_ranges",
    "get_geometry",
    "make_loader",
    "parse_geometry",
    "read_dat",
    "voxelize",
    "write_dat",
    "write_dat_packed",
]
