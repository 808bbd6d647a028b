"""PNG previews: what a person would rather look at than numbers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["to_uint8", "save_png", "stream_preview"]


def to_uint8(image: np.ndarray, *, percentile: float = 99.5) -> np.ndarray:
    """Map a non-negative float image to uint8, stretching its ``percentile`` to white.

    Firing rates are small numbers (0.02-0.3 typically); stretching to a high percentile instead of the
    maximum keeps a few hot pixels from turning the rest black.
    """
    img = np.asarray(image, dtype=np.float64)
    top = float(np.percentile(img, percentile)) if img.size else 0.0
    if top <= 0:
        top = float(img.max()) if img.size and img.max() > 0 else 1.0
    return np.clip(np.round(img / top * 255.0), 0, 255).astype(np.uint8)


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 ``(H, W)`` or ``(H, W, 3)`` image as PNG, creating folders as needed."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path)
    return path


def stream_preview(stream, path: str | os.PathLike, *, start: int | None = None, stop: int | None = None) -> Path:
    """Save the time-averaged (upright) frames [start, stop) of a spike stream as a contrast-stretched PNG."""
    return save_png(to_uint8(stream.mean_image(start, stop)), path)
