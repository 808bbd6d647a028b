"""Smooth random camera trajectories, continuous in time.

A trajectory gives the camera pose at any instant ``t`` (in *source frames*: source frame ``s`` spans
``[s, s + 1)``), so the renderer can sample it at any internal frame rate. Each of the four pose
components is a sum of a few sinusoids with random amplitudes, periods and phases:

- ``shift_x``, ``shift_y``: translation of the view on the canvas, in RGB pixels;
- ``angle``: rotation of the view, in radians (counter-clockwise in image coordinates);
- ``log_zoom``: natural log of the zoom factor (``> 0`` magnifies the scene).

Sums of sinusoids are infinitely smooth, have a closed-form bound (the sum of the amplitudes) that
sizes the canvas so the view never leaves it, and keep the motion bounded however long a sequence
is: the camera shakes and sways around a fixed point like a hand-held camera, instead of drifting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from svrt_errors import SvrtValueError

__all__ = ["COMPONENTS", "CameraTrajectory", "Pose", "random_trajectory", "static_trajectory"]

COMPONENTS = ("shift_x", "shift_y", "angle", "log_zoom")

# Motion scale at ``motion=1``, per component: total amplitude (sum over the sinusoids) and the range
# of periods in source frames. Translation is relative to the frame height so that the blur, in
# pixels, scales with the image (Spk-GoPro blurs span a few percent of the frame).
_SHIFT_AMPLITUDE = 0.06  # of the frame height
_ANGLE_AMPLITUDE = math.radians(1.5)
_ZOOM_AMPLITUDE = 0.03  # log-zoom, i.e. about +-3 %
_SHIFT_PERIODS = (16.0, 64.0)
_SLOW_PERIODS = (32.0, 128.0)


@dataclass(frozen=True)
class Pose:
    """Camera poses at one or more instants; each field has the shape of the times asked for."""

    shift_x: np.ndarray
    shift_y: np.ndarray
    angle: np.ndarray
    zoom: np.ndarray


@dataclass(frozen=True)
class CameraTrajectory:
    """Pose components as sums of sinusoids: ``c(t) = sum_m a_m sin(2 pi t / P_m + phi_m)``.

    Args:
        amplitude: per component (``COMPONENTS`` order) the amplitudes ``a_m``.
        period: per component the periods ``P_m`` in source frames (> 0).
        phase: per component the phases ``phi_m`` in radians.
    """

    amplitude: tuple[tuple[float, ...], ...]
    period: tuple[tuple[float, ...], ...]
    phase: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        for name in ("amplitude", "period", "phase"):
            value = getattr(self, name)
            if len(value) != len(COMPONENTS):
                raise SvrtValueError(f"CameraTrajectory.{name}: expected {len(COMPONENTS)} components "
                                     f"({', '.join(COMPONENTS)}), got {len(value)}")
        for c, (a, p, f) in enumerate(zip(self.amplitude, self.period, self.phase, strict=True)):
            if not len(a) == len(p) == len(f):
                raise SvrtValueError(f"CameraTrajectory component {COMPONENTS[c]}: amplitude, period and phase "
                                     f"need one value per sinusoid, got {len(a)}, {len(p)}, {len(f)}")
            if any(not x > 0 for x in p):
                raise SvrtValueError(f"CameraTrajectory component {COMPONENTS[c]}: periods must be > 0, got {p}")

    def component(self, index: int, t: np.ndarray) -> np.ndarray:
        """One pose component at times ``t`` (any shape), float64."""
        t = np.asarray(t, dtype=np.float64)
        out = np.zeros(t.shape, np.float64)
        for a, p, f in zip(self.amplitude[index], self.period[index], self.phase[index], strict=True):
            out += a * np.sin(2.0 * math.pi * t / p + f)
        return out

    def pose(self, t: float | np.ndarray) -> Pose:
        """The pose at times ``t`` (source frames; scalar or array)."""
        sx, sy, angle, log_zoom = (self.component(i, t) for i in range(len(COMPONENTS)))
        return Pose(sx, sy, angle, np.exp(log_zoom))

    def bound(self, index: int) -> float:
        """An upper bound of ``|component(index, t)|`` over all ``t``: the sum of its amplitudes."""
        return float(sum(abs(a) for a in self.amplitude[index]))

    def to_dict(self) -> dict[str, dict[str, list[float]]]:
        """JSON-ready parameters (recorded in ``synth.json``)."""
        return {
            name: {"amplitude": list(self.amplitude[i]), "period": list(self.period[i]), "phase": list(self.phase[i])}
            for i, name in enumerate(COMPONENTS)
        }


def static_trajectory() -> CameraTrajectory:
    """A camera that never moves (every pose is the identity)."""
    empty: tuple[tuple[float, ...], ...] = tuple(() for _ in COMPONENTS)
    return CameraTrajectory(empty, empty, empty)


def random_trajectory(rng: np.random.Generator, *, height: int, motion: float = 1.0,
                      terms: int = 3) -> CameraTrajectory:
    """A random smooth trajectory for frames ``height`` pixels tall.

    Args:
        rng: the source of randomness (the trajectory is a pure function of its state).
        height: frame height in RGB pixels (translations scale with it).
        motion: multiplies every amplitude; 0 gives a static camera, 2 twice the default blur.
        terms: sinusoids per pose component.

    Each sequence also draws an overall strength in [0.4, 1] so that a dataset mixes mild and strong
    blur. At ``motion=1`` the translation speed never exceeds ``2 pi 0.06 / 16``, about 2.4 % of the
    height per source frame (at most ~21 px across a 7-frame exposure at 128 px height; typically a
    third of that).
    """
    if not motion >= 0 or not math.isfinite(motion):
        raise SvrtValueError(f"motion must be a finite number >= 0, got {motion}")
    if terms < 1:
        raise SvrtValueError(f"terms must be >= 1, got {terms}")
    strength = rng.uniform(0.4, 1.0) * motion
    totals = (_SHIFT_AMPLITUDE * height, _SHIFT_AMPLITUDE * height, _ANGLE_AMPLITUDE, _ZOOM_AMPLITUDE)
    periods = (_SHIFT_PERIODS, _SHIFT_PERIODS, _SLOW_PERIODS, _SLOW_PERIODS)
    amp, per, pha = [], [], []
    for total, (p_lo, p_hi) in zip(totals, periods, strict=True):
        weights = rng.uniform(0.2, 1.0, terms)
        amp.append(tuple(float(x) for x in total * strength * weights / weights.sum()))
        per.append(tuple(float(x) for x in rng.uniform(p_lo, p_hi, terms)))
        pha.append(tuple(float(x) for x in rng.uniform(0.0, 2.0 * math.pi, terms)))
    return CameraTrajectory(tuple(amp), tuple(per), tuple(pha))
