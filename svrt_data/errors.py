"""The error hierarchy, re-exported where users of ``svrt_data`` have always imported it.

It lives in :mod:`svrt_errors` (the bottom of the import order, so ``kernels`` can raise the same
classes); ``from svrt_data.errors import StoreError`` and ``from svrt_errors import StoreError`` name
the same class.
"""

from __future__ import annotations

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

__all__ = [
    "AlignLogError",
    "BackendUnavailableError",
    "GeometryError",
    "IncompleteSequenceError",
    "ManifestError",
    "SpikeFormatError",
    "StoreError",
    "StoreLayoutError",
    "SvrtError",
    "SvrtValueError",
    "WindowError",
]
