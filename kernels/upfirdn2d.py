"""upfirdn2d: upsample by zero insertion, pad, FIR filter, downsample (polyphase resampling as in
StyleGAN2, Karras et al., CVPR 2020; the original S-VRT carried it as ``upfirdn2d``).

For ``x`` ``(B, C, H, W)``, filter ``f`` ``(kh, kw)``, ``up = (uy, ux)``, ``down = (dy, dx)`` and
``pad = (px0, px1, py0, py1)`` (``F.pad``'s order: x before y; negative values crop), per axis::

    1. upsample:  u[j] = x[j / up] where j % up == 0, else 0          (length H * up)
    2. pad:       q = p0 zeros, u, p1 zeros                           (length L = H * up + p0 + p1)
    3. filter:    c[m] = sum_t f[k-1-t] * q[m + t]                    (a true convolution with f)
    4. downsample: out[o] = c[o * down]                               (OH = (L - k) // down + 1)

The filter is a constant (it gets no gradient); its dtype is cast to the compute dtype.

Backward. Per axis ``out[o] = sum_j f[k-1-p0+o*d-j] u[j]``, so ``dL/du[j] = sum_m g_d[m] f[k-1-p0+m-j]`` with
``g_d`` the output gradient upsampled by ``d`` (zero insertion), and ``dL/dx[i] = dL/du[i * up]``. That is
again an upfirdn2d, of ``g`` with the flipped filter, ``up = down``, ``down = up`` and pads
``(k - 1 - p0, H * up - OH * down + p0 - up + 1)`` per axis (:func:`grad_pad`); the CUDA path uses it for
gradients of every order, and ``tests/kernels/test_upfirdn2d.py`` checks it against autograd.

Paths: ``"torch"`` (zero insertion by reshape, ``F.pad``, a depthwise ``F.conv2d``, strided slicing: any
device, autograd), ``"cuda"`` (``upfirdn2d.cu``: one thread per output sample reading only the taps
that hit input samples, no upsampled copy), ``"auto"``. Dtypes: float16/bfloat16/float32 compute in
float32, float64 in float64; the output has ``x``'s dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.cuda_runtime import cupy_available
from kernels.upfirdn2d_cuda import grad_pad, out_size, upfirdn2d_cuda
from svrt_errors import SvrtValueError

__all__ = ["BACKENDS", "check_upfirdn2d_args", "grad_pad", "out_size", "upfirdn2d", "upfirdn2d_torch"]

BACKENDS = ("auto", "torch", "cuda")
_OP = "upfirdn2d"
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

Pads = tuple[int, int, int, int]


def _factor(name: str, value: int | tuple[int, int]) -> tuple[int, int]:
    """An int or ``(y, x)`` pair of factors >= 1."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair)):
        raise SvrtValueError(f"{_OP}: {name}={value!r} is invalid; expected an int >= 1 or a (y, x) pair of them")
    return int(pair[0]), int(pair[1])


def _pads(value: int | tuple[int, ...]) -> Pads:
    """``(px0, px1, py0, py1)`` from an int, a ``(p0, p1)`` pair for both axes, or four values."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * 4
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if len(value) == 2:
            return (value[0], value[1], value[0], value[1])
        if len(value) == 4:
            return tuple(value)  # type: ignore[return-value]
    raise SvrtValueError(
        f"{_OP}: pad={value!r} is invalid; expected an int, (p0, p1) for both axes, or (px0, px1, py0, py1)"
    )


def check_upfirdn2d_args(
    x: torch.Tensor, f: torch.Tensor, up: int | tuple[int, int], down: int | tuple[int, int], pad: int | tuple
) -> tuple[tuple[int, int], tuple[int, int], Pads]:
    """Validate :func:`upfirdn2d`'s arguments; return ``(up, down, pad)`` normalised.

    Raises:
        SvrtValueError: a tensor of the wrong type, rank, dtype or device, bad factors or pads, or an output
            with no samples (the message gives the sizes).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.dtype not in _FLOATS:
        got = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise SvrtValueError(f"{_OP}: x must be a (B, C, H, W) float16/bfloat16/float32/float64 tensor, got {got}")
    if not isinstance(f, torch.Tensor) or f.dim() != 2 or f.dtype not in _FLOATS or 0 in f.shape:
        got = f"{f.dtype} of shape {tuple(f.shape)}" if isinstance(f, torch.Tensor) else type(f).__name__
        raise SvrtValueError(f"{_OP}: the filter must be a non-empty (kh, kw) floating-point tensor, got {got}")
    if f.device != x.device:
        raise SvrtValueError(f"{_OP}: the filter is on {f.device} but x is on {x.device}; use one device")
    up2, down2, pads = _factor("up", up), _factor("down", down), _pads(pad)
    (uy, ux), (dy, dx) = up2, down2
    px0, px1, py0, py1 = pads
    kh, kw = f.shape
    H, W = x.shape[2:]
    OH, OW = out_size(H, uy, dy, py0, py1, kh), out_size(W, ux, dx, px0, px1, kw)
    if OH < 1 or OW < 1 or H * uy + py0 + py1 < kh or W * ux + px0 + px1 < kw:
        raise SvrtValueError(
            f"{_OP}: an input of {H}x{W} upsampled by ({uy}, {ux}) and padded by {pads} is smaller than the "
            f"{kh}x{kw} filter (no output sample); pad more or use a smaller filter"
        )
    return up2, down2, pads


def upfirdn2d_torch(
    x: torch.Tensor, f: torch.Tensor, up: tuple[int, int], down: tuple[int, int], pad: Pads
) -> torch.Tensor:
    """The plain-torch path (validated arguments; module docstring): ``(B, C, OH, OW)`` in ``x``'s dtype."""
    (uy, ux), (dy, dx) = up, down
    px0, px1, py0, py1 = pad
    B, C, H, W = x.shape
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.autocast(x.device.type, enabled=False):
        z = x.to(compute).reshape(B * C, 1, H, 1, W, 1)  # (B C) 1 H 1 W 1
        z = F.pad(z, [0, ux - 1, 0, 0, 0, uy - 1])  # zero insertion after every sample
        z = z.reshape(B * C, 1, H * uy, W * ux)
        z = F.pad(z, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
        z = z[:, :, max(-py0, 0) : z.shape[2] - max(-py1, 0), max(-px0, 0) : z.shape[3] - max(-px1, 0)]
        w = torch.flip(f.to(compute), [0, 1]).view(1, 1, *f.shape)  # conv2d correlates: flip for a convolution
        z = F.conv2d(z, w)[:, :, ::dy, ::dx]
        return z.reshape(B, C, z.shape[2], z.shape[3]).to(x.dtype)


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    *,
    up: int | tuple[int, int] = 1,
    down: int | tuple[int, int] = 1,
    pad: int | tuple[int, ...] = 0,
    backend: str = "auto",
) -> torch.Tensor:
    """Upsample, pad, FIR-filter and downsample ``x`` (module docstring).

    Args:
        x: ``(B, C, H, W)``.
        f: ``(kh, kw)`` filter (a separable filter is the outer product of its 1-D taps).
        up, down: an int or a ``(y, x)`` pair of factors >= 1.
        pad: an int, ``(p0, p1)`` for both axes, or ``(px0, px1, py0, py1)``; negative values crop.
        backend: ``"auto"``, ``"torch"`` or ``"cuda"``.

    Returns:
        ``(B, C, OH, OW)`` in ``x``'s dtype, ``OH = (H * uy + py0 + py1 - kh) // dy + 1`` (``OW`` alike);
        differentiable (with respect to ``x``) any number of times on both paths.

    Raises:
        SvrtValueError: bad arguments (:func:`check_upfirdn2d_args`) or an unknown ``backend``.
        BackendUnavailableError: ``backend="cuda"`` without CuPy or without a CUDA device.
    """
    up2, down2, pads = check_upfirdn2d_args(x, f, up, down, pad)
    if backend == "auto":
        use_cuda = x.is_cuda and cupy_available()
    elif backend == "torch":
        use_cuda = False
    elif backend == "cuda":
        use_cuda = True
    else:
        raise SvrtValueError(f"{_OP}: unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if use_cuda:
        return upfirdn2d_cuda(x, f, up2, down2, pads)
    return upfirdn2d_torch(x, f, up2, down2, pads)
