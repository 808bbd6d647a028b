"""Training data from a store, as a run configures it: dataset, spike normalisation, transform and loader.

The loader follows the recipe of :func:`svrt_data.loader.recipe.make_loader` (``collate_clips``, ``worker_init``
with recycled shared buffers, persistent workers, pinned memory on CUDA); its sampler is
:class:`ResumableSampler`, an endless stream of the epochs of a :class:`~svrt_data.loader.sampler.ClipSampler`
that can start part-way: a run counted in optimizer steps never drains the workers at an epoch boundary,
and a resumed run continues with exactly the clip the interrupted one would have drawn next.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from itertools import count

import torch
from torch.utils.data import DataLoader, Sampler

from svrt_data import SpikeDeblurDataset, SpikeTransform
from svrt_data.loader import ClipKey, ClipSampler, collate_clips, worker_init
from svrt_data.loader.store_stats import store_voxel_stats
from svrt_model.train.config import RunConfig
from svrt_model.vrt_spike_config import BIT_INPUTS

__all__ = ["ResumableSampler", "build_dataset", "build_loader", "build_transform", "resolve_spike_stats"]

_DTYPES = {"fp32": torch.float32, "bf16": torch.float32, "fp16": torch.float32, "fp64": torch.float64}
"""Input dtype per precision: autocast lowers float32 inputs itself; fp64 runs the whole model in float64."""


class ResumableSampler(Sampler[ClipKey]):
    """Epochs ``0, 1, 2, ...`` of ``sampler`` back to back, without end, skipping the first ``start`` keys.

    ``start`` counts keys this rank already consumed, so ``ResumableSampler(s, start=n)`` yields exactly
    what an uninterrupted stream yields from its ``n``-th key on.
    """

    def __init__(self, sampler: ClipSampler, *, start: int = 0) -> None:
        self.sampler = sampler
        self.start = int(start)
        self.per_epoch = len(sampler)

    def __iter__(self) -> Iterator[ClipKey]:
        first_epoch, skip = divmod(self.start, self.per_epoch)
        for epoch in count(first_epoch):
            self.sampler.set_epoch(epoch)
            keys = iter(self.sampler)
            if epoch == first_epoch:
                for _ in range(skip):
                    next(keys)
            yield from keys


def build_dataset(cfg: RunConfig, store: str | os.PathLike) -> SpikeDeblurDataset:
    """The training split's clips (random crops and augmentation, seeded by ``data.seed``)."""
    d = cfg.data
    return SpikeDeblurDataset(
        store, d.train_split, clip_len=d.clip_len, stride=d.stride, crop=d.crop, spike_input=d.spike_input,
        augment=d.augment, mode="train", seed=d.seed, sharp=True, cache_bytes=d.cache_bytes,
    )


def resolve_spike_stats(cfg: RunConfig, store: str | os.PathLike) -> RunConfig:
    """``cfg`` with ``data.spike_mean`` / ``spike_std`` filled from the training split when normalisation is on
    and they are unset (per bin, after ``log1p`` when on; deterministic in ``data.seed``)."""
    d = cfg.data
    if not d.normalize or d.spike_mean is not None or cfg.model.config.spike_input in BIT_INPUTS:
        return cfg  # a model fed bits normalises nothing: its voxels (accumulated, intervals) go to the encoder
    bins = cfg.model.config.spike_bins if d.spike_input == "raw" else None
    stats = store_voxel_stats(store, d.train_split, bins=bins, log1p=d.log1p, per_bin=True,
                              max_frames=d.stats_frames, seed=d.seed)
    return cfg.replace("data", spike_mean=tuple(float(v) for v in stats.mean),
                       spike_std=tuple(float(v) for v in stats.std))


def build_transform(cfg: RunConfig) -> SpikeTransform:
    """The batch transform a run trains (and is evaluated) with: RGB to [0, 1], ``log1p`` and the recorded
    spike normalisation. Call after :func:`resolve_spike_stats` (or on a checkpoint's config)."""
    d = cfg.data
    raw = d.spike_input == "raw"
    if cfg.model.config.spike_input in BIT_INPUTS:  # packed bits and bin ranges for the model's spike input
        return SpikeTransform(spike_input="raw", bins=cfg.model.config.spike_bins, raw_output="bits",
                              dtype=_DTYPES[cfg.train.precision])
    stats = {"mean": list(d.spike_mean), "std": list(d.spike_std)} if d.normalize and d.spike_mean else {}
    return SpikeTransform(spike_input=d.spike_input, bins=cfg.model.config.spike_bins if raw else None,
                          log1p=d.log1p, dtype=_DTYPES[cfg.train.precision], **stats)


def build_loader(cfg: RunConfig, dataset: SpikeDeblurDataset, *, start: int = 0, rank: int = 0,
                 world_size: int = 1, pin_memory: bool = False) -> DataLoader:
    """The endless training loader of one rank, starting after ``start`` consumed clips."""
    d = cfg.data
    sampler = ClipSampler(dataset, shuffle=True, seed=d.seed, num_replicas=world_size, rank=rank)
    prefetch = 4
    return DataLoader(
        dataset,
        batch_size=d.batch_size,
        sampler=ResumableSampler(sampler, start=start),
        num_workers=d.num_workers,
        collate_fn=collate_clips,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=False,
        prefetch_factor=prefetch if d.num_workers > 0 else None,
        worker_init_fn=functools.partial(worker_init, buffer_slots=prefetch + 2, track_buffers=not pin_memory),
        # its own generator: creating the iterator must not draw from the global RNG, which a resumed run
        # restores from the checkpoint (the clips themselves depend only on (seed, epoch, index))
        generator=torch.Generator().manual_seed(d.seed),
    )
