"""Flow-guided deformable alignment (``DCNv2PackFlowGuided`` in the official code).

BasicVSR++ (Chan et al., CVPR 2022) style: a small CNN looks at the flow-warped neighbour, the current
frame and the flow, and predicts per (offset group, tap) residual offsets around the flow and a
modulation mask; a modulated deformable convolution (DCNv2, Zhu et al., CVPR 2019) then samples the
UNWARPED neighbour. The convolution itself is :func:`kernels.deform_conv.deform_conv2d`
(torchvision's signature and offset layout: ``offset[:, 2*(g*9+k)]`` is dy, ``+1`` is dx).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import FunctionCtx

from kernels.deform_conv import deform_conv2d
from svrt_model.errors import ModelInputError
from svrt_model.layers.autocast import autocast_disabled

__all__ = ["FlowGuidedDeformAlign"]

_KERNEL = 3
_TAPS = _KERNEL * _KERNEL


class _DeformConvShapes(torch.autograd.Function):
    """Meta-device stand-in of the 3x3, stride-1, padding-1 deformable convolution: the output's shape, and
    the tensors the CUDA op keeps for backward (input, offset, mask, weight), so a traced training forward
    counts the GPU's memory rather than the pure-torch reference's sampled columns."""

    @staticmethod
    def forward(ctx: FunctionCtx, input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(input, offset, mask, weight)
        n, _, h, w = input.shape
        return input.new_empty(n, weight.shape[0], h, w)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        raise ModelInputError("the meta-device deformable convolution traces shapes only; it has no backward")


class FlowGuidedDeformAlign(nn.Module):
    """Align a neighbour's features to the current frame.

    Args:
        channels: C (input and output).
        deformable_groups: offset groups G (C must be divisible by G).
        max_residue_magnitude: bound of the learned offsets around the flow, in pixels.

    Parameter names are the official ones: ``weight`` ``(C, C, 3, 3)``, ``bias``, ``conv_offset.{0,2,4,6}``.
    """

    def __init__(self, channels: int, deformable_groups: int, max_residue_magnitude: float) -> None:
        super().__init__()
        self.deformable_groups = deformable_groups
        self.max_residue_magnitude = float(max_residue_magnitude)
        self.weight = nn.Parameter(torch.empty(channels, channels, _KERNEL, _KERNEL))
        self.bias = nn.Parameter(torch.zeros(channels))
        # In-place activations: the convolutions do not keep their outputs for backward, so each hidden
        # layer keeps one tensor instead of two (the same numbers).
        self.conv_offset = nn.Sequential(
            nn.Conv2d(2 * channels + 2, channels, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(channels, 3 * _TAPS * deformable_groups, 3, 1, 1),
        )
        bound = 1.0 / math.sqrt(channels * _TAPS)
        nn.init.uniform_(self.weight, -bound, bound)
        # Start as plain flow warping: zero residual offsets, mask 0.5 everywhere.
        nn.init.zeros_(self.conv_offset[-1].weight)
        nn.init.zeros_(self.conv_offset[-1].bias)
        self.backend = "auto"  # of kernels.deform_conv.deform_conv2d; a run-time switch
        self.lean = True  # offsets without the concatenated and repeated copies (VRT.set_bandwidth_savers)

    def offsets_and_mask(
        self, warped: torch.Tensor, current: torch.Tensor, flow: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampling offsets ``(N, 2*G*9, H, W)`` (dy, dx) and mask ``(N, G*9, H, W)``, float32 or wider.

        Args:
            warped: ``(N, C, H, W)`` neighbour warped by the flow.
            current: ``(N, C, H, W)`` features of the frame being aligned to.
            flow: ``(N, 2, H, W)`` (x, y) flow from the current frame to the neighbour.
        """
        out = self.conv_offset(torch.cat([warped, current, flow.to(warped.dtype)], dim=1))
        # Positions need float32 at least: a bf16 offset of 20 px is only good to 1/8 px.
        wide = torch.promote_types(out.dtype, torch.float32)
        if self.lean:
            # cat(o1, o2) of the three chunks is the first two thirds of the channels: a view, not a copy;
            # the flow is added by broadcasting over the (group, tap) pairs instead of a repeated copy
            taps = out.shape[1] // 3
            o12, m = out.split([2 * taps, taps], dim=1)
            offset = self.max_residue_magnitude * torch.tanh(o12.to(wide))  # N (G 9 2) H W
            offset = (offset.unflatten(1, (taps, 2)) + flow.flip(1).to(wide).unsqueeze(1)).flatten(1, 2)
            return offset, torch.sigmoid(m.to(wide))
        out = out.to(wide)
        o1, o2, m = torch.chunk(out, 3, dim=1)
        offset = self.max_residue_magnitude * torch.tanh(torch.cat((o1, o2), dim=1))
        offset = offset + flow.flip(1).to(offset.dtype).repeat(1, offset.shape[1] // 2, 1, 1)
        return offset, torch.sigmoid(m)

    def forward(
        self, neighbour: torch.Tensor, warped: torch.Tensor, current: torch.Tensor, flow: torch.Tensor
    ) -> torch.Tensor:
        """Aligned neighbour features ``(N, C, H, W)``; N may stack frames and directions (one call).

        Args:
            neighbour: ``(N, C, H, W)`` unwarped neighbour features (what the deformable conv samples).
            warped, current, flow: as in :meth:`offsets_and_mask`.
        """
        offset, mask = self.offsets_and_mask(warped, current, flow)
        # As torchvision's op under autocast, the deformable convolution computes in float32 (or float64):
        # deform_conv2d upcasts a bf16/fp16 ``neighbour`` itself, so the backward keeps the half-size
        # tensor instead of a float32 copy, and returns the output in ``neighbour``'s dtype (what the
        # stage casts it to anyway).
        if neighbour.device.type == "meta":  # shape / memory tracing: what the CUDA op keeps, nothing computed
            return _DeformConvShapes.apply(neighbour, offset, mask, self.weight)
        with autocast_disabled(neighbour.device.type):
            return deform_conv2d(
                neighbour, offset, self.weight, self.bias, stride=1, padding=1, dilation=1, mask=mask,
                backend=self.backend,
            )
