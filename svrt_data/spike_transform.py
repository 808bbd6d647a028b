"""Deprecated import path of the batch transform: it moved to ``svrt_data.loader.spike_transform``.

This module only re-exports those names, for one release, and warns when imported: import from
``svrt_data.loader.spike_transform`` instead (the names ``svrt_data`` exports at its top level stay there).
"""

from __future__ import annotations

import warnings

from svrt_data.loader.spike_transform import SpikeTransform

warnings.warn(f"{__name__} is deprecated and will be removed in the next release; "
              "import from svrt_data.loader.spike_transform instead", DeprecationWarning, stacklevel=2)

__all__ = [
    "SpikeTransform",
]
