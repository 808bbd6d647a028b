"""Numeric precision of a forward pass, by name: one context manager shared by profiling and restoration."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from svrt_model.errors import ModelConfigError

__all__ = ["PRECISIONS", "precision_context"]

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
"""fp32: float32 with PyTorch's default math (no TF32 matmuls); tf32: float32 with TF32 matmuls;
bf16 / fp16: float32 weights under ``torch.autocast``."""


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device | str) -> Iterator[None]:
    """Run the body in ``precision`` on ``device``'s type. TF32 is a process-wide switch: it is set for the
    body and restored afterwards (not thread-safe against other threads changing it meanwhile)."""
    if precision not in PRECISIONS:
        raise ModelConfigError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    dev = torch.device(device)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        if precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            with torch.autocast(device_type=dev.type, dtype=dtype):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
