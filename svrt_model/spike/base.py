"""The spike luminance base (``VRTSpikeConfig.spike_base="intervals"``): the blurry frames' luminance, at the
spike resolution, replaced by the one the spikes' intervals read at each frame's centre.

For clip frame ``t`` with exposure ``[r0, r1)`` (its first bin's start to its last bin's end)::

    delta_t = up(gain * rate_t - down(Y_t))

``rate_t`` is the firing rate at the exposure's centre from the ``spikes_each_side`` spikes before and after
it (:func:`exposure_rates`: :func:`kernels.spike_intervals.interval_rates` on one bin spanning the exposure),
``gain`` the luminance of a pixel firing once per frame (the integrate-and-fire threshold: ``svrt_data.synth``'s
sensor fires at ``I / threshold`` per frame), ``Y_t`` the blurry frame's BT.601 luma, ``down`` area averaging to
the spike size and ``up`` bicubic resizing back (``align_corners=False``; nothing when the sizes agree). The model adds
``delta_t`` to all three channels of its output, so a backbone started as the identity (``train.init=
identity``) returns the blurry frames with the spikes' luminance, and the network learns what that reading
misses. ``train_quality``'s reference point ``intervals_2`` is the same estimate read from each frame's own
spike file; here the intervals may reach into the clip's neighbouring exposures.

The plain base has no parameters and passes no gradient to the model's other parts (its inputs are the blurry
frames and bits). One host synchronisation for the range check, except while a CUDA graph is recorded.

``spike_base="refined"`` corrects ``gain * rate_t`` first by a :class:`LumaRefiner`, a small CNN at the spike
size that reads the interval luminance for several ``m`` and ``down(Y_t)``: its parameters train with the model;
it starts at zero, so the refined base starts as the plain one. With ``refine_bins`` it also reads the interval
luminance at each of the K bins' centres (:func:`bin_rates`): where each pixel was bright across the exposure,
the motion context of the centre reading.

The chroma: by default the blurry frame's chroma stays (``delta_t`` goes to all three channels alike). With
``chroma_radius`` r > 0 (``VRTSpikeConfig.base_chroma="colorline"``) the new luminance also carries the colours
(:func:`colorline_chroma`): in each (2r+1)^2 window at the spike size the blurry frame's chroma offsets (RGB minus
luma) are fitted as an affine function of its luma, and that function is applied to the spikes' luminance.
Blur is linear, so where the sharp scene's colours lie on one line in a window (two colours and their mixtures:
most edges) the fit holds for the blurry frame too, and the sharp luminance gives back the sharp colours. It has
no parameters and learns nothing of the training scenes' colours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels.spike_intervals import interval_rates
from svrt_model.errors import ModelInputError
from svrt_model.spike.inputs import RawSpikes

__all__ = ["BT601_LUMA", "COLORLINE_EPS", "LumaRefiner", "SpikeLumaBase", "bin_rates", "colorline_chroma",
           "exposure_rates"]

BT601_LUMA = (0.299, 0.587, 0.114)
"""Luma weights of R, G, B (the synthetic sensor's, ``svrt_data.synth.photos.LUMA``)."""

COLORLINE_EPS = 1e-5
"""Regulariser of :func:`colorline_chroma`'s fit (luma variance, [0, 1] units): flat windows keep their mean chroma
offset. Measured on ``train_quality``'s test frames (``benchmarks/RESULTS.md``, session 14): 1e-7 to 1e-5 agree
within 0.02 dB, 1e-3 loses 0.4 dB."""


class LumaRefiner(nn.Module):
    """``spike_base="refined"``: a small per-frame CNN at the spike size that corrects the interval luminance
    from the interval luminances of several ``m`` and the blurry luma, ``(N, inputs, Hs, Ws) -> (N, 1, Hs, Ws)``:
    ``depth`` 3x3 convolutions of ``channels`` with ReLU between them. The last one starts at zero, so the
    refined base starts as the plain one.

    Why: one ``m`` trades the quantisation of short spans (bright pixels) against motion blur over long
    ones (dark pixels); which is best varies per pixel. The choice is local and physical (timing to
    intensity), so it transfers from training scenes to others, unlike what the backbone learns of their
    colours and textures. Measured: ``benchmarks/RESULTS.md``, training quality, session 12.
    """

    def __init__(self, inputs: int, channels: int = 48, depth: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Conv2d(inputs if i == 0 else channels, 1 if i == depth - 1 else channels, 3, padding=1))
            if i < depth - 1:
                layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SpikeLumaBase(nn.Module):
    """``delta = up(gain * rate - down(luma(rgb)))`` per frame (module docstring); with a
    :class:`LumaRefiner`, ``gain * rate`` is corrected by it first.

    Args:
        gain: luminance (in [0, 1] units) of one spike per frame, > 0.
        spikes_each_side: ``m >= 1`` of the interval estimate.
        rate_inputs: 0 (no refiner) or M, how many interval rates the refiner reads (the caller's ``rates``,
            the base's own ``m`` last); it also reads the blurry luma.
        refine_channels: the refiner's width.
        bin_inputs: 0, or K: the refiner also reads the caller's ``bins``, the interval rates at each of the
            K bins' centres (:func:`bin_rates`).
        chroma_radius: 0 (the blurry chroma stays: one delta for the three channels) or r >= 1: the colours
            follow the new luminance along the blurry frame's local colour lines (:func:`colorline_chroma`).
    """

    def __init__(self, gain: float, spikes_each_side: int = 2, rate_inputs: int = 0, refine_channels: int = 48,
                 bin_inputs: int = 0, chroma_radius: int = 0) -> None:
        super().__init__()
        if bin_inputs and not rate_inputs:
            raise ModelInputError("SpikeLumaBase: bin_inputs are read by the refiner; give rate_inputs too")
        self.gain = float(gain)
        self.spikes_each_side = spikes_each_side
        self.bin_inputs = bin_inputs
        if chroma_radius < 0:
            raise ModelInputError(f"SpikeLumaBase: chroma_radius must be >= 0, got {chroma_radius}")
        self.chroma_radius = chroma_radius
        self.refiner = LumaRefiner(rate_inputs + 1 + bin_inputs, refine_channels) if rate_inputs else None

    def extra_repr(self) -> str:
        return f"gain={self.gain}, spikes_each_side={self.spikes_each_side}, chroma_radius={self.chroma_radius}"

    def rate(self, spikes: RawSpikes, dtype: torch.dtype) -> torch.Tensor:
        """Firing rate (spikes per frame) at each frame's exposure centre: ``(B, T, 1, Hs, Ws)``."""
        return exposure_rates(spikes, (self.spikes_each_side,), dtype)

    def forward(self, rgb: torch.Tensor, spikes: RawSpikes, rates: torch.Tensor | None = None,
                bins: torch.Tensor | None = None) -> torch.Tensor:
        """``rgb (B, T, 3, H, W)`` in [0, 1] and its :class:`RawSpikes` to ``delta (B, T, C, H, W)``
        (float32, float64 for float64 frames; C = 1, one delta for all three channels, or 3 with
        ``chroma_radius``). ``rates``: ``(B, T, M, Hs, Ws)`` interval rates at each
        exposure centre with the base's ``m`` last (:func:`exposure_rates`), when the caller has them; a
        refiner needs all M of them. ``bins``: ``(B, T, K, Hs, Ws)`` (:func:`bin_rates`), for a refiner
        built with ``bin_inputs``."""
        b, t, _, h, w = rgb.shape
        dtype = torch.promote_types(rgb.dtype, torch.float32)
        if rates is None:
            if self.refiner is not None:
                raise ModelInputError("SpikeLumaBase: a refined base needs the caller's interval rates (rates=...)")
            rates = self.rate(spikes, dtype)
        if self.bin_inputs and (bins is None or bins.shape[2] != self.bin_inputs):
            got = "none" if bins is None else f"{bins.shape[2]}"
            raise ModelInputError(f"SpikeLumaBase: the refiner reads the interval rates at {self.bin_inputs} bin "
                                  f"centres (bins=...), got {got}")
        rates = rates.to(dtype).flatten(0, 1)  # (B T) M Hs Ws
        size = tuple(rates.shape[-2:])
        small = rgb.flatten(0, 1).to(dtype)  # (B T) 3 Hs Ws: the frames area-averaged to the spike size
        if size != (h, w):
            small = F.interpolate(small, size=size, mode="area")
        luma = _luma(small)
        estimate = self.gain * rates[:, -1:]
        if self.refiner is not None:
            inputs = [self.gain * rates, luma]
            if self.bin_inputs:
                inputs.append(self.gain * bins.to(dtype).flatten(0, 1))
            estimate = estimate + self.refiner(torch.cat(inputs, dim=1)).to(dtype)
        if self.chroma_radius:
            delta = colorline_chroma(small, estimate, self.chroma_radius) - small
        else:
            delta = estimate - luma
        if size != (h, w):
            delta = F.interpolate(delta, size=(h, w), mode="bicubic", align_corners=False)
        return delta.unflatten(0, (b, t))


def colorline_chroma(rgb: torch.Tensor, luma: torch.Tensor, radius: int, eps: float = COLORLINE_EPS) -> torch.Tensor:
    """Frames ``rgb (N, 3, H, W)`` recoloured for a new luminance ``luma (N, 1, H, W)`` along their local colour lines.

    In every ``(2 radius + 1)^2`` window (edge pixels replicated) the chroma offsets ``d = rgb - Y(rgb)`` are fitted
    as ``d = a Y + b`` (least squares, ``eps`` added to the luma variance); ``a`` and ``b`` are averaged over the
    windows that hold a pixel, as a guided filter does, and the result is ``luma + a luma + b``. Its BT.601 luma is
    ``luma`` (the offsets' luma is zero, so is that of every ``a`` and ``b``), up to rounding. Computed in float32
    or wider, autocast off.
    """
    dtype = torch.promote_types(torch.promote_types(rgb.dtype, luma.dtype), torch.float32)
    with torch.autocast(rgb.device.type, enabled=False):
        rgb, luma = rgb.to(dtype), luma.to(dtype)
        y = _luma(rgb)
        d = rgb - y

        def mean(x: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(F.pad(x, (radius,) * 4, mode="replicate"), 2 * radius + 1, stride=1)

        my, md = mean(y), mean(d)
        a = (mean(y * d) - my * md) / (mean(y * y) - my * my + eps)
        b = md - a * my
        return luma + mean(a) * luma + mean(b)


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    """BT.601 luma ``(N, 1, H, W)`` of ``(N, 3, H, W)``; Python-number weights, so no host-to-device copy is made
    inside a CUDA-graph capture."""
    red, green, blue = rgb.split(1, dim=1)
    return BT601_LUMA[0] * red + BT601_LUMA[1] * green + BT601_LUMA[2] * blue


def exposure_rates(spikes: RawSpikes, spikes_each_side: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Firing rates (spikes per frame) at each frame's exposure centre (its first bin's start to its last bin's
    end), one per ``m`` in ``spikes_each_side``, from one pass over the bits
    (:func:`kernels.spike_intervals.interval_rates`): ``(B, T, M, Hs, Ws)`` in ``dtype``. The intervals may
    reach into the clip's neighbouring exposures. One host synchronisation for the range check, except while
    a CUDA graph is recorded."""
    _check_raw("exposure_rates", spikes)
    ranges = spikes.ranges
    exposure = torch.stack([ranges[:, :, 0, 0], ranges[:, :, -1, 1]], dim=-1)[:, :, None]  # B T 1 2
    return _rates(spikes, exposure, tuple(spikes_each_side), dtype)[:, :, 0]


def bin_rates(spikes: RawSpikes, spikes_each_side: int, dtype: torch.dtype) -> torch.Tensor:
    """Firing rates (spikes per frame) at each of the K bins' centres of every frame, from ``spikes_each_side``
    spikes on each side: ``(B, T, K, Hs, Ws)`` in ``dtype``; the readings across each exposure. Host
    synchronisation as :func:`exposure_rates`."""
    _check_raw("bin_rates", spikes)
    return _rates(spikes, spikes.ranges, (spikes_each_side,), dtype)[:, :, :, 0]


def _check_raw(op: str, spikes: object) -> None:
    if not isinstance(spikes, RawSpikes):
        raise ModelInputError(f"{op}: expected RawSpikes(bits, ranges), got {type(spikes).__name__}; the "
                              "interval rates read packed bits (spike_input='raw' or 'intervals')")


def _rates(spikes: RawSpikes, ranges: torch.Tensor, ms: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    capturing = spikes.bits.is_cuda and torch.cuda.is_current_stream_capturing()  # no host sync in a capture
    return interval_rates(spikes.bits, ranges, ms, width=spikes.width, dtype=dtype, validate=not capturing)
