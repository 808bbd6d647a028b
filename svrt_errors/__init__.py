"""The error hierarchy shared by every svrt package (a dependency-free module at the bottom of the import order).

Every error a user can cause derives from :class:`SvrtError`. Errors about malformed input (files,
geometries, align logs, windows, store layouts) also derive from :class:`ValueError`, so callers that
only know the standard library can still catch them. Messages say what was wrong, where, what was
expected and got, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "SvrtError",
    "SvrtValueError",
    "SpikeFormatError",
    "GeometryError",
    "AlignLogError",
    "WindowError",
    "StoreError",
    "StoreLayoutError",
    "IncompleteSequenceError",
    "BackendUnavailableError",
    "ManifestError",
]


class SvrtError(Exception):
    """Base class of every error svrt raises on purpose."""


class SvrtValueError(SvrtError, ValueError):
    """Malformed input: a value, file or layout that does not follow the documented contract."""


class SpikeFormatError(SvrtValueError):
    """A spike stream file (.dat, HDF5) does not match its declared geometry or format."""


class GeometryError(SvrtValueError):
    """A sensor geometry is invalid, unknown or ambiguous."""


class AlignLogError(SvrtValueError):
    """An align log cannot be parsed or does not agree with the spike streams it describes."""


class WindowError(SvrtValueError):
    """A spike window [t0, t1) is empty, reversed or outside its stream."""


class ManifestError(SvrtValueError):
    """A dataset manifest is malformed or does not match the raw dataset."""


class StoreError(SvrtError):
    """A Zarr store cannot be read or written as asked."""


class StoreLayoutError(StoreError, ValueError):
    """A store was written with another layout version or is missing arrays/attributes."""


class IncompleteSequenceError(StoreError):
    """A sequence in a store has no completion marker (its writer was interrupted)."""


class BackendUnavailableError(SvrtError, RuntimeError):
    """A compute backend (numba, cupy, CUDA) was requested but is not installed or has no device."""
