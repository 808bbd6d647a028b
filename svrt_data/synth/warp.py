"""Vectorised bilinear sampling of a canvas, and rendering of frames along a trajectory.

Sampling points are continuous coordinates (pixel ``(r, c)`` has its centre at ``(c + 0.5, r + 0.5)``,
see :mod:`svrt_data.synth.camera`). Points whose bilinear neighbours fall outside the canvas read it
through a border rule:

- ``"reflect"``: the canvas is mirrored about its edges, edge pixels repeated
  (``... 2 1 0 | 0 1 2 ... n-1 | n-1 n-2 ...``), so the image stays continuous across the border;
- ``"clamp"``: the nearest edge pixel.

The dataset builder sizes each canvas so that no frame ever needs the border (:func:`view_for`); the
rule only matters for callers that warp frames themselves (e.g. the flow check in the tests).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from svrt_data.synth.camera import View, pixel_centres
from svrt_data.synth.trajectory import CameraTrajectory
from svrt_errors import SvrtValueError

__all__ = ["BORDERS", "bilinear_sample", "render_exposure", "render_frames"]

BORDERS = ("reflect", "clamp")

# Pixels per chunk when rendering many frames: bounds the float64 coordinate temporaries (~40 B each).
_CHUNK_PIXELS = 1 << 16


def _border_index(i: np.ndarray, n: int, border: str) -> np.ndarray:
    """Map integer indices (any range) onto ``[0, n)`` with the border rule."""
    if border == "reflect":
        m = np.mod(i, 2 * n)
        return np.where(m < n, m, 2 * n - 1 - m)
    if border == "clamp":
        return np.clip(i, 0, n - 1)
    raise SvrtValueError(f"border must be one of {', '.join(BORDERS)}, got {border!r}")


def _planes(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` -> float32 ``(C, H, W)`` contiguous (one flat plane per channel)."""
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise SvrtValueError(f"bilinear_sample expects an (H, W) or (H, W, C) image, got shape {image.shape}")
    planes = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    return np.ascontiguousarray(planes, dtype=np.float32)


def _sample_planes(planes: np.ndarray, x: np.ndarray, y: np.ndarray, border: str) -> np.ndarray:
    """Bilinear samples of ``(C, H, W)`` planes at points of shape Q: float32 ``Q + (C,)``."""
    _, h, w = planes.shape
    flat = planes.reshape(planes.shape[0], h * w)
    u = np.asarray(x, np.float64) - 0.5
    v = np.asarray(y, np.float64) - 0.5
    u0, v0 = np.floor(u), np.floor(v)
    fu = (u - u0).astype(np.float32)
    fv = (v - v0).astype(np.float32)
    c0, r0 = u0.astype(np.int64), v0.astype(np.int64)
    inside = c0.size == 0 or (c0.min() >= 0 and c0.max() + 1 < w and r0.min() >= 0 and r0.max() + 1 < h)
    if inside:  # the common case: neighbours are offsets of one index, no border rule needed
        i00 = r0 * w + c0
        i01, i10, i11 = i00 + 1, i00 + w, i00 + (w + 1)
    else:
        c1, r1 = _border_index(c0 + 1, w, border), _border_index(r0 + 1, h, border) * w
        c0, r0 = _border_index(c0, w, border), _border_index(r0, h, border) * w
        i00, i01, i10, i11 = r0 + c0, r0 + c1, r1 + c0, r1 + c1
    out = np.empty((*fu.shape, flat.shape[0]), np.float32)
    # One channel at a time on flat planes: 1-D np.take and same-shape in-place arithmetic need no
    # temporaries broadcast over channels (gathering RGB rows and broadcasting the weights does).
    for ch, plane in enumerate(flat):
        a, top = np.take(plane, i00), np.take(plane, i01)
        top -= a
        top *= fu
        top += a
        a, bottom = np.take(plane, i10), np.take(plane, i11)
        bottom -= a
        bottom *= fu
        bottom += a
        bottom -= top
        bottom *= fv
        bottom += top
        out[..., ch] = bottom
    return out


def _check_border(border: str) -> None:
    if border not in BORDERS:
        raise SvrtValueError(f"border must be one of {', '.join(BORDERS)}, got {border!r}")


def bilinear_sample(image: np.ndarray, x: np.ndarray, y: np.ndarray, *, border: str = "reflect") -> np.ndarray:
    """Sample ``image`` at continuous points ``(x, y)``.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``, any real dtype (read as float32).
        x, y: point coordinates of one shape Q (x along columns).
        border: ``"reflect"`` or ``"clamp"`` (module docstring).

    Returns:
        float32 of shape ``Q`` or ``Q + (C,)``.
    """
    _check_border(border)
    out = _sample_planes(_planes(image), x, y, border)
    return out if np.ndim(image) == 3 else out[..., 0]


def _frame_chunks(canvas: np.ndarray, trajectory: CameraTrajectory, view: View, times: np.ndarray, scale: float,
                  canvas_scale: tuple[float, float], border: str) -> Iterator[np.ndarray]:
    """Rendered frames ``(t, h, w, C)`` over ``times``, a few at a time."""
    _check_border(border)
    planes = _planes(canvas)  # once per call: at full HD the canvas is tens of MB
    h, w = round(view.height * scale), round(view.width * scale)
    x, y = pixel_centres(h, w, scale)
    per_chunk = max(1, _CHUNK_PIXELS // (h * w))
    for a in range(0, len(times), per_chunk):
        px, py = view.to_canvas(trajectory.pose(times[a:a + per_chunk]), x, y)  # T H W each
        yield _sample_planes(planes, px * canvas_scale[1], py * canvas_scale[0], border)


def render_frames(
    canvas: np.ndarray,
    trajectory: CameraTrajectory,
    view: View,
    times: np.ndarray,
    *,
    scale: float = 1.0,
    canvas_scale: tuple[float, float] = (1.0, 1.0),
    border: str = "reflect",
) -> np.ndarray:
    """Frames seen along ``trajectory`` at ``times`` (source frames).

    Args:
        canvas: ``(Hc', Wc')`` or ``(Hc', Wc', C)``: the view's canvas, possibly resampled.
        trajectory, view: the camera motion and geometry (in RGB pixels).
        times: float ``(T,)``.
        scale: output pixels per RGB pixel (``1`` for RGB frames, the spike scale for spike frames);
            the output is ``round(scale * H) x round(scale * W)``.
        canvas_scale: ``(sy, sx)``: canvas pixels per view-canvas pixel, when ``canvas`` is a resampled
            copy of the view's canvas (e.g. the luminance canvas at spike resolution).
        border: see :func:`bilinear_sample`.

    Returns:
        float32 ``(T, h, w)`` or ``(T, h, w, C)``.
    """
    times = np.asarray(times, np.float64).reshape(-1)
    h, w = round(view.height * scale), round(view.width * scale)
    channels = np.shape(canvas)[2:]
    out = np.empty((len(times), h, w, *(channels or (1,))), np.float32)
    a = 0
    for part in _frame_chunks(canvas, trajectory, view, times, scale, canvas_scale, border):
        out[a:a + len(part)] = part
        a += len(part)
    return out if channels else out[..., 0]


def render_exposure(
    canvas: np.ndarray,
    trajectory: CameraTrajectory,
    view: View,
    times: np.ndarray,
    *,
    border: str = "reflect",
) -> np.ndarray:
    """The mean of the RGB frames at ``times``: float64 ``(H, W)`` or ``(H, W, C)``, without holding them all.

    Frames are summed in float64. A float32 frame has 24 significant bits, so summing up to 2^29 equal
    frames is exact and dividing gives the frame back: a static scene averages to exactly its frame.
    """
    times = np.asarray(times, np.float64).reshape(-1)
    if not len(times):
        raise SvrtValueError("an exposure needs at least one instant")
    channels = np.shape(canvas)[2:]
    total = np.zeros((view.height, view.width, *(channels or (1,))), np.float64)
    for part in _frame_chunks(canvas, trajectory, view, times, 1.0, (1.0, 1.0), border):
        total += part.sum(axis=0, dtype=np.float64)
    total /= len(times)
    return total if channels else total[..., 0]
