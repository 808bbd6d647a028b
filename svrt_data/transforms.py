"""Deprecated import path of the load-time voxel transforms: it moved to ``svrt_data.loader.transforms``.

This module only re-exports those names, for one release, and warns when imported: import from
``svrt_data.loader.transforms`` instead (the names ``svrt_data`` exports at its top level stay there).
"""

from __future__ import annotations

import warnings

from svrt_data.loader.transforms import (
              FLOAT_DTYPES,
              Compose,
              VoxelStats,
              compose,
              log1p,
              normalize,
              to_float,
              voxel_transform,
)

warnings.warn(f"{__name__} is deprecated and will be removed in the next release; "
              "import from svrt_data.loader.transforms instead", DeprecationWarning, stacklevel=2)

__all__ = [
    "Compose", "FLOAT_DTYPES", "VoxelStats", "compose", "log1p", "normalize", "to_float",
    "voxel_transform",
]
