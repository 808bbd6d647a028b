"""Autocast helpers: cast an activation once to the autocast dtype, where autocast would cast it anyway; leave
autocast on device types that support it."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast_disabled", "to_autocast_dtype"]


def to_autocast_dtype(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the active autocast dtype of its device (unchanged outside autocast).

    LayerNorm runs in float32 under autocast; casting its output once, before the padding, rolling and
    window copies, moves half the bytes and spares each following Linear its own cast of the same tensor.
    """
    dev = x.device.type
    if dev != "meta" and torch.is_autocast_enabled(dev):  # a string test: cheap to trace in compiled cores
        return x.to(torch.get_autocast_dtype(dev))
    return x


def autocast_disabled(device_type: str) -> contextlib.AbstractContextManager:
    """``torch.autocast(device_type, enabled=False)``, or nothing on device types without autocast (e.g.
    ``meta``, where the model runs to measure shapes and saved activations without computing)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()
