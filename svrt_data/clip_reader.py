"""Deprecated import path of the store scan and the clip reader: it moved to ``svrt_data.loader.clip_reader``,
``svrt_data.loader.store_scan``.

This module only re-exports those names, for one release, and warns when imported: import from
``svrt_data.loader`` instead (the names ``svrt_data`` exports at its top level stay there).
"""

from __future__ import annotations

import warnings

from svrt_data.loader.clip_reader import ClipReader
from svrt_data.loader.store_scan import READERS, SPIKE_INPUTS, SequenceInfo, scan_store

warnings.warn(f"{__name__} is deprecated and will be removed in the next release; "
              "import from svrt_data.loader instead", DeprecationWarning, stacklevel=2)

__all__ = [
    "ClipReader", "READERS", "SPIKE_INPUTS", "SequenceInfo", "scan_store",
]
