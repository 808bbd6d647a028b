"""The spike luminance base (``VRTSpikeConfig.spike_base="intervals"``): the blurry frames' luminance, at the
spike resolution, replaced by the one the spikes' intervals read at each frame's centre.

For clip frame ``t`` with exposure ``[r0, r1)`` (its first bin's start to its last bin's end)::

    delta_t = up(gain * rate_t - down(Y_t))

``rate_t`` is the firing rate at the exposure's centre from the ``spikes_each_side`` spikes before and after
it (:func:`kernels.spike_intervals.spike_intervals` on one bin spanning the exposure), ``gain`` the luminance
of a pixel firing once per frame (the integrate-and-fire threshold: ``svrt_data.synth``'s sensor fires at
``I / threshold`` per frame), ``Y_t`` the blurry frame's BT.601 luma, ``down`` area averaging to the spike
size and ``up`` bicubic resizing back (``align_corners=False``; nothing when the sizes agree). The model adds
``delta_t`` to all three channels of its output, so a backbone started as the identity (``train.init=
identity``) returns the blurry frames with the spikes' luminance, and the network learns what that reading
misses. ``train_quality``'s reference point ``intervals_2`` is the same estimate read from each frame's own
spike file; here the intervals may reach into the clip's neighbouring exposures.

No parameters and no gradient (the inputs are the blurry frames and bits). One host synchronisation for the
range check, except while a CUDA graph is recorded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels.spike_intervals import spike_intervals
from svrt_model.errors import ModelInputError
from svrt_model.spike.inputs import RawSpikes

__all__ = ["BT601_LUMA", "SpikeLumaBase"]

BT601_LUMA = (0.299, 0.587, 0.114)
"""Luma weights of R, G, B (the synthetic sensor's, ``svrt_data.synth.photos.LUMA``)."""


class SpikeLumaBase(nn.Module):
    """``delta = up(gain * rate - down(luma(rgb)))`` per frame (module docstring).

    Args:
        gain: luminance (in [0, 1] units) of one spike per frame, > 0.
        spikes_each_side: ``m >= 1`` of the interval estimate.
    """

    def __init__(self, gain: float, spikes_each_side: int = 2) -> None:
        super().__init__()
        self.gain = float(gain)
        self.spikes_each_side = spikes_each_side
        self.register_buffer("luma", torch.tensor(BT601_LUMA, dtype=torch.float64).view(1, 3, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        return f"gain={self.gain}, spikes_each_side={self.spikes_each_side}"

    def rate(self, spikes: RawSpikes, dtype: torch.dtype) -> torch.Tensor:
        """Firing rate (spikes per frame) at each frame's exposure centre: ``(B, T, 1, Hs, Ws)``."""
        if not isinstance(spikes, RawSpikes):
            raise ModelInputError(f"SpikeLumaBase: expected RawSpikes(bits, ranges), got {type(spikes).__name__}; "
                                  "spike_base='intervals' reads packed bits (spike_input='raw' or 'intervals')")
        ranges = spikes.ranges
        exposure = torch.stack([ranges[:, :, 0, 0], ranges[:, :, -1, 1]], dim=-1)[:, :, None]  # B T 1 2
        capturing = spikes.bits.is_cuda and torch.cuda.is_current_stream_capturing()  # no host sync in a capture
        per_exposure = spike_intervals(spikes.bits, exposure, spikes_each_side=self.spikes_each_side,
                                       width=spikes.width, dtype=dtype, validate=not capturing)
        length = (exposure[..., 1] - exposure[..., 0]).clamp(min=1).to(dtype)  # B T 1
        return per_exposure / length[..., None, None]

    def forward(self, rgb: torch.Tensor, spikes: RawSpikes) -> torch.Tensor:
        """``rgb (B, T, 3, H, W)`` in [0, 1] and its :class:`RawSpikes` to ``delta (B, T, 1, H, W)``
        (float32, float64 for float64 frames)."""
        b, t, _, h, w = rgb.shape
        dtype = torch.promote_types(rgb.dtype, torch.float32)
        rate = self.rate(spikes, dtype).flatten(0, 1)  # (B T) 1 Hs Ws
        size = tuple(rate.shape[-2:])
        luma = (rgb.flatten(0, 1).to(dtype) * self.luma.to(dtype)).sum(1, keepdim=True)  # (B T) 1 H W
        if size != (h, w):
            luma = F.interpolate(luma, size=size, mode="area")
        delta = self.gain * rate - luma
        if size != (h, w):
            delta = F.interpolate(delta, size=(h, w), mode="bicubic", align_corners=False)
        return delta.unflatten(0, (b, t))
