"""Batch buffers in shared memory: how a DataLoader worker hands a batch to the main process without a copy.

Inside a worker, :meth:`~svrt_data.loader.dataset.SpikeDeblurDataset.__getitems__` reads a whole batch
into one buffer per key (:func:`batch_buffer`), made in shared memory (:func:`empty_tensor`), so that
sending it to the main process moves only a handle. A :class:`BufferRing` (set up by
:func:`~svrt_data.loader.recipe.worker_init`) lets a worker reuse its buffers instead of faulting in
fresh shared memory for every batch (what that costs: ``benchmarks/RESULTS.md``, Loader), and
:class:`RecycledBatch` / :func:`release_when_dropped` tell the worker when the main process is done
with a buffer.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np
import torch

__all__ = ["RELEASE_KEY", "BufferRing", "RecycledBatch", "batch_buffer", "empty_tensor", "release_when_dropped",
           "torch_dtype"]

RELEASE_KEY = "_svrt_release"
"""Batch key of a recycled buffer's in-use flag, removed in the main process (see :class:`BufferRing`)."""


class BufferRing:
    """Batch buffers in shared memory that one worker reuses, so handing a batch to the main process
    does not fault in fresh shared memory each time.

    Each slot has an in-use flag in a small shared array, and ``take`` marks a free slot in use.
    Tracked (without ``pin_memory``): the batch carries a view of its flag (:data:`RELEASE_KEY`) and
    travels as a :class:`RecycledBatch`, which, unpickled in the main process, clears the flag once
    every shared tensor of the batch is gone (:func:`release_when_dropped`), however long the loop
    kept it, and also when the DataLoader itself discards the batch. When no slot is free the batch
    goes to fresh shared memory, so a buffer still in use is never rewritten.
    Untracked (with ``pin_memory``): round robin. A slot comes back after ``len(slots) - 1`` later
    batches of the worker; the pin-memory thread has copied its batch by then (the DataLoader gives a
    worker a new task only while processing a later batch, keeping ``prefetch_factor`` per worker
    outstanding; ``slots`` is ``prefetch_factor + 2``).
    """

    def __init__(self, slots: int, tracked: bool) -> None:
        self.slots: list[dict[str, torch.Tensor]] = [{} for _ in range(slots)]
        self.tracked = tracked
        self.in_use = empty_tensor((slots,), torch.int32, True).zero_()
        self.next = 0

    def take(self) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """``(slot, flag)``: a slot's buffers (an empty dict means fresh ones) and the flag to send."""
        n = len(self.slots)
        if not self.tracked:
            i, self.next = self.next, (self.next + 1) % n
            return self.slots[i], None
        flags = self.in_use.tolist()
        for step in range(n):
            i = (self.next + step) % n
            if flags[i] == 0:
                self.next = (i + 1) % n
                self.in_use[i] = 1
                return self.slots[i], self.in_use[i : i + 1]
        return {}, None  # every slot is still held by the main process: fresh buffers for this batch


class RecycledBatch(dict):
    """A batch in a worker's recycled buffers (with its in-use flag): unpickled in the main process it
    becomes a plain dict whose buffers are released once nothing uses them."""

    def __reduce__(self) -> tuple:
        return release_when_dropped, (dict(self),)


def release_when_dropped(batch: dict[str, Any]) -> dict[str, Any]:
    """Main-process side of :class:`BufferRing`: take the flag out of ``batch`` and clear it once the
    last shared tensor storage of the batch is freed (torch keeps a storage's Python object alive as
    long as any tensor, view or numpy array uses it, so its finalizer runs exactly then)."""
    flag = batch.pop(RELEASE_KEY, None)
    if flag is None:
        return batch
    storages = {}
    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.is_shared():
            st = v.untyped_storage()
            storages[st.data_ptr()] = st
    left = [len(storages)]

    def gone() -> None:
        left[0] -= 1
        if left[0] == 0:
            flag.zero_()

    for st in storages.values():
        weakref.finalize(st, gone)
    if not storages:
        flag.zero_()
    return batch


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    """The torch dtype of a NumPy dtype."""
    return torch.from_numpy(np.empty(0, dtype)).dtype


def empty_tensor(shape: tuple[int, ...], dtype: torch.dtype, shared: bool) -> torch.Tensor:
    """An uninitialised tensor; in shared memory when ``shared`` (so sending it from a worker copies nothing,
    as torch's own default_collate does)."""
    if not shared:
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    # set_ (not a view of a 1-D tensor): rows of the result must have it as their ``_base``, which is
    # how collate_clips recognises a batch buffer and hands it on without copying
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def batch_buffer(slot: dict[str, torch.Tensor], key: str, shape: tuple[int, ...], dtype: torch.dtype,
                 shared: bool) -> torch.Tensor:
    """The buffer for ``key`` of a batch: the ring slot's when it fits (and becomes the slot's otherwise)."""
    buf = slot.get(key)
    if buf is None or tuple(buf.shape) != shape or buf.dtype != dtype:
        buf = slot[key] = empty_tensor(shape, dtype, shared)
    return buf
