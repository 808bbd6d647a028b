"""Voxel statistics of a store, for mean/std normalisation at load time (never stored in the store).

:func:`store_voxel_stats` feeds a deterministic sample of whole frames of one split into
:class:`~svrt_data.loader.transforms.VoxelStats`: the stored voxels, or, for another K (raw input re-binned on
the GPU), the stored spikes voxelized at that K on the host. With ``log1p`` the statistics describe
``log1p(voxels)``, as :class:`~svrt_data.loader.spike_transform.SpikeTransform` normalises after ``log1p``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from svrt_data.loader.store_scan import scan_store
from svrt_data.loader.transforms import VoxelStats
from svrt_data.loader.transforms import log1p as log1p_fn
from svrt_data.store.fast_reader import ShardedArrayReader
from svrt_errors import SvrtValueError

__all__ = ["store_voxel_stats"]


def store_voxel_stats(
    store: str | os.PathLike,
    split: str,
    *,
    bins: int | None = None,
    bin_mode: Literal["count", "linear"] = "count",
    log1p: bool = True,
    per_bin: bool = True,
    max_frames: int = 64,
    seed: int = 0,
    sequences: Sequence[str] | None = None,
    progress: bool = False,
) -> VoxelStats:
    """Mean and std of (``log1p`` of) the voxels of up to ``max_frames`` frames of ``split``.

    Args:
        bins: None uses the stored voxels; an int K voxelizes the stored spikes with K bins (``bin_mode``).
        per_bin: one mean/std per bin (``(K,)``) or one for everything.
        max_frames: frames sampled without replacement, uniformly over the split (all if fewer).
        seed: which frames are sampled.
    """
    if isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer)) or max_frames < 1:
        raise SvrtValueError(f"store_voxel_stats: max_frames must be a positive integer, got {max_frames!r}")
    raw = bins is not None
    infos, _ = scan_store(store, split, sequences=sequences, spike_input="raw" if raw else "voxels", sharp=False)
    frames = [(i, f) for i, info in enumerate(infos) for f in range(info.n_frames)]
    pick = np.random.default_rng(seed).choice(len(frames), size=min(max_frames, len(frames)), replace=False)
    stats = VoxelStats(per_bin=per_bin)
    readers: dict[int, ShardedArrayReader] = {}
    for j in tqdm(np.sort(pick), desc="voxel stats", unit="frame", disable=not progress):
        i, f = frames[j]
        info = infos[i]
        name = "spikes" if raw else "voxels"
        r = readers.setdefault(i, ShardedArrayReader(info.arrays[name]))
        if raw:
            from svrt_data.voxelize import voxelize

            w = info.windows[f : f + 1]
            lo, hi = int(np.floor(w[0, 0])), int(np.ceil(w[0, 1]))
            packed = r.read([(lo, hi), (0, r.meta.shape[1]), (0, r.meta.shape[2])])
            v = voxelize(packed, w - lo, bins=bins, mode=bin_mode, width=info.spike_shape[1])
        else:
            v = r.read([(f, f + 1)] + [(0, n) for n in r.meta.shape[1:]])
        stats.update(log1p_fn(v) if log1p else v)
    for r in readers.values():
        r.close()
    return stats
