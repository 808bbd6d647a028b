"""Backward warping of frames or features by optical flow, bilinear and VRT's "nearest4".

Flow is ``(N, 2, H, W)``, channel 0 horizontal (x) and channel 1 vertical (y), in pixels: output
pixel ``(i, j)`` samples the input at ``(j + flow_x, i + flow_y)``. Sampling goes through
``F.grid_sample`` with ``align_corners=True`` (pixel centres at -1 and 1), like the official code.
Low-precision inputs are sampled in float32 (sub-pixel positions need the mantissa).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from svrt_model.errors import ModelInputError

__all__ = ["flow_warp", "flow_warp_nearest4"]


def _check(x: torch.Tensor, flow: torch.Tensor) -> None:
    if x.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[0] != x.shape[0] or (
        flow.shape[2:] != x.shape[2:]
    ):
        raise ModelInputError(
            f"flow_warp: expected x (N, C, H, W) and flow (N, 2, H, W) of the same N, H, W; got x {tuple(x.shape)} "
            f"and flow {tuple(flow.shape)}"
        )


def _sample_positions(flow: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute sampling positions ``(x, y)``, each ``(N, H, W)``."""
    _, _, h, w = flow.shape
    flow = flow.to(dtype)
    gx = torch.arange(w, device=flow.device, dtype=dtype).view(1, 1, w) + flow[:, 0]
    gy = torch.arange(h, device=flow.device, dtype=dtype).view(1, h, 1) + flow[:, 1]
    return gx, gy


def _normalise(v: torch.Tensor, size: int) -> torch.Tensor:
    return 2.0 * v / max(size - 1, 1) - 1.0


def _compute_dtype(x: torch.Tensor, flow: torch.Tensor) -> torch.dtype:
    return torch.promote_types(torch.promote_types(x.dtype, flow.dtype), torch.float32)


def flow_warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Bilinear backward warp.

    Args:
        x: ``(N, C, H, W)``.
        flow: ``(N, 2, H, W)``, (x, y) displacement in pixels.
        padding_mode: ``"zeros"`` (features) or ``"border"`` (SpyNet).

    Returns:
        ``(N, C, H, W)`` in float32 or float64 (the wider of x, flow and float32).
    """
    _check(x, flow)
    dtype = _compute_dtype(x, flow)
    _, _, h, w = x.shape
    gx, gy = _sample_positions(flow, dtype)
    grid = torch.stack((_normalise(gx, w), _normalise(gy, h)), dim=3)  # N H W 2
    return F.grid_sample(x.to(dtype), grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def flow_warp_nearest4(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """VRT's "nearest4" image pre-alignment: nearest-neighbour warps at the 4 integer corners of the flow.

    Args:
        x: ``(N, C, H, W)``.
        flow: ``(N, 2, H, W)``.

    Returns:
        ``(N, 4C, H, W)``: ``[x_floor y_floor, x_floor y_ceil, x_ceil y_floor, x_ceil y_ceil]`` along
        channels, zeros outside the frame. (Like the official code, no gradient reaches the flow.)
    """
    _check(x, flow)
    dtype = _compute_dtype(x, flow)
    _, _, h, w = x.shape
    gx, gy = _sample_positions(flow, dtype)
    xs = (_normalise(torch.floor(gx), w), _normalise(torch.ceil(gx), w))
    ys = (_normalise(torch.floor(gy), h), _normalise(torch.ceil(gy), h))
    src = x.to(dtype)
    outs = [
        F.grid_sample(src, torch.stack((xs[i], ys[j]), dim=3), mode="nearest", padding_mode="zeros",
                      align_corners=True)
        for i in (0, 1)
        for j in (0, 1)
    ]
    return torch.cat(outs, dim=1)
