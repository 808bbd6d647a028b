"""Modulated deformable convolution: the public op, validating its arguments and choosing a path.

Paths (chosen in :func:`deform_conv2d`):

- ``"reference"``: the pure-torch implementation in :mod:`kernels.deform_conv_ref` (CPU or any device,
  gradients through autograd);
- ``"cuda"``: the CUDA kernels of ``deform_conv.cu`` compiled through CuPy, in
  :mod:`kernels.deform_conv_cuda` (CUDA tensors; needs the ``cuda`` extra);
- ``"auto"``: ``"cuda"`` for CUDA tensors when CuPy imports, otherwise ``"reference"``.

Semantics equal ``torchvision.ops.deform_conv2d`` (see :mod:`kernels.deform_conv_ref`).
"""

from __future__ import annotations

import contextlib

import torch

from kernels.deform_conv_args import check_deform_conv_args, compute_dtype
from kernels.deform_conv_ref import deform_conv2d_reference
from svrt_errors import SvrtValueError

__all__ = ["BACKENDS", "check_deform_conv_args", "compute_dtype", "deform_conv2d"]

BACKENDS = ("auto", "reference", "cuda")


def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Modulated deformable conv2d with torchvision's signature and semantics.

    Output pixel ``(i, j)``, tap ``k = (ki, kj)`` of offset group ``g`` samples the input bilinearly (zero
    outside the image) at ``(i*stride_h - pad_h + ki*dil_h + dy, j*stride_w - pad_w + kj*dil_w + dx)`` with
    ``dy = offset[:, 2*(g*K + k)]``, ``dx = offset[:, 2*(g*K + k) + 1]`` (``K = kh*kw``), times
    ``mask[:, g*K + k]`` when given; input channels form ``G`` consecutive offset groups.

    Args:
        input: ``(B, C_in, H, W)``.
        offset: ``(B, 2*G*kh*kw, Ho, Wo)``.
        weight: ``(C_out, C_in / groups, kh, kw)``.
        bias: ``(C_out,)`` or None.
        stride, padding, dilation: an int or an ``(h, w)`` pair.
        mask: ``(B, G*kh*kw, Ho, Wo)`` or None (no modulation).
        backend: ``"auto"`` (``"cuda"`` for CUDA tensors when CuPy is installed, else ``"reference"``),
            ``"reference"`` (pure torch, any device) or ``"cuda"`` (CuPy kernels; CUDA tensors only).

    Precision (both paths): float16/bfloat16 tensors are computed in float32 with autocast disabled (in
    bfloat16 the sample positions themselves would be rounded to whole pixels beyond 128) and the output
    is returned in ``input``'s dtype; float32 stays float32 (the GEMMs follow torch's TF32 setting);
    float64 must not be mixed with other dtypes. Both paths are differentiable; ``"cuda"`` only once
    (no double backward).

    Returns:
        ``(B, C_out, Ho, Wo)``.

    Raises:
        SvrtValueError: bad shapes, dtypes (see :func:`compute_dtype`), devices or hyper-parameters, or an
            unknown ``backend``.
        BackendUnavailableError: ``backend="cuda"`` without CuPy installed.
    """
    stride, padding, dilation = check_deform_conv_args(input, offset, weight, bias, stride, padding, dilation, mask)
    if backend == "auto":
        from kernels import deform_conv_cuda

        use_cuda = input.is_cuda and deform_conv_cuda.cupy_available()
    elif backend == "reference":
        use_cuda = False
    elif backend == "cuda":
        use_cuda = True
    else:
        raise SvrtValueError(f"deform_conv2d: unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if use_cuda:
        from kernels.deform_conv_cuda import deform_conv2d_cuda

        return deform_conv2d_cuda(input, offset, weight, bias, stride, padding, dilation, mask)
    dtype = compute_dtype(input, offset, weight, bias, mask)
    cast = [None if t is None else t.to(dtype) for t in (input, offset, weight, bias, mask)]
    # meta tensors (shape and memory tracing) have no autocast to switch off
    off = torch.autocast(input.device.type, enabled=False) if torch.amp.is_autocast_available(input.device.type) \
        else contextlib.nullcontext()
    with off:
        out = deform_conv2d_reference(*cast[:4], stride, padding, dilation, cast[4])
    return out.to(input.dtype)
