"""Synthetic spike-camera datasets: real photographs moved along smooth random camera trajectories.

One concept per module: :mod:`~svrt_data.synth.trajectory` (camera motion, continuous in time),
:mod:`~svrt_data.synth.camera` (frame-to-canvas geometry and exact optical flow),
:mod:`~svrt_data.synth.warp` (bilinear rendering), :mod:`~svrt_data.synth.simulator`
(integrate-and-fire sensor), :mod:`~svrt_data.synth.photos` (scenes), :mod:`~svrt_data.synth.files`
(atomic output) and :mod:`~svrt_data.synth.builder` (:func:`synthesize`). See docs/synthetic_data.md.
"""

from __future__ import annotations

from svrt_data.synth.builder import SUBFRAMES, SynthConfig, SynthResult, sequence_name, synthesize
from svrt_data.synth.camera import View, pixel_centres, true_flow, view_for
from svrt_data.synth.photos import BUNDLED_PHOTOS, Canvases, Photo, load_photos, luminance, make_canvases
from svrt_data.synth.simulator import IntegrateAndFire, integrate_and_fire
from svrt_data.synth.trajectory import CameraTrajectory, Pose, random_trajectory, static_trajectory
from svrt_data.synth.warp import bilinear_sample, render_exposure, render_frames

__all__ = [
    "BUNDLED_PHOTOS",
    "SUBFRAMES",
    "CameraTrajectory",
    "Canvases",
    "IntegrateAndFire",
    "Photo",
    "Pose",
    "SynthConfig",
    "SynthResult",
    "View",
    "bilinear_sample",
    "integrate_and_fire",
    "load_photos",
    "luminance",
    "make_canvases",
    "pixel_centres",
    "random_trajectory",
    "render_exposure",
    "render_frames",
    "sequence_name",
    "static_trajectory",
    "synthesize",
    "true_flow",
    "view_for",
]
