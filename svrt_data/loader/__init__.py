"""The training loader: clips of an svrt store as a torch Dataset, and everything that serves them.

One concept per module, in the order a clip travels:

===============================  =====================================================================
module                           concept
===============================  =====================================================================
:mod:`.store_scan`               the sequences a dataset reads, checked once (:func:`scan_store`)
:mod:`.clip_geometry`            the RGB/spike scale grid and the 8 flips/transpositions (packed bits too)
:mod:`.clip_plan`                which clips exist and every random choice of one (:class:`ClipPlan`)
:mod:`.clip_reader`              reading one clip into arrays (:class:`ClipReader`)
:mod:`.dataset`                  the torch Dataset (:class:`SpikeDeblurDataset`) and its item format
:mod:`.batch_buffers`            shared-memory batch buffers that workers hand over and reuse
:mod:`.collate`                  batching items, moving a batch's pixels to the device
:mod:`.sampler`                  epochs, shuffling and DDP ranks (:class:`ClipSampler`, :class:`ClipKey`)
:mod:`.recipe`                   the recommended DataLoader (:func:`make_loader`, :func:`worker_init`)
:mod:`.spike_transform`          uint8 batch -> model input on the device (:class:`SpikeTransform`)
:mod:`.transforms`               load-time voxel transforms on NumPy/CuPy/torch, :class:`VoxelStats`
:mod:`.store_stats`              voxel statistics of a store for normalisation (:func:`store_voxel_stats`)
:mod:`.assemble`                 evaluation outputs back into whole sequences (:class:`SequenceAssembler`)
===============================  =====================================================================

``import svrt_data.loader`` does not import torch: the names that need it load on first use.
"""

from __future__ import annotations

from svrt_data.loader.clip_geometry import IDENTITY, AxisScale, Dihedral
from svrt_data.loader.clip_plan import AUGMENTS, ClipPlan, ClipSource, ClipSpec
from svrt_data.loader.clip_reader import ClipReader
from svrt_data.loader.store_scan import READERS, SPIKE_INPUTS, SequenceInfo, scan_store
from svrt_data.loader.store_stats import store_voxel_stats
from svrt_data.loader.transforms import Compose, VoxelStats, compose, log1p, normalize, to_float, voxel_transform

_TORCH_NAMES = ("ClipKey", "ClipSampler", "SequenceAssembler", "SpikeDeblurDataset", "SpikeTransform",
                "collate_clips", "make_loader", "move_batch", "worker_init")


def __getattr__(name: str) -> object:
    """The names that need torch, imported on first use (PEP 562)."""
    if name not in _TORCH_NAMES:
        raise AttributeError(f"module 'svrt_data.loader' has no attribute {name!r}")
    from svrt_data.loader import assemble, collate, dataset, recipe, sampler, spike_transform

    for module in (assemble, collate, dataset, recipe, sampler, spike_transform):
        if name in module.__all__:
            value = getattr(module, name)
            globals()[name] = value
            return value
    raise AttributeError(f"module 'svrt_data.loader' has no attribute {name!r}")


__all__ = [
    "AUGMENTS",
    "IDENTITY",
    "READERS",
    "SPIKE_INPUTS",
    "AxisScale",
    "ClipKey",
    "ClipPlan",
    "ClipReader",
    "ClipSampler",
    "ClipSource",
    "ClipSpec",
    "Compose",
    "Dihedral",
    "SequenceAssembler",
    "SequenceInfo",
    "SpikeDeblurDataset",
    "SpikeTransform",
    "VoxelStats",
    "collate_clips",
    "compose",
    "log1p",
    "make_loader",
    "move_batch",
    "normalize",
    "scan_store",
    "store_voxel_stats",
    "to_float",
    "voxel_transform",
    "worker_init",
]
