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


class _PackedGEGLU(torch.autograd.Function):
    """``gelu(h[..., :H]) * h[..., H:]`` of ONE packed projection ``h`` (fc11 and fc12 as one GEMM); backward
    writes both halves of the gradient into one ``(..., 2H)`` tensor, so fc11 and fc12 backpropagate as one
    GEMM too (no second read of the input, no sum of two input gradients). The same formulas as
    :class:`_GEGLU`, element by element."""

    @staticmethod
    def forward(ctx: FunctionCtx, packed: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(packed)
        gate, value = packed.chunk(2, dim=-1)
        return F.gelu(gate) * value

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (packed,) = ctx.saved_tensors
        gate, value = packed.chunk(2, dim=-1)
        out = torch.empty_like(packed)
        hidden = gate.shape[-1]
        torch.mul(grad, F.gelu(gate), out=out[..., hidden:])
        torch.ops.aten.gelu_backward.grad_input(grad * value, gate, grad_input=out[..., :hidden])
        return out


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
        self.packed = True  # fc11 and fc12 as one GEMM (VRT.set_bandwidth_savers "mlp-packed"): same numbers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., C_in)`` to ``(..., C_out)``."""
        if self.packed:
            weight = torch.cat([self.fc11.weight, self.fc12.weight])  # 2H C_in: a few KB, per call
            bias = torch.cat([self.fc11.bias, self.fc12.bias])
            return self.fc2(_PackedGEGLU.apply(F.linear(x, weight, bias)))
        return self.fc2(geglu(self.fc11(x), self.fc12(x)))
