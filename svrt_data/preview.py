"""PNG previews: what a person would rather look at than numbers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from svrt_errors import SvrtValueError

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


SOFTWARE = "svrt"  # the PNG text chunk that marks a preview as svrt's (so a later preview may replace it)


def _svrt_png(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.format == "PNG" and im.info.get("Software") == SOFTWARE
    except (OSError, SyntaxError, ValueError):
        return False


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 ``(H, W)`` or ``(H, W, 3)`` image as PNG, atomically, creating folders as needed.

    An existing ``path`` is replaced only when it is a preview svrt wrote (its ``Software`` text chunk);
    anything else is refused.
    """
    from PIL import Image, PngImagePlugin

    path = Path(path)
    if (path.exists() or path.is_symlink()) and not _svrt_png(path):
        raise SvrtValueError(f"{path} exists and is not a preview svrt wrote; refusing to overwrite it. Choose "
                             "another --png path")
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", SOFTWARE)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(np.ascontiguousarray(image)).save(fh, format="PNG", pnginfo=info)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def stream_preview(stream, path: str | os.PathLike, *, start: int | None = None, stop: int | None = None) -> Path:
    """Save the time-averaged (upright) frames [start, stop) of a spike stream as a contrast-stretched PNG."""
    return save_png(to_uint8(stream.mean_image(start, stop)), path)
