"""``MlpGEGLU``: the gated-GELU MLP of VRT (Shazeer, "GLU Variants Improve Transformer", 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["MlpGEGLU", "geglu"]


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
        grad_value = grad * F.gelu(gate)
        # aten's gelu_backward computes in float32 internally for half inputs, as autograd would
        grad_gate = torch.ops.aten.gelu_backward(grad * value, gate)
        return grad_gate, grad_value


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
