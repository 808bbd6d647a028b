"""svrt_data: spike-stream I/O, align logs, voxelization, Zarr stores and training data for S-VRT."""

from __future__ import annotations

from svrt_data.errors import (
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
from svrt_data.geometry import GEOMETRIES, Geometry, get_geometry, parse_geometry
from svrt_data.spike_io import DatWriter, SpikeStream, read_dat, write_dat, write_dat_packed
from svrt_data.voxelize import bin_frame_ranges, voxelize

__version__ = "0.1.0"

__all__ = [
    "AlignLogError",
    "BackendUnavailableError",
    "DatWriter",
    "GEOMETRIES",
    "Geometry",
    "GeometryError",
    "IncompleteSequenceError",
    "ManifestError",
    "SpikeFormatError",
    "SpikeStream",
    "StoreError",
    "StoreLayoutError",
    "SvrtError",
    "SvrtValueError",
    "WindowError",
    "bin_frame_ranges",
    "get_geometry",
    "parse_geometry",
    "read_dat",
    "voxelize",
    "write_dat",
    "write_dat_packed",
]
