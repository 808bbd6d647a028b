"""Deprecated import path of the Dataset, sampler, collate, batch buffers, loader recipe and sequence assembly:
it moved to ``svrt_data.loader.dataset``, ``svrt_data.loader.sampler``, ``svrt_data.loader.collate``,
``svrt_data.loader.batch_buffers``, ``svrt_data.loader.recipe``, ``svrt_data.loader.assemble``.

This module only re-exports those names, for one release, and warns when imported: import from
``svrt_data.loader`` instead (the names ``svrt_data`` exports at its top level stay there).
"""

from __future__ import annotations

import warnings

from svrt_data.loader.assemble import SequenceAssembler
from svrt_data.loader.batch_buffers import RELEASE_KEY
from svrt_data.loader.collate import DEVICE_KEYS, collate_clips, move_batch
from svrt_data.loader.dataset import SpikeDeblurDataset
from svrt_data.loader.recipe import make_loader, worker_init
from svrt_data.loader.sampler import ClipKey, ClipSampler

warnings.warn(f"{__name__} is deprecated and will be removed in the next release; "
              "import from svrt_data.loader instead", DeprecationWarning, stacklevel=2)

__all__ = [
    "ClipKey", "ClipSampler", "DEVICE_KEYS", "RELEASE_KEY", "SequenceAssembler",
    "SpikeDeblurDataset", "collate_clips", "make_loader", "move_batch", "worker_init",
]
