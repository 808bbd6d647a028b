"""Autocast helper: cast an activation once to the autocast dtype, where autocast would cast it anyway."""

from __future__ import annotations

import torch

__all__ = ["to_autocast_dtype"]


def to_autocast_dtype(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the active autocast dtype of its device (unchanged outside autocast).

    LayerNorm runs in float32 under autocast; casting its output once, before the padding, rolling and
    window copies, moves half the bytes and spares each following Linear its own cast of the same tensor.
    """
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return x.to(torch.get_autocast_dtype(dev))
    return x
