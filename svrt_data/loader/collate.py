"""Batching clips (:func:`collate_clips`) and sending a batch's pixels to the device (:func:`move_batch`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from svrt_data.loader.batch_buffers import RELEASE_KEY, RecycledBatch
from svrt_errors import SvrtValueError

__all__ = ["DEVICE_KEYS", "collate_clips", "move_batch"]

DEVICE_KEYS = ("blur", "sharp", "spikes", "spike_bits")  # what move_batch sends to the device


def _stacked_views(values: list[torch.Tensor]) -> torch.Tensor | None:
    """The batch tensor whose rows ``values`` are, in order, or None."""
    base = values[0]._base
    if base is None or base.dim() != values[0].dim() + 1 or base.shape[0] != len(values):
        return None
    for i, v in enumerate(values):
        if v._base is not base or v.data_ptr() != base[i].data_ptr() or v.shape != base.shape[1:]:
            return None
    return base


def collate_clips(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch items: tensors stacked on a new axis B (taken as is when the items are the rows of one
    ``__getitems__`` buffer), ints as int64 tensors, strings as lists."""
    if not items:
        raise SvrtValueError("collate_clips: no items to batch")
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if key == RELEASE_KEY:  # one flag for the whole batch: sent as a RecycledBatch (below)
            out[key] = values[0]
            continue
        if isinstance(values[0], torch.Tensor):
            base = _stacked_views(values)
            out[key] = base if base is not None else torch.stack(values)
        elif isinstance(values[0], (int, np.integer)):
            out[key] = torch.tensor(values, dtype=torch.int64)
        else:
            out[key] = list(values)
    return RecycledBatch(out) if RELEASE_KEY in out else out


def move_batch(batch: dict[str, Any], device: str | torch.device, *, non_blocking: bool = True) -> dict[str, Any]:
    """Send the pixel tensors (``blur``, ``sharp``, ``spikes``, ``spike_bits``) to ``device``; everything
    else (windows, indices, names) stays on the host, where the re-binning plan is computed."""
    return {k: (v.to(device, non_blocking=non_blocking) if k in DEVICE_KEYS else v) for k, v in batch.items()}
