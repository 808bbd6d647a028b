"""Deprecated import path of the clip plan: it moved to ``svrt_data.loader.clip_plan``.

This module only re-exports those names, for one release, and warns when imported: import from
``svrt_data.loader.clip_plan`` instead (the names ``svrt_data`` exports at its top level stay there).
``SequenceShape`` is the old name of ``ClipSource``.
"""

from __future__ import annotations

import warnings

from svrt_data.loader.clip_plan import AUGMENTS, ClipPlan, ClipSpec
from svrt_data.loader.clip_plan import ClipSource as SequenceShape

warnings.warn(f"{__name__} is deprecated and will be removed in the next release; "
              "import from svrt_data.loader.clip_plan instead", DeprecationWarning, stacklevel=2)

__all__ = [
    "AUGMENTS", "ClipPlan", "ClipSpec", "SequenceShape",
]
