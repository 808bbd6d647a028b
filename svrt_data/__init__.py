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

# Names that need torch load on first use (PEP 562), so `import svrt_data` never imports torch.
_LAZY = {
    "SpikeDeblurDataset": "svrt_data.loader.dataset",
    "make_loader": "svrt_data.loader.dataset",
    "SpikeTransform": "svrt_data.loader.spike_transform",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'svrt_data' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
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
