"""The svrt Zarr store: layout (one module), writer, reader, verification and HDF5 export."""

from __future__ import annotations

from svrt_data.store.layout import LAYOUT_VERSION
from svrt_data.store.reader import StoredSequence, SvrtStore, open_store
from svrt_data.store.verify import VerifyReport, verify_store

__all__ = ["LAYOUT_VERSION", "StoredSequence", "SvrtStore", "VerifyReport", "open_store", "verify_store"]
