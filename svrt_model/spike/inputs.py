"""How spikes enter the model: the spike-input module of each ``VRTSpikeConfig.spike_input`` kind, and the
reduction of voxel bins to the few extra input channels of early fusion.

A spike-input module takes what the data loader delivers and returns voxels ``(B, T, K, Hs, Ws)`` in a
floating dtype; everything after it (encoder, early fusion) sees only voxels. ``"voxels"`` passes
precomputed voxels through; ``"raw"`` accumulates the loader's packed bits with a learnable decay per bin
(:class:`RawSpikeInput` around :class:`~svrt_model.spike.accumulator.SpikeAccumulator`), reading a
:class:`RawSpikes`; ``"intervals"`` reads the same bits as inter-spike-interval voxels
(:class:`IntervalSpikeInput`). :func:`build_spike_input` picks the module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kernels.resample import resize
from kernels.spike_intervals import spike_intervals
from svrt_model.errors import ModelConfigError, ModelInputError
from svrt_model.spike.accumulator import SpikeAccumulator

__all__ = ["RESIZES", "IntervalSpikeInput", "RawSpikeInput", "RawSpikes", "VoxelInput", "build_spike_input",
           "early_spike_channels", "model_spikes", "resize_frames"]

RESIZES = ("bilinear", "upfirdn2d")
"""How spike features are resized to an RGB size: ``bilinear`` (``F.interpolate``, ``align_corners=False``,
as the original S-VRT) or ``upfirdn2d`` (:func:`kernels.resample.resize`: anti-aliased 2x FIR steps, then
bilinear for the remaining factor below 2)."""


def resize_frames(frames: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize ``(N, C, h, w)`` to ``(N, C, H, W)`` by one of :data:`RESIZES`."""
    if mode == "bilinear":
        return F.interpolate(frames, size=tuple(size), mode="bilinear", align_corners=False)
    elif mode == "upfirdn2d":
        return resize(frames, tuple(size))
    else:
        raise ModelConfigError(f"spike resize {mode!r} is unknown; expected one of {RESIZES}")


@dataclass(frozen=True)
class RawSpikes:
    """The input of ``VRTSpike(spike_input="raw")``: packed spike bits and the bins' frame ranges, as
    ``SpikeTransform(spike_input="raw", bins=K, raw_output="bits")`` leaves them in a batch.

    Args:
        bits: ``uint8 (B, S, Hs, Ws/8)`` packed spike frames (the batch's ``spike_bits``).
        ranges: ``int64 (B, T, K, 2)``: bin k of frame t of clip b holds frames ``[r0, r1)`` of ``bits[b]``
            (the batch's ``spike_bin_ranges``).
        width: ``Ws`` when it is not a multiple of 8 (the padding bits of each row's last byte are dropped).
    """

    bits: torch.Tensor
    ranges: torch.Tensor
    width: int | None = None

    @classmethod
    def from_batch(cls, batch: Mapping[str, Any]) -> RawSpikes:
        """Take ``spike_bits`` and ``spike_bin_ranges`` from a transformed batch."""
        missing = [k for k in ("spike_bits", "spike_bin_ranges") if k not in batch]
        if missing:
            raise ModelInputError(
                f"RawSpikes.from_batch: the batch has no {missing}; build the dataset with spike_input='raw' and "
                "transform it with SpikeTransform(spike_input='raw', bins=K, raw_output='bits')"
            )
        return cls(batch["spike_bits"], batch["spike_bin_ranges"])


def model_spikes(batch: Mapping[str, Any]) -> torch.Tensor | RawSpikes | None:
    """What ``VRTSpike`` takes from a transformed batch: :class:`RawSpikes` where the transform handed over
    bits (``raw_output="bits"``), else the voxels (None without spikes)."""
    return RawSpikes.from_batch(batch) if "spike_bin_ranges" in batch else batch.get("spikes")


class VoxelInput(nn.Module):
    """``spike_input="voxels"``: voxels as delivered (integer counts become float32); no parameters.

    Args:
        bins: K the model expects.
    """

    def __init__(self, bins: int) -> None:
        super().__init__()
        self.bins = bins

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        """``(B, T, K, Hs, Ws)`` voxels to the same shape, floating point."""
        if not isinstance(spikes, torch.Tensor) or spikes.ndim != 5:
            got = tuple(spikes.shape) if isinstance(spikes, torch.Tensor) else type(spikes).__name__
            raise ModelInputError(f"VRTSpike: expected spike voxels (B, T, K={self.bins}, Hs, Ws), got {got}")
        if spikes.shape[2] != self.bins:
            raise ModelInputError(
                f"VRTSpike: spike voxels have K={spikes.shape[2]} bins (shape {tuple(spikes.shape)}) but "
                f"VRTSpikeConfig.spike_bins={self.bins}; voxelize with {self.bins} bins or change spike_bins"
            )
        return spikes if spikes.is_floating_point() else spikes.float()


def _require_raw_spikes(spikes: object, kind: str) -> None:
    """Refuse anything but :class:`RawSpikes` for a model fed bits: a voxel tensor would bypass its spike
    input without a sound, so the message says how to build RawSpikes and which model takes voxels."""
    if not isinstance(spikes, RawSpikes):
        raise ModelInputError(
            f"VRTSpike(spike_input={kind!r}): expected RawSpikes(bits, ranges) (RawSpikes.from_batch(batch) of a "
            f"batch transformed by SpikeTransform(spike_input='raw', bins=K, raw_output='bits')), got "
            f"{type(spikes).__name__}; a model fed precomputed voxels needs spike_input='voxels'"
        )


class RawSpikeInput(VoxelInput):
    """``spike_input="raw"``: :class:`RawSpikes` accumulated by a learnable decay per bin (parameter
    ``accumulator.raw_gamma``); ``gamma = 1`` gives the count voxels ``"voxels"`` would have received.

    Only :class:`RawSpikes` are accepted: a voxel tensor would bypass the accumulator (and its learnable
    decays) without a sound, so it is refused with the fix in the message.

    Args:
        bins: K.
        init_gamma: the accumulator's initial decay in (0, 1].
    """

    def __init__(self, bins: int, init_gamma: float = 1.0) -> None:
        super().__init__(bins)
        self.accumulator = SpikeAccumulator(bins, init_gamma)

    def forward(self, spikes: RawSpikes) -> torch.Tensor:
        """:class:`RawSpikes` to voxels ``(B, T, K, Hs, Ws)``."""
        _require_raw_spikes(spikes, "raw")
        return self.accumulator(spikes.bits, spikes.ranges, width=spikes.width)


class IntervalSpikeInput(VoxelInput):
    """``spike_input="intervals"``: :class:`RawSpikes` read as inter-spike-interval voxels
    (:func:`kernels.spike_intervals.spike_intervals`): each bin holds the firing rate at its centre, from the
    span of the ``spikes_each_side`` spikes before and after it, times its length (the count scale of
    ``"voxels"``). No parameters.

    Args:
        bins: K.
        spikes_each_side: ``m >= 1``.
    """

    def __init__(self, bins: int, spikes_each_side: int = 2) -> None:
        super().__init__(bins)
        self.spikes_each_side = spikes_each_side
        # no parameters to follow: this empty buffer carries the model's dtype (model.double() for gradcheck)
        self.register_buffer("dtype_probe", torch.zeros(0), persistent=False)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, spikes_each_side={self.spikes_each_side}"

    def forward(self, spikes: RawSpikes) -> torch.Tensor:
        """:class:`RawSpikes` to voxels ``(B, T, K, Hs, Ws)`` in the module's dtype (float32 unless converted)."""
        _require_raw_spikes(spikes, "intervals")
        if spikes.ranges.dim() == 4 and spikes.ranges.shape[2] != self.bins:
            raise ModelInputError(
                f"VRTSpike(spike_input='intervals'): the ranges hold {spikes.ranges.shape[2]} bins per frame but "
                f"VRTSpikeConfig.spike_bins={self.bins}; build SpikeTransform with bins={self.bins}"
            )
        capturing = spikes.bits.is_cuda and torch.cuda.is_current_stream_capturing()  # no host sync in a capture
        return spike_intervals(spikes.bits, spikes.ranges, spikes_each_side=self.spikes_each_side,
                               width=spikes.width, dtype=self.dtype_probe.dtype, validate=not capturing)


def build_spike_input(kind: str, bins: int, *, init_gamma: float = 1.0, interval_spikes: int = 2) -> nn.Module:
    """The spike-input module of ``VRTSpikeConfig.spike_input`` (see the module docstring)."""
    if kind == "voxels":
        return VoxelInput(bins)
    elif kind == "raw":
        return RawSpikeInput(bins, init_gamma)
    elif kind == "intervals":
        return IntervalSpikeInput(bins, interval_spikes)
    else:
        raise ModelConfigError(f"spike_input={kind!r} is not implemented; expected 'voxels', 'raw' or 'intervals'")


def early_spike_channels(voxels: torch.Tensor, channels: int, size: tuple[int, int],
                         resize_mode: str = "bilinear") -> torch.Tensor:
    """Early fusion's extra input channels: ``(B, T, K, Hs, Ws)`` voxels to ``(B, T, channels, H, W)``.

    The K bins are split into ``channels`` equal groups of consecutive bins and each group is averaged:
    with one channel (seed ``004``'s 4-channel input) that is the mean spike count per bin over the
    exposure, proportional to the firing rate, i.e. an intensity image (texture from playback). The
    mean keeps the scale independent of K. Spikes of another size are resized to the RGB size
    ``size = (H, W)`` by ``resize_mode`` (:func:`resize_frames`; default bilinear, ``align_corners=False``).
    """
    b, t, k, hs, ws = voxels.shape
    out = voxels.unflatten(2, (channels, k // channels)).mean(3)  # B T E Hs Ws
    if (hs, ws) != tuple(size):
        out = resize_frames(out.flatten(0, 1), size, resize_mode).unflatten(0, (b, t))  # (B T) E H W -> B T E H W
    return out
