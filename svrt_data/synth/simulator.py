"""The integrate-and-fire spike camera simulator.

Each pixel integrates the light falling on it, one spike frame at a time::

    acc += I_t;  if acc >= threshold: fire, acc -= threshold

with ``I_t`` the gray luminance in [0, 1] and the charge ``acc`` starting uniform in ``[0, threshold)``
(a camera that has been running for a while). With the subtractive reset the charge left over carries
into the next frame, so the expected firing rate is exactly ``I / threshold`` spikes per frame and no
light is lost between frames. The pixel fires at most once per frame, which is why the threshold must
be at least the brightest intensity, 1.

Optional sensor noise, both off by default:

- ``noise_std``: Gaussian noise added to each frame's intensity, per pixel, then clipped to [0, 1]
  (photon/readout noise, in intensity units);
- ``dark_rate``: the probability per pixel and frame of a spurious "dark" spike, OR-ed into the
  output without touching the charge (thermal events).
"""

from __future__ import annotations

import math

import numpy as np

from svrt_errors import SvrtValueError

__all__ = ["IntegrateAndFire", "integrate_and_fire"]


def integrate_and_fire(charge: np.ndarray, intensity: np.ndarray, threshold: float) -> np.ndarray:
    """Run the noiseless simulator over ``S`` frames, updating ``charge`` in place.

    Args:
        charge: float64 ``(H, W)``, the accumulated charge; updated in place.
        intensity: ``(S, H, W)`` intensities (at most ``threshold``).
        threshold: firing threshold (> 0).

    Returns:
        uint8 ``(S, H, W)`` spikes in {0, 1}.
    """
    spikes = np.empty(intensity.shape, np.uint8)
    for t in range(intensity.shape[0]):
        charge += intensity[t]
        fired = charge >= threshold
        charge -= threshold * fired
        spikes[t] = fired
    return spikes


class IntegrateAndFire:
    """A seeded spike sensor of ``height x width`` pixels whose charge persists across calls.

    Calling :meth:`run` on consecutive blocks of frames gives exactly the spikes of one call on their
    concatenation: the stream can be cut into per-frame files without a seam.

    Args:
        height, width: sensor size.
        threshold: firing threshold (>= 1, the brightest intensity).
        noise_std: standard deviation of Gaussian intensity noise (>= 0).
        dark_rate: probability of a dark spike per pixel and frame, in [0, 1].
        rng: randomness for the initial charge and the noise.
    """

    def __init__(self, height: int, width: int, *, threshold: float = 2.0, noise_std: float = 0.0,
                 dark_rate: float = 0.0, rng: np.random.Generator) -> None:
        if not (math.isfinite(threshold) and threshold >= 1.0):
            raise SvrtValueError(
                f"threshold must be >= 1 (the brightest intensity), got {threshold}: a pixel fires at most once "
                "per frame, so a lower threshold would saturate and let the charge grow without bound"
            )
        if not (math.isfinite(noise_std) and noise_std >= 0):
            raise SvrtValueError(f"noise_std must be a finite number >= 0, got {noise_std}")
        if not 0.0 <= dark_rate <= 1.0:
            raise SvrtValueError(f"dark_rate is a probability per pixel and frame, in [0, 1]; got {dark_rate}")
        if height <= 0 or width <= 0:
            raise SvrtValueError(f"sensor size must be positive, got {height}x{width}")
        self.threshold = float(threshold)
        self.noise_std = float(noise_std)
        self.dark_rate = float(dark_rate)
        self.rng = rng
        self.charge = rng.uniform(0.0, self.threshold, size=(height, width))

    @property
    def shape(self) -> tuple[int, int]:
        return self.charge.shape

    def run(self, intensity: np.ndarray) -> np.ndarray:
        """Spikes for the next ``S`` frames of luminance ``(S, H, W)`` in [0, 1]: uint8 ``(S, H, W)``."""
        intensity = np.asarray(intensity)
        if intensity.ndim != 3 or intensity.shape[1:] != self.shape:
            raise SvrtValueError(f"intensity must be (S, {self.shape[0]}, {self.shape[1]}), got {intensity.shape}")
        if intensity.size and not (intensity.min() >= 0.0 and intensity.max() <= 1.0):
            raise SvrtValueError(
                f"intensity must lie in [0, 1], got [{intensity.min()}, {intensity.max()}]; scale gray levels by 1/255"
            )
        light = intensity.astype(np.float64)
        if self.noise_std > 0:
            light = np.clip(light + self.rng.normal(0.0, self.noise_std, light.shape), 0.0, 1.0)
        spikes = integrate_and_fire(self.charge, light, self.threshold)
        if self.dark_rate > 0:
            spikes |= (self.rng.random(light.shape) < self.dark_rate).view(np.uint8)
        return spikes
