"""Small stand-in restoration models with a known receptive field, for testing tiling and evaluation.

Every operation is elementwise in a fixed order (shifted copies added one by one), so an output pixel
is bit-for-bit the same whatever the size of the tensor it is computed in: a tiled restoration can then
be compared with an untiled one exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def upsample_spikes(spikes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Mean over K of ``(B, T, K, Hs, Ws)``, repeated to ``(B, T, 1, h, w)`` (nearest, integer factors)."""
    m = spikes.float().mean(dim=2, keepdim=True)
    fy, fx = h // spikes.shape[-2], w // spikes.shape[-1]
    if fy * spikes.shape[-2] != h or fx * spikes.shape[-1] != w:
        raise ValueError(f"spikes {tuple(spikes.shape)} do not scale by whole factors to {h}x{w}")
    return m.repeat_interleave(fy, dim=-2).repeat_interleave(fx, dim=-1)


class StencilModel(nn.Module):
    """Per frame: a (2r+1)^2 weighted sum of zero-padded RGB neighbours plus a spike term at the pixel.

    Receptive field: ``radius`` pixels in space, one frame in time.
    """

    def __init__(self, radius: int, *, spike_weight: float = 0.05, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        k = 2 * radius + 1
        w = torch.rand((3, k, k), generator=g)
        self.radius = radius
        self.weight = nn.Parameter(w / w.sum(dim=(1, 2), keepdim=True))
        self.spike_weight = spike_weight
        self.calls: list[tuple[int, ...]] = []

    def forward(self, rgb: torch.Tensor, spikes: torch.Tensor | None) -> torch.Tensor:
        self.calls.append(tuple(rgb.shape))
        r, (h, w) = self.radius, rgb.shape[-2:]
        padded = F.pad(rgb, (r, r, r, r))
        out = torch.zeros_like(rgb)
        for dy in range(2 * r + 1):
            for dx in range(2 * r + 1):
                out = out + self.weight[:, dy, dx].view(3, 1, 1) * padded[..., dy : dy + h, dx : dx + w]
        if spikes is not None:
            out = out + self.spike_weight * upsample_spikes(spikes, h, w)
        return out


class ClipMeanModel(nn.Module):
    """Every output frame is the mean of the clip's frames: shows how clips are blended in time."""

    def forward(self, rgb: torch.Tensor, spikes: torch.Tensor | None) -> torch.Tensor:
        return rgb.mean(dim=1, keepdim=True).expand_as(rgb).clone()


class IdentityModel(nn.Module):
    """Returns the blurry input (output metrics then equal the input's)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, rgb: torch.Tensor, spikes: torch.Tensor | None) -> torch.Tensor:
        return rgb * self.scale
