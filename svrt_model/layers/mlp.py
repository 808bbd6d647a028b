"""``MlpGEGLU``: the gated-GELU MLP of VRT (Shazeer, "GLU Variants Improve Transformer", 2020)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["MlpGEGLU", "geglu"]

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class _GEGLU(torch.autograd.Function):
    """``gelu(gate) * value`` keeping only its two inputs for backward (autograd would also keep
    ``gelu(gate)``, one more hidden-sized activation per block); gelu is recomputed in backward."""

    @staticmethod
    def forward(ctx: FunctionCtx, gate: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, value)
        return F.gelu(gate) * value

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate, value = ctx.saved_tensors
        wide = torch.promote_types(gate.dtype, torch.float32)
        g = gate.to(wide)
        cdf = 0.5 * (1.0 + torch.erf(g * _INV_SQRT2))
        pdf = torch.exp(-0.5 * g * g) * _INV_SQRT_2PI
        grad_w = grad.to(wide)
        grad_gate = grad_w * value.to(wide) * (cdf + g * pdf)
        grad_value = grad_w * (g * cdf)
        return grad_gate.to(gate.dtype), grad_value.to(value.dtype)


def geglu(gate: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``gelu(gate) * value`` (exact erf GELU), memory-lean in backward; same shape as the inputs."""
    return _GEGLU.apply(gate, value)


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
        return self.fc2(geglu(self.fc11(x), self.fc12(x)))
