"""``SpikeEncoder3D``: the S-VRT spike encoder, a 3D-convolution residual pyramid (seed ``002``).

Spike voxels ``(B, T, K, Hs, Ws)`` become 4 feature scales ``(B, C_i, T_i, H_i, W_i)`` that line up
with VRT's encoder stages 1-4: ``Conv3d(K -> C0, 3, pad 1)`` + ReLU and 2 :class:`ResidualBlock3D`, then
3 x [``Conv3d(C_{i-1} -> C_i, 3, stride (t_s, s_s, s_s), pad 1)`` + ReLU, 2 :class:`ResidualBlock3D`]
(residual blocks after He et al., "Deep Residual Learning", CVPR 2016). Parameter names are the
original's (``in_proj``, ``res0``, ``downs.i``, ``residuals.i``).

Activations: ``"relu"`` (the original: the convolution adds its bias, then an in-place ReLU) or
``"fused_bias_act"`` (the convolution without its bias, then :func:`kernels.fused_bias_act.fused_bias_act`
adds the bias, the residual's sum included, and applies the ReLU in one pass); the same parameters and
numbers, up to the order of two additions (``VRTSpikeConfig.encoder_activation``; attribute ``activation``
of every convolution block, a run-time switch).

The convolutions run in channels-last-3d memory (``N, T, H, W, C``; cuDNN's fast layout on GPUs), so
every scale's ``(B, C, T, H, W)`` output is a permuted view of ``(B, T, H, W, C)`` memory: the layout
the temporal attention and VRT's features use, with no copy between them. On devices whose kernels
return contiguous outputs (the CPU in float64) the values are the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kernels.fused_bias_act import fused_bias_act
from svrt_model.errors import ModelConfigError, ModelInputError

__all__ = ["ACTIVATIONS", "ResidualBlock3D", "SpikeEncoder3D", "conv_relu"]

ACTIVATIONS = ("relu", "fused_bias_act")


def conv_relu(conv: nn.Conv3d, x: torch.Tensor, activation: str, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``relu(conv(x) [+ residual])`` with the bias and ReLU as ``activation`` says (module docstring)."""
    if activation == "relu":
        y = conv(x)
        return torch.relu_(y if residual is None else y + residual)
    elif activation == "fused_bias_act":
        y = F.conv3d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        if residual is not None:
            y = y + residual
        if y.is_contiguous(memory_format=torch.channels_last_3d) and not y.is_contiguous():
            # the bias runs along C, the last dimension of channels-last memory: no copy, layout kept
            out = fused_bias_act(y.permute(0, 2, 3, 4, 1), conv.bias, act="relu", dim=-1)  # B T H W C
            return out.permute(0, 4, 1, 2, 3)  # B C T H W view of channels-last memory
        return fused_bias_act(y, conv.bias, act="relu", dim=1)
    else:
        raise ModelConfigError(f"spike encoder activation {activation!r} is unknown; expected one of {ACTIVATIONS}")


class ResidualBlock3D(nn.Module):
    """``relu(x + conv2(relu(conv1(x))))`` with 3x3x3 convolutions keeping size and channels.

    Args:
        channels: C.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, stride=1, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, stride=1, padding=1)
        self.activation = "relu"  # or "fused_bias_act" (module docstring); a run-time switch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` to the same shape."""
        # In-place ReLUs: neither a convolution nor the addition needs its output for backward.
        out = conv_relu(self.conv1, x, self.activation)
        return conv_relu(self.conv2, out, self.activation, residual=x)


class SpikeEncoder3D(nn.Module):
    """Spike voxels to 4 feature scales.

    Args:
        in_bins: K, voxel bins per frame.
        channels_per_scale: C_0..C_3.
        temporal_strides: stride along T between consecutive scales (3 entries; default all 1).
        spatial_strides: stride along H and W between consecutive scales (3 entries; default all 2).
        activation: ``"relu"`` or ``"fused_bias_act"`` (module docstring; :meth:`set_activation`).
    """

    def __init__(
        self,
        in_bins: int,
        channels_per_scale: Sequence[int],
        temporal_strides: Sequence[int] | None = None,
        spatial_strides: Sequence[int] | None = None,
        *,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        n = len(channels_per_scale)
        temporal_strides = [1] * (n - 1) if temporal_strides is None else list(temporal_strides)
        spatial_strides = [2] * (n - 1) if spatial_strides is None else list(spatial_strides)
        if in_bins < 1 or n < 1 or any(c < 1 for c in channels_per_scale):
            raise ModelConfigError(
                f"SpikeEncoder3D: in_bins={in_bins}, channels_per_scale={list(channels_per_scale)}; expected K >= 1 "
                "and at least one scale of positive channels"
            )
        for name, strides in (("temporal_strides", temporal_strides), ("spatial_strides", spatial_strides)):
            if len(strides) != n - 1 or any(s < 1 for s in strides):
                raise ModelConfigError(
                    f"SpikeEncoder3D: {name}={strides}; expected {n - 1} strides >= 1 (one per scale after the first)"
                )
        self.in_bins = in_bins
        self.channels_per_scale = tuple(channels_per_scale)
        self.temporal_strides = tuple(temporal_strides)
        self.spatial_strides = tuple(spatial_strides)
        c0 = channels_per_scale[0]
        self.in_proj = nn.Conv3d(in_bins, c0, kernel_size=3, stride=1, padding=1)
        self.res0 = nn.Sequential(ResidualBlock3D(c0), ResidualBlock3D(c0))
        self.downs = nn.ModuleList()
        self.residuals = nn.ModuleList()
        for i in range(1, n):
            stride = (temporal_strides[i - 1], spatial_strides[i - 1], spatial_strides[i - 1])
            cin, cout = channels_per_scale[i - 1], channels_per_scale[i]
            self.downs.append(nn.Conv3d(cin, cout, kernel_size=3, stride=stride, padding=1))
            self.residuals.append(nn.Sequential(ResidualBlock3D(cout), ResidualBlock3D(cout)))
        self.set_activation(activation)

    def set_activation(self, activation: str) -> None:
        """``"relu"`` or ``"fused_bias_act"`` for every convolution + ReLU of the encoder (module docstring)."""
        if activation not in ACTIVATIONS:
            raise ModelConfigError(f"SpikeEncoder3D: activation {activation!r} is unknown; expected one of "
                                   f"{ACTIVATIONS}")
        self.activation = activation
        for m in self.modules():
            if isinstance(m, ResidualBlock3D):
                m.activation = activation

    def output_sizes(self, t: int, h: int, w: int) -> list[tuple[int, int, int]]:
        """``(T_i, H_i, W_i)`` of every scale for input frames ``T x h x w``."""
        sizes = [(t, h, w)]
        for st, ss in zip(self.temporal_strides, self.spatial_strides, strict=True):
            t, h, w = ((n - 1) // s + 1 for n, s in ((t, st), (h, ss), (w, ss)))  # kernel 3, padding 1
            sizes.append((t, h, w))
        return sizes

    def forward(self, spikes: torch.Tensor) -> list[torch.Tensor]:
        """Encode.

        Args:
            spikes: ``(B, T, K, Hs, Ws)`` voxels (float).

        Returns:
            one ``(B, C_i, T_i, H_i, W_i)`` tensor per scale (see :meth:`output_sizes`), each a view of
            channels-last ``(B, T_i, H_i, W_i, C_i)`` memory where the device's convolutions keep it.
        """
        if spikes.ndim != 5 or spikes.shape[2] != self.in_bins:
            raise ModelInputError(
                f"SpikeEncoder3D: expected spikes (B, T, K={self.in_bins}, Hs, Ws), got {tuple(spikes.shape)}"
            )
        x = spikes.permute(0, 2, 1, 3, 4).contiguous(memory_format=torch.channels_last_3d)  # B K T H W
        x = self.res0(conv_relu(self.in_proj, x, self.activation))
        feats = [x]
        for down, res in zip(self.downs, self.residuals, strict=True):
            x = res(conv_relu(down, x, self.activation))
            feats.append(x)
        return feats
