"""``MlpGEGLU``: the gated-GELU MLP of VRT (Shazeer, "GLU Variants Improve Transformer", 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MlpGEGLU"]


class MlpGEGLU(nn.Module):
    """``fc2(GELU(fc11(x)) * fc12(x))`` with the exact (erf) GELU; parameter names are the official ones.

    Args:
        in_features: input channels.
        hidden_features: width of the gated hidden layer.
        out_features: output channels (default ``in_features``).
    """

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None) -> None:
        super().__init__()
        out_features = out_features or in_features
        self.fc11 = nn.Linear(in_features, hidden_features)
        self.fc12 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., C_in)`` to ``(..., C_out)``."""
        # fc11 and fc12 as one GEMM: x is read once and, under autocast, cast once.
        weight = torch.cat([self.fc11.weight, self.fc12.weight])
        bias = torch.cat([self.fc11.bias, self.fc12.bias])
        gate, value = F.linear(x, weight, bias).chunk(2, dim=-1)
        return self.fc2(F.gelu(gate) * value)
