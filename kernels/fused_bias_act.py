"""Fused bias + activation: ``scale * act(x + bias)`` in one pass over memory, with first and second
derivatives (the ``fused_bias_act`` op of StyleGAN2, Karras et al., CVPR 2020, which the original S-VRT
carried as ``fused_act``).

``act`` is ``"linear"`` (identity), ``"relu"`` (slope 0) or ``"lrelu"`` (``z > 0 ? z : slope * z``, slope >= 0);
``bias`` ``(C,)`` is added along dimension ``dim`` of ``x``. The derivative at ``z = 0`` is the slope, as
for ``torch.nn.functional.leaky_relu`` and ``relu``. Computation is in float32 for float16/bfloat16/
float32 ``x`` (float64 for float64) and the result has ``x``'s dtype; the bias may be float32 with a
half-precision ``x`` (autocast's parameters), and float64 is never mixed with other dtypes.

Paths: ``"torch"`` (plain ops, any device, autograd), ``"cuda"`` (``fused_bias_act.cu`` through CuPy,
:mod:`kernels.fused_bias_act_cuda`), ``"auto"`` (``"cuda"`` for CUDA tensors when CuPy imports).
The elementwise work is memory-bound: the fused kernel reads ``x`` once and writes the output once,
where the eager torch formulation makes three passes (add, activation, scale); ``torch.compile`` fuses
them too (``benchmarks/bench_ops.py`` compares all three).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernels.cuda_runtime import cupy_available
from kernels.fused_bias_act_cuda import fused_bias_act_cuda
from svrt_errors import SvrtValueError

__all__ = ["ACTIVATIONS", "BACKENDS", "check_fused_bias_act_args", "fused_bias_act", "fused_bias_act_torch"]

ACTIVATIONS = ("linear", "relu", "lrelu")
BACKENDS = ("auto", "torch", "cuda")
_OP = "fused_bias_act"
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_fused_bias_act_args(
    x: torch.Tensor, bias: torch.Tensor | None, act: str, negative_slope: float | None, scale: float, dim: int
) -> tuple[float, int]:
    """Validate :func:`fused_bias_act`'s arguments; return ``(slope, dim)`` (slope 1 for linear, dim >= 0).

    Raises:
        SvrtValueError: an unknown ``act``, a slope that does not fit it, a non-positive or non-finite
            ``scale``, a bad ``dim``, or tensors of the wrong type, shape, dtype or device.
    """
    if not isinstance(x, torch.Tensor) or x.dtype not in _FLOATS:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise SvrtValueError(f"{_OP}: x must be a float16/bfloat16/float32/float64 tensor, got {got}")
    if x.dim() == 0:
        raise SvrtValueError(f"{_OP}: x must have at least one dimension; got a 0-d tensor (use x.view(1))")
    if act == "linear" or act == "relu":
        if negative_slope not in (None, 0, 0.0):
            raise SvrtValueError(
                f"{_OP}: negative_slope={negative_slope!r} with act={act!r}; a slope needs act='lrelu'"
            )
        slope = 1.0 if act == "linear" else 0.0
    elif act == "lrelu":
        slope = 0.2 if negative_slope is None else negative_slope
        if isinstance(slope, bool) or not isinstance(slope, (int, float)) or not (math.isfinite(slope) and slope >= 0):
            raise SvrtValueError(
                f"{_OP}: negative_slope must be a finite number >= 0 (the backward reads the activation's branch "
                f"from the output's sign), got {negative_slope!r}"
            )
    else:
        raise SvrtValueError(f"{_OP}: unknown act {act!r}; expected one of {', '.join(ACTIVATIONS)}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
        raise SvrtValueError(
            f"{_OP}: scale must be a positive finite number (the backward reads the activation's sign from the "
            f"output), got {scale!r}"
        )
    if isinstance(dim, bool) or not isinstance(dim, int) or not -x.dim() <= dim < x.dim():
        raise SvrtValueError(f"{_OP}: dim={dim!r} is out of range for x of shape {tuple(x.shape)}")
    dim = dim % x.dim()
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.dtype not in _FLOATS:
            got = bias.dtype if isinstance(bias, torch.Tensor) else type(bias).__name__
            raise SvrtValueError(f"{_OP}: bias must be a floating-point tensor or None, got {got}")
        C = x.shape[dim]
        if tuple(bias.shape) != (C,):
            raise SvrtValueError(
                f"{_OP}: bias has shape {tuple(bias.shape)}; expected ({C},), the size of x's dimension {dim} "
                f"(x has shape {tuple(x.shape)})"
            )
        if bias.device != x.device:
            raise SvrtValueError(f"{_OP}: bias is on {bias.device} but x is on {x.device}; use one device")
        if (x.dtype == torch.float64) != (bias.dtype == torch.float64):
            raise SvrtValueError(
                f"{_OP}: float64 mixed with other dtypes (x {x.dtype}, bias {bias.dtype}); cast both to float64 "
                "or neither"
            )
    return float(slope), dim


def fused_bias_act_torch(
    x: torch.Tensor, bias: torch.Tensor | None, slope: float, scale: float, dim: int, linear: bool
) -> torch.Tensor:
    """The plain-torch path (validated arguments): the same math, differentiable twice through autograd."""
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.autocast(x.device.type, enabled=False):
        z = x.to(compute)
        if bias is not None:
            shape = [1] * x.dim()
            shape[dim] = -1
            z = z + bias.to(compute).view(shape)
        y = z if linear else F.leaky_relu(z, slope)
        return (y * scale).to(x.dtype)


def fused_bias_act(
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    act: str = "lrelu",
    negative_slope: float | None = None,
    scale: float = 1.0,
    dim: int = 1,
    backend: str = "auto",
) -> torch.Tensor:
    """``scale * act(x + bias)`` (module docstring).

    Args:
        x: any shape; float16, bfloat16, float32 or float64.
        bias: ``(x.shape[dim],)`` or None.
        act: ``"linear"``, ``"relu"`` or ``"lrelu"``.
        negative_slope: the slope of ``"lrelu"`` (default 0.2); must be None (or 0) otherwise.
        scale: a positive gain applied after the activation (StyleGAN2 uses ``sqrt(2)`` with ``"lrelu"``).
        dim: the dimension of ``x`` that ``bias`` runs along.
        backend: ``"auto"``, ``"torch"`` or ``"cuda"``.

    Returns:
        A tensor of ``x``'s shape and dtype; differentiable twice (``gradgradcheck`` holds on both paths).

    Raises:
        SvrtValueError: bad arguments (:func:`check_fused_bias_act_args`) or an unknown ``backend``.
        BackendUnavailableError: ``backend="cuda"`` without CuPy or without a CUDA device.
    """
    slope, dim = check_fused_bias_act_args(x, bias, act, negative_slope, scale, dim)
    if backend == "auto":
        use_cuda = x.is_cuda and cupy_available()
    elif backend == "torch":
        use_cuda = False
    elif backend == "cuda":
        use_cuda = True
    else:
        raise SvrtValueError(f"{_OP}: unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if use_cuda:
        return fused_bias_act_cuda(x, bias, slope, float(scale), dim, act == "linear")
    return fused_bias_act_torch(x, bias, slope, float(scale), dim, act == "linear")
