"""Stochastic depth (Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016), per sample."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DropPath"]


class DropPath(nn.Module):
    """Zero a residual branch for a random subset of samples while training; rescale the kept ones.

    Args:
        p: drop probability in ``[0, 1)``; 0 makes the module an identity.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` to the same shape; identity in eval mode."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        scale = (keep + torch.rand(shape, dtype=x.dtype, device=x.device)).floor_().div_(keep)  # 0 or 1/keep
        return x * scale

    def residual(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """``x + self(branch)`` as one elementwise pass, with the same random draw as :meth:`forward`.

        The scaled branch is never written out: one read of each input and one write of the sum instead
        of an extra write and read of the branch's size.
        """
        if self.p == 0.0 or not self.training:
            return x + branch
        keep = 1.0 - self.p
        shape = (branch.shape[0],) + (1,) * (branch.ndim - 1)
        scale = (keep + torch.rand(shape, dtype=branch.dtype, device=branch.device)).floor_().div_(keep)
        return torch.addcmul(x, branch, scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"
