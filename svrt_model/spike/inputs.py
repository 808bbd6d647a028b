"""How spikes enter the model: the spike-input module of each ``VRTSpikeConfig.spike_input`` kind, and the
reduction of voxel bins to the few extra input channels of early fusion.

A spike-input module takes what the data loader delivers and returns voxels ``(B, T, K, Hs, Ws)`` in a
floating dtype; everything after it (encoder, early fusion) sees only voxels. ``"voxels"`` passes
precomputed voxels through; other kinds (e.g. a learnable accumulator over raw spike bits) plug in
here through :func:`build_spike_input`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svrt_model.errors import ModelConfigError, ModelInputError

__all__ = ["VoxelInput", "build_spike_input", "early_spike_channels"]


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


def build_spike_input(kind: str, bins: int) -> nn.Module:
    """The spike-input module of ``VRTSpikeConfig.spike_input`` (see the module docstring)."""
    if kind == "voxels":
        return VoxelInput(bins)
    else:
        raise ModelConfigError(f"spike_input={kind!r} is not implemented; expected 'voxels'")


def early_spike_channels(voxels: torch.Tensor, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """Early fusion's extra input channels: ``(B, T, K, Hs, Ws)`` voxels to ``(B, T, channels, H, W)``.

    The K bins are split into ``channels`` equal groups of consecutive bins and each group is averaged:
    with one channel (seed ``004``'s 4-channel input) that is the mean spike count per bin over the
    exposure, proportional to the firing rate, i.e. an intensity image (texture from playback). The
    mean keeps the scale independent of K. Spikes of another size are resized bilinearly
    (``align_corners=False``) to the RGB size ``size = (H, W)``.
    """
    b, t, k, hs, ws = voxels.shape
    out = voxels.unflatten(2, (channels, k // channels)).mean(3)  # B T E Hs Ws
    if (hs, ws) != tuple(size):
        out = F.interpolate(out.flatten(0, 1), size=tuple(size), mode="bilinear", align_corners=False)
        out = out.unflatten(0, (b, t))
    return out
