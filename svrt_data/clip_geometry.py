"""Deprecated import path of the clip geometry: it moved to ``svrt_data.loader.clip_geometry``.

This module only re-exports those names, for one release, and warns when imported: import from
``svrt_data.loader.clip_geometry`` instead (the names ``svrt_data`` exports at its top level stay there).
"""

from __future__ import annotations

import warnings

from svrt_data.loader.clip_geometry import IDENTITY, AxisScale, Dihedral, flip_packed_x, shift_packed, transpose_packed

warnings.warn(f"{__name__} is deprecated and will be removed in the next release; "
              "import from svrt_data.loader.clip_geometry instead", DeprecationWarning, stacklevel=2)

__all__ = [
    "AxisScale", "Dihedral", "IDENTITY", "flip_packed_x", "shift_packed", "transpose_packed",
]
