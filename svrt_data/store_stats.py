"""Deprecated import path of the store's voxel statistics: it moved to ``svrt_data.loader.store_stats``.

This module only re-exports those names, for one release, and warns when imported: import from
``svrt_data.loader.store_stats`` instead (the names ``svrt_data`` exports at its top level stay there).
"""

from __future__ import annotations

import warnings

from svrt_data.loader.store_stats import store_voxel_stats

warnings.warn(f"{__name__} is deprecated and will be removed in the next release; "
              "import from svrt_data.loader.store_stats instead", DeprecationWarning, stacklevel=2)

__all__ = [
    "store_voxel_stats",
]
