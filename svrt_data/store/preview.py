"""A picture of one stored frame: blurry frame, time-averaged spikes of its window, and its voxel bins."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from svrt_data.preview import save_png, to_uint8
from svrt_data.spike_io import unpack_frames
from svrt_data.store.reader import StoredSequence

__all__ = ["sequence_preview"]


def _gray_rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=-1)


def sequence_preview(seq: StoredSequence, path: str | os.PathLike, *, frame: int | None = None,
                     max_bins: int = 16) -> Path:
    """Top row: the blurry frame (scaled to spike height) beside the time average of its spike window.
    Bottom rows: up to ``max_bins`` voxel bins as a strip (each bin stretched on the same scale)."""
    i = seq.n_frames // 2 if frame is None else frame
    if not 0 <= i < seq.n_frames:
        raise IndexError(f"{seq.key}: frame {i} out of range (0..{seq.n_frames - 1})")
    hs, ws = seq.spike_shape
    blur = Image.fromarray(np.asarray(seq.blur[i])).resize((ws, hs), Image.BILINEAR)
    t0, t1 = seq.windows[i]
    a, b = int(math.ceil(t0)), int(math.ceil(t1))
    spikes = unpack_frames(np.asarray(seq.spikes[a:b]), ws).mean(axis=0) if b > a else np.zeros((hs, ws))
    top = np.concatenate([np.asarray(blur), _gray_rgb(to_uint8(spikes))], axis=1)
    vox = np.asarray(seq.voxels[i], dtype=np.float32)
    k = vox.shape[0]
    pick = np.unique(np.linspace(0, k - 1, min(k, max_bins)).round().astype(int))
    scale = to_uint8(vox[pick])  # one stretch for all bins, so their brightness is comparable
    per_row = 2 * ws // (ws // 2)
    tiles = [np.asarray(Image.fromarray(t).resize((ws // 2, hs // 2), Image.NEAREST)) for t in scale]
    rows = []
    for r in range(0, len(tiles), per_row):
        row = tiles[r : r + per_row]
        row += [np.zeros_like(tiles[0])] * (per_row - len(row))
        rows.append(_gray_rgb(np.concatenate(row, axis=1)))
    return save_png(np.concatenate([top, *rows], axis=0), path)
