"""Flow-guided deformable attention alignment: RVRT's guided deformable attention (Liang et al., "Recurrent
Video Restoration Transformer with Guided Deformable Attention", NeurIPS 2022) in VRT's parallel warping,
the ``alignment="deform_attn"`` alternative to the flow-guided deformable convolution.

The offset network is the deformable convolution's (same input: the flow-warped neighbour, the current
frame and the flow; same three hidden 3x3 convolutions with leaky ReLU), predicting ``G * 9`` offset pairs
(no modulation mask: the attention weights take its place), bounded by ``max_residue_magnitude * tanh``
around the flow and zero at initialisation. The current frame's features are the queries; the unwarped
neighbour's are the keys and values, sampled by :func:`kernels.deform_attn.deform_attn` in a 3x3 window
around each offset with ``G`` heads (one offset group per head). As in RVRT, a projection and a residual
MLP follow. Its parameters are new (the official VRT has no such module), under the same attribute name
``pa_deform`` as the deformable convolution.
"""

from __future__ import annotations

import torch
from torch import nn

from kernels.deform_attn import deform_attn

__all__ = ["FlowGuidedDeformAttnAlign"]

_KERNEL = 3
_TAPS = _KERNEL * _KERNEL


class FlowGuidedDeformAttnAlign(nn.Module):
    """Align a neighbour's features to the current frame by guided deformable attention.

    Args:
        channels: C (input and output).
        deformable_groups: G, attention heads and offset groups (C must be divisible by G).
        max_residue_magnitude: bound of the learned offsets around the flow, in pixels.
        mlp_ratio: hidden width of the residual MLP relative to C.

    Parameters: ``conv_offset.{0,2,4,6}``, ``proj_q``, ``proj_k``, ``proj_v``, ``proj`` (1x1 convolutions,
    i.e. per-pixel linear maps) and ``mlp.{0,2}``.
    """

    def __init__(
        self, channels: int, deformable_groups: int, max_residue_magnitude: float, *, mlp_ratio: float = 2.0
    ) -> None:
        super().__init__()
        self.deformable_groups = deformable_groups
        self.max_residue_magnitude = float(max_residue_magnitude)
        self.conv_offset = nn.Sequential(
            nn.Conv2d(2 * channels + 2, channels, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(channels, 2 * _TAPS * deformable_groups, 3, 1, 1),
        )
        nn.init.zeros_(self.conv_offset[-1].weight)  # start by attending to a 3x3 window around the flow
        nn.init.zeros_(self.conv_offset[-1].bias)
        self.proj_q = nn.Conv2d(channels, channels, 1)
        self.proj_k = nn.Conv2d(channels, channels, 1)
        self.proj_v = nn.Conv2d(channels, channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1))
        self.backend = "auto"  # of kernels.deform_attn.deform_attn; a run-time switch
        self.lean = True  # the flow added by broadcasting, not as a repeated copy (VRT.set_bandwidth_savers)

    def offsets(self, warped: torch.Tensor, current: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """Sampling offsets ``(N, G*9*2, H, W)`` (dy, dx) around each 3x3 tap, float32 or wider.

        Args:
            warped: ``(N, C, H, W)`` neighbour warped by the flow.
            current: ``(N, C, H, W)`` features of the frame being aligned to.
            flow: ``(N, 2, H, W)`` (x, y) flow from the current frame to the neighbour.
        """
        out = self.conv_offset(torch.cat([warped, current, flow.to(warped.dtype)], dim=1))
        out = out.to(torch.promote_types(out.dtype, torch.float32))  # positions need float32 at least
        offset = self.max_residue_magnitude * torch.tanh(out)
        if self.lean:  # N (G 9 2) H W plus the (dy, dx) flow of each pixel
            return (offset.unflatten(1, (-1, 2)) + flow.flip(1).to(offset.dtype).unsqueeze(1)).flatten(1, 2)
        return offset + flow.flip(1).to(offset.dtype).repeat(1, offset.shape[1] // 2, 1, 1)

    def forward(
        self, neighbour: torch.Tensor, warped: torch.Tensor, current: torch.Tensor, flow: torch.Tensor
    ) -> torch.Tensor:
        """Aligned neighbour features ``(N, C, H, W)`` (the signature of the deformable-convolution alignment).

        Args:
            neighbour: ``(N, C, H, W)`` unwarped neighbour features (keys and values).
            warped, current, flow: as in :meth:`offsets`; ``current`` also gives the queries.
        """
        offset = self.offsets(warped, current, flow)
        q = self.proj_q(current)
        k = self.proj_k(neighbour).unsqueeze(1)  # N 1 C H W: one neighbour frame per query frame
        v = self.proj_v(neighbour).unsqueeze(1)
        backend = "torch" if self.backend == "reference" else self.backend  # deform_conv2d's name for it
        g = self.deformable_groups
        out = deform_attn(q, k, v, offset, kernel_size=_KERNEL, heads=g, groups=g, backend=backend)
        out = self.proj(out.to(q.dtype))
        return out + self.mlp(out)
