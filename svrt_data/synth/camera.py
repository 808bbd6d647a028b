"""The camera model: how a frame looks onto the canvas under a pose, and the exact optical flow.

Continuous coordinates put pixel ``(row r, column c)`` on the square ``[c, c + 1) x [r, r + 1)``, so
its centre is ``(x, y) = (c + 0.5, r + 0.5)``; ``x`` runs along columns, ``y`` down the rows. A frame
of ``H x W`` RGB pixels sees the canvas through a similarity transform around the two centres::

    p = centre_canvas + shift + R(angle) (x - centre_frame) / zoom

A spike frame at scale ``s`` (``Hs = s H``, ``Ws = s W``) looks through the same camera: spike pixel
``(i, j)`` sits at frame coordinates ``((j + 0.5) / s, (i + 0.5) / s)``. Because the transform is known
in closed form, so is the optical flow between two instants (:func:`true_flow`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from svrt_data.synth.trajectory import CameraTrajectory, Pose
from svrt_errors import SvrtValueError

__all__ = ["View", "pixel_centres", "true_flow", "view_for"]


def pixel_centres(height: int, width: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Frame coordinates ``(x, y)``, each float64 ``(height, width)``, of a pixel grid at ``scale``.

    ``scale`` is pixels of this grid per RGB pixel: 1 for the RGB frame, ``s`` for the spike frame.
    """
    xs = (np.arange(width, dtype=np.float64) + 0.5) / scale
    ys = (np.arange(height, dtype=np.float64) + 0.5) / scale
    y, x = np.meshgrid(ys, xs, indexing="ij")
    return x, y


def _expand(pose: Pose, ndim: int) -> tuple[np.ndarray, ...]:
    """Pose fields reshaped to broadcast against point arrays with ``ndim`` dimensions."""
    return tuple(np.asarray(f, np.float64).reshape(np.shape(f) + (1,) * ndim)
                 for f in (pose.shift_x, pose.shift_y, pose.angle, pose.zoom))


@dataclass(frozen=True)
class View:
    """A frame of ``height x width`` RGB pixels looking at a canvas of ``canvas_height x canvas_width``."""

    height: int
    width: int
    canvas_height: int
    canvas_width: int

    def to_canvas(self, pose: Pose, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canvas coordinates of frame points ``(x, y)`` (shape Q) under poses of shape P: shape ``P + Q``."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        sx, sy, angle, zoom = _expand(pose, x.ndim)
        c, s = np.cos(angle) / zoom, np.sin(angle) / zoom
        dx, dy = x - self.width / 2.0, y - self.height / 2.0
        px = self.canvas_width / 2.0 + sx + c * dx - s * dy
        py = self.canvas_height / 2.0 + sy + s * dx + c * dy
        return px, py

    def to_frame(self, pose: Pose, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The inverse of :meth:`to_canvas` (``px``, ``py`` of shape ``P + Q`` or Q)."""
        px, py = np.asarray(px, np.float64), np.asarray(py, np.float64)
        sx, sy, angle, zoom = _expand(pose, px.ndim - np.ndim(pose.angle))
        c, s = np.cos(angle) * zoom, np.sin(angle) * zoom
        qx = px - self.canvas_width / 2.0 - sx
        qy = py - self.canvas_height / 2.0 - sy
        x = self.width / 2.0 + c * qx + s * qy
        y = self.height / 2.0 - s * qx + c * qy
        return x, y


def view_for(trajectory: CameraTrajectory, height: int, width: int, *, pad: int = 2) -> View:
    """The smallest view whose canvas contains every pixel the frame can see along ``trajectory``.

    A frame point at offset ``d`` from the frame centre lands at ``shift + R d / zoom`` from the canvas
    centre; bounding ``|shift|``, ``|angle|`` and ``1 / zoom`` by the trajectory's amplitudes bounds
    that, and ``pad`` pixels more cover the bilinear neighbours. The border mode of the warp is then
    never used for frames of this trajectory (it stays a safety net).
    """
    if height <= 0 or width <= 0:
        raise SvrtValueError(f"frame size must be positive, got {height}x{width}")
    max_angle = min(trajectory.bound(2), math.pi / 2)
    inv_zoom = math.exp(trajectory.bound(3))
    half_w, half_h = width / 2.0, height / 2.0
    ext_x = trajectory.bound(0) + (half_w + half_h * math.sin(max_angle)) * inv_zoom
    ext_y = trajectory.bound(1) + (half_h + half_w * math.sin(max_angle)) * inv_zoom
    return View(height, width, 2 * (math.ceil(ext_y) + pad), 2 * (math.ceil(ext_x) + pad))


def true_flow(trajectory: CameraTrajectory, view: View, t_from: float, t_to: float) -> np.ndarray:
    """Optical flow from the frame at ``t_from`` to the frame at ``t_to``: float32 ``(H, W, 2)``.

    ``flow[r, c] = (dx, dy)`` (channel 0 along columns) says where the scene point seen at pixel centre
    ``(c + 0.5, r + 0.5)`` at ``t_from`` is seen at ``t_to``: ``frame_from(x) = frame_to(x + flow(x))``.
    Exact: the point is mapped onto the canvas with the first pose and back with the second.
    """
    x, y = pixel_centres(view.height, view.width)
    px, py = view.to_canvas(trajectory.pose(t_from), x, y)
    x2, y2 = view.to_frame(trajectory.pose(t_to), px, py)
    return np.stack([x2 - x, y2 - y], axis=-1).astype(np.float32)
