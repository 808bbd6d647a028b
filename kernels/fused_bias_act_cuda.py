"""Fused bias + activation on CUDA: the kernels of ``fused_bias_act.cu`` as autograd Functions.

Forward: one pass, ``out = scale * act(x + bias)``; for leaky ReLU the output is saved (its sign is the
activation's, ``scale > 0``), so the backward needs no copy of ``x``. Backward: ``grad_x = grad * scale *
act'(out)`` by one kernel, wrapped in its own Function whose derivative with respect to ``grad`` is the
same kernel (the derivative of a piecewise-linear activation is piecewise constant, so the part through
``out`` is zero): gradients of any order; ``grad_bias`` is ``grad_x`` summed over every dimension but
``dim`` (a torch reduction, in float32/float64). Arguments arrive validated by
:func:`kernels.fused_bias_act.fused_bias_act`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.autograd.function import FunctionCtx

from kernels.cuda_runtime import CUDA_RUNTIME, Runtime, import_cupy, require_cuda

__all__ = ["NAMES", "SOURCE", "fused_bias_act_cuda"]

SOURCE = "fused_bias_act.cu"
THREADS = 256
MAX_BLOCKS = 1 << 16  # the kernels loop (grid stride) beyond this
CTYPES = {torch.float32: "float", torch.float64: "double", torch.float16: "half_t", torch.bfloat16: "bf16_t"}
NAMES = tuple(f"{k}<{c}, {a}>" for k in ("bias_act_forward", "bias_act_grad") for c in CTYPES.values() for a in (0, 1))
_OP = "fused_bias_act"


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _scalar(value: float, dtype: torch.dtype) -> np.floating:
    return np.float64(value) if dtype == torch.float64 else np.float32(value)


def _launch(rt: Runtime, name: str, like: torch.Tensor, args: tuple) -> None:
    n = like.numel()
    blocks = min(-(-n // (8 * THREADS)), MAX_BLOCKS)
    with rt.stream(like.device):
        rt.function(SOURCE, NAMES, name, like.device)((blocks,), (THREADS,), args)


def _aligned(*tensors: torch.Tensor) -> np.int32:
    return np.int32(all(t.data_ptr() % 16 == 0 for t in tensors))


def forward_kernel(
    rt: Runtime, x: torch.Tensor, bias: torch.Tensor | None, slope: float, scale: float, dim: int, linear: bool
) -> torch.Tensor:
    """``scale * act(x + bias)`` for contiguous ``x`` and a contiguous compute-dtype ``bias`` (or None)."""
    out = torch.empty_like(x)
    if x.numel() == 0:
        return out
    inner = math.prod(x.shape[dim + 1 :])
    C = x.shape[dim]
    name = f"bias_act_forward<{CTYPES[x.dtype]}, {0 if linear else 1}>"
    b = x if bias is None else bias  # never read without a bias
    with rt.stream(x.device):
        sizes = (np.int64(x.numel()), np.int64(max(inner, 1)), np.int64(max(C, 1)))
        args = (rt.array(x), rt.array(b), rt.array(out), *sizes, np.int32(bias is not None), _aligned(x, out),
                _scalar(slope, x.dtype), _scalar(scale, x.dtype))
    _launch(rt, name, x, args)
    return out


def grad_kernel(
    rt: Runtime, grad: torch.Tensor, y: torch.Tensor | None, slope: float, scale: float
) -> torch.Tensor:
    """``grad * scale * act'(y)`` (``y`` None: linear) for contiguous tensors of one dtype."""
    out = torch.empty_like(grad)
    if grad.numel() == 0:
        return out
    name = f"bias_act_grad<{CTYPES[grad.dtype]}, {0 if y is None else 1}>"
    yy = grad if y is None else y  # never read when linear
    with rt.stream(grad.device):
        args = (rt.array(grad), rt.array(yy), rt.array(out), np.int64(grad.numel()), _aligned(grad, yy, out),
                _scalar(slope, grad.dtype), _scalar(scale, grad.dtype))
    _launch(rt, name, grad, args)
    return out


class _BiasActGrad(torch.autograd.Function):
    """``grad -> grad * scale * act'(y)``: linear in ``grad``, constant in ``y`` (almost everywhere)."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, grad: torch.Tensor, y: torch.Tensor | None, slope: float, scale: float, rt: Runtime
    ) -> torch.Tensor:
        ctx.save_for_backward(y)
        ctx.slope, ctx.scale, ctx.rt = slope, scale, rt
        dtype = grad.dtype if y is None else y.dtype
        return grad_kernel(rt, grad.detach().to(dtype).contiguous(), y, slope, scale)

    @staticmethod
    def backward(ctx: FunctionCtx, gg: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (y,) = ctx.saved_tensors
        return _BiasActGrad.apply(gg, y, ctx.slope, ctx.scale, ctx.rt), None, None, None, None


class _FusedBiasActCuda(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: torch.Tensor,
        bias: torch.Tensor | None,
        slope: float,
        scale: float,
        dim: int,
        linear: bool,
        rt: Runtime,
    ) -> torch.Tensor:
        xc = x.detach().contiguous()
        b = None if bias is None else bias.detach().to(_acc(x.dtype)).contiguous()
        out = forward_kernel(rt, xc, b, slope, scale, dim, linear)
        ctx.save_for_backward(None if linear else out)
        ctx.slope, ctx.scale, ctx.dim, ctx.rt = slope, scale, dim, rt
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (y,) = ctx.saved_tensors
        need_x, need_bias = ctx.needs_input_grad[:2]
        grad_x = grad_bias = None
        if need_x or need_bias:
            grad_x = _BiasActGrad.apply(grad, y, ctx.slope, ctx.scale, ctx.rt)
        if need_bias:
            dims = [d for d in range(grad_x.dim()) if d != ctx.dim]
            grad_bias = grad_x.sum(dims, dtype=_acc(grad_x.dtype)).to(ctx.bias_dtype)
        return grad_x if need_x else None, grad_bias, None, None, None, None, None


def fused_bias_act_cuda(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    slope: float,
    scale: float,
    dim: int,
    linear: bool,
    *,
    runtime: Runtime | None = None,
) -> torch.Tensor:
    """The CUDA path of :func:`kernels.fused_bias_act.fused_bias_act` (validated arguments; ``slope`` 0 is
    ReLU; ``linear`` ignores ``slope``).

    Args:
        runtime: the kernel runtime; default CuPy on CUDA tensors (tests pass the CPU emulation).

    Raises:
        BackendUnavailableError: no CuPy or no CUDA device (default runtime).
        SvrtValueError: tensors not on a CUDA device while one exists (default runtime).
    """
    if runtime is None:
        require_cuda(_OP, x, "x")
        import_cupy(_OP)
        runtime = CUDA_RUNTIME
    return _FusedBiasActCuda.apply(x, bias, slope, scale, dim, linear, runtime)
