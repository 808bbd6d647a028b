"""Argument checks and the compute dtype of the modulated deformable convolution, shared by every path.

:mod:`kernels.deform_conv` (the public op) and :mod:`kernels.deform_conv_cuda` (the CUDA path) both use
these, so they live apart from either: the CUDA path depends on this module, never on the dispatcher.
"""

from __future__ import annotations

import torch

from kernels.deform_conv_ref import conv_out_size
from svrt_errors import SvrtValueError

__all__ = ["check_deform_conv_args", "compute_dtype"]

_HALF = (torch.float16, torch.bfloat16)


def _pair(name: str, value: int | tuple[int, int], minimum: int) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in pair):
        raise SvrtValueError(
            f"deform_conv2d: {name}={value!r} is invalid; expected an int or a pair of ints >= {minimum}"
        )
    return pair  # type: ignore[return-value]


def check_deform_conv_args(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int | tuple[int, int],
    padding: int | tuple[int, int],
    dilation: int | tuple[int, int],
    mask: torch.Tensor | None,
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Validate :func:`deform_conv2d`'s arguments; return ``(stride, padding, dilation)`` as pairs.

    Raises:
        SvrtValueError: a tensor has the wrong rank, shape, dtype (see :func:`compute_dtype`) or device, or
            a hyper-parameter is out of range; the message says which, what was expected and what was got.
    """
    stride = _pair("stride", stride, 1)
    padding = _pair("padding", padding, 0)
    dilation = _pair("dilation", dilation, 1)
    named = {"input": input, "offset": offset, "weight": weight, "bias": bias, "mask": mask}
    for name, t in named.items():
        if t is None:
            continue
        rank = 1 if name == "bias" else 4
        if not isinstance(t, torch.Tensor) or t.dim() != rank:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise SvrtValueError(f"deform_conv2d: {name} must be a {rank}-D tensor; got {got}")
        if not t.is_floating_point():
            raise SvrtValueError(f"deform_conv2d: {name} must be a floating-point tensor; got {t.dtype}")
        if t.device != input.device:
            raise SvrtValueError(
                f"deform_conv2d: {name} is on {t.device} but input is on {input.device}; move all tensors to one device"
            )
    B, C, H, W = input.shape
    Cout, Cg, kh, kw = weight.shape
    if Cg == 0 or C % Cg or Cout % (C // Cg):
        raise SvrtValueError(
            f"deform_conv2d: weight of shape {tuple(weight.shape)} does not fit input with C_in={C}: expected "
            f"(C_out, C_in / groups, kh, kw) with groups dividing both C_in and C_out"
        )
    Ho = conv_out_size(H, kh, stride[0], padding[0], dilation[0])
    Wo = conv_out_size(W, kw, stride[1], padding[1], dilation[1])
    if Ho < 1 or Wo < 1:
        raise SvrtValueError(
            f"deform_conv2d: input of {H}x{W} pixels is too small for a {kh}x{kw} kernel with padding {padding} "
            f"and dilation {dilation} (output would be {Ho}x{Wo}); pad the input or use a smaller kernel"
        )
    K = kh * kw
    G = offset.shape[1] // (2 * K)
    if offset.shape[0] != B or offset.shape[1] % (2 * K) or G == 0 or C % G or offset.shape[2:] != (Ho, Wo):
        raise SvrtValueError(
            f"deform_conv2d: offset has shape {tuple(offset.shape)}; expected (B, 2*G*kh*kw, Ho, Wo) = "
            f"({B}, 2*G*{K}, {Ho}, {Wo}) with G (offset groups) >= 1 dividing C_in={C}"
        )
    if mask is not None and tuple(mask.shape) != (B, G * K, Ho, Wo):
        raise SvrtValueError(
            f"deform_conv2d: mask has shape {tuple(mask.shape)}; expected (B, G*kh*kw, Ho, Wo) = "
            f"({B}, {G * K}, {Ho}, {Wo}) to match the offset's {G} offset group(s)"
        )
    if bias is not None and tuple(bias.shape) != (Cout,):
        raise SvrtValueError(f"deform_conv2d: bias has shape {tuple(bias.shape)}; expected ({Cout},) (C_out)")
    compute_dtype(input, offset, weight, bias, mask)
    return stride, padding, dilation


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """The dtype every path computes in: float64 if all tensors are float64, else float32.

    float16/bfloat16 (autocast activations) and float32 (parameters) may be mixed; float64 may not be
    mixed with anything, since silently dropping to float32 would hide a precision loss.

    Raises:
        SvrtValueError: float64 mixed with another dtype, or a dtype other than float16/32/64, bfloat16.
    """
    dtypes = {t.dtype for t in tensors if t is not None}
    if torch.float64 in dtypes:
        if dtypes != {torch.float64}:
            got = ", ".join(sorted(str(d) for d in dtypes))
            raise SvrtValueError(
                f"deform_conv2d: float64 mixed with other dtypes ({got}); cast every tensor to float64 or none"
            )
        return torch.float64
    unsupported = dtypes - {*_HALF, torch.float32}
    if unsupported:
        raise SvrtValueError(
            f"deform_conv2d: unsupported dtype(s) {sorted(str(d) for d in unsupported)}; expected float16, "
            "bfloat16, float32 or float64"
        )
    return torch.float32
