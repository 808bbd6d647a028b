"""The recommended DataLoader for a :class:`~svrt_data.loader.dataset.SpikeDeblurDataset`: :func:`make_loader`.

The recipe: :class:`~svrt_data.loader.sampler.ClipSampler` (shuffled per epoch from the seed; DDP-aware),
the dataset's ``__getitems__`` reading each batch into one buffer per key (in shared memory inside
workers, :mod:`svrt_data.loader.batch_buffers`), :func:`~svrt_data.loader.collate.collate_clips` taking
those buffers without a copy, ``persistent_workers=True``, ``pin_memory=True`` when CUDA is present,
:func:`worker_init` (one thread per worker), then on the GPU side
:func:`~svrt_data.loader.collate.move_batch` with ``non_blocking=True`` and a
:class:`~svrt_data.loader.spike_transform.SpikeTransform`.
"""

from __future__ import annotations

import functools

import torch
from torch.utils.data import DataLoader

from svrt_data.loader.args import positive_int
from svrt_data.loader.batch_buffers import BufferRing
from svrt_data.loader.collate import collate_clips
from svrt_data.loader.dataset import SpikeDeblurDataset
from svrt_data.loader.sampler import ClipSampler

__all__ = ["make_loader", "worker_init"]


def worker_init(worker_id: int, *, buffer_slots: int = 0, track_buffers: bool = False) -> None:
    """Set up one DataLoader worker: one compute thread (the workers are the parallelism); with
    ``buffer_slots > 0`` the worker's dataset reuses that many shared-memory batch buffers, with
    ``track_buffers`` only once the main process has dropped them (see
    :class:`~svrt_data.loader.batch_buffers.BufferRing`; batches must then be collated by
    :func:`~svrt_data.loader.collate.collate_clips`, which sends them as ``RecycledBatch``).

    Process-wide, on purpose and not restored: it sets ``torch.set_num_threads(1)`` and numcodecs'
    ``blosc.use_threads = False`` for the whole process it runs in. It is meant for worker processes
    (``worker_init_fn``), whose whole life is this dataset; do not call it in the main process.
    """
    torch.set_num_threads(1)
    from numcodecs import blosc

    blosc.use_threads = False
    if buffer_slots:
        info = torch.utils.data.get_worker_info()
        if info is not None:
            info.dataset._buffer_ring = BufferRing(buffer_slots, track_buffers)


def make_loader(
    dataset: SpikeDeblurDataset,
    *,
    batch_size: int,
    num_workers: int = 4,
    shuffle: bool | None = None,
    drop_last: bool | None = None,
    pin_memory: bool | None = None,
    persistent_workers: bool | None = None,
    prefetch_factor: int | None = 4,
    multiprocessing_context: str | None = None,
    num_replicas: int = 1,
    rank: int = 0,
    epochs: int = 1,
    reuse_buffers: bool | None = None,
) -> DataLoader:
    """The recommended DataLoader (module docstring). Call ``loader.sampler.set_epoch(epoch)`` before
    each epoch (with ``epochs=E`` one pass covers E epochs); ``shuffle``/``drop_last`` default to True in
    training and False in evaluation; ``pin_memory`` to whether CUDA is available; ``persistent_workers``
    to ``num_workers > 0``.

    ``reuse_buffers`` (default on): workers recycle ``prefetch_factor + 2`` shared-memory batch buffers
    instead of faulting in fresh shared memory for every batch, and batches reach the loop without a
    copy (the gain is measured in ``benchmarks/RESULTS.md``, Loader). A buffer is reused only once the
    loop has dropped every tensor of its batch (or, with ``pin_memory``, once the pinned copy was made),
    so keeping batches is safe: while all buffers are held, workers fall back to fresh shared memory.
    Batches the DataLoader itself discards (the prefetched rest of an abandoned epoch) release theirs too."""
    train = dataset.mode == "train"
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    reuse = True if reuse_buffers is None else bool(reuse_buffers)
    sampler = ClipSampler(dataset, shuffle=train if shuffle is None else shuffle, seed=dataset.seed,
                          num_replicas=num_replicas, rank=rank, epochs=epochs)
    workers = int(num_workers)
    return DataLoader(
        dataset,
        batch_size=positive_int("batch_size", batch_size),
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_clips,
        pin_memory=pin,
        drop_last=train if drop_last is None else drop_last,
        persistent_workers=(workers > 0) if persistent_workers is None else (persistent_workers and workers > 0),
        prefetch_factor=prefetch_factor if workers > 0 else None,
        worker_init_fn=functools.partial(worker_init, buffer_slots=(prefetch_factor or 2) + 2 if reuse else 0,
                                         track_buffers=not pin),
        multiprocessing_context=multiprocessing_context if workers > 0 else None,
    )
