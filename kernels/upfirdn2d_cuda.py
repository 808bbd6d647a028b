"""upfirdn2d on CUDA: the kernel of ``upfirdn2d.cu`` as an autograd Function whose backward is the same
Function (flipped filter, up and down swapped, :func:`grad_pad`'s pads; derived in
:mod:`kernels.upfirdn2d`), so gradients of any order exist. Arguments arrive validated by
:func:`kernels.upfirdn2d.upfirdn2d`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import FunctionCtx

from kernels.cuda_runtime import CUDA_RUNTIME, Runtime, import_cupy, require_cuda

__all__ = ["NAMES", "SOURCE", "grad_pad", "out_size", "upfirdn2d_cuda"]

SOURCE = "upfirdn2d.cu"
THREADS = 256
MAX_BLOCKS = 1 << 16  # the kernel loops (grid stride) beyond this
CTYPES = {torch.float32: "float", torch.float64: "double", torch.float16: "half_t", torch.bfloat16: "bf16_t"}
NAMES = tuple(f"upfirdn2d_kernel<{c}>" for c in CTYPES.values())
_OP = "upfirdn2d"


def out_size(size: int, up: int, down: int, p0: int, p1: int, k: int) -> int:
    """Output samples of one axis: ``(size * up + p0 + p1 - k) // down + 1``."""
    return (size * up + p0 + p1 - k) // down + 1


def grad_pad(size: int, out: int, up: int, down: int, p0: int, k: int) -> tuple[int, int]:
    """Pads ``(p0', p1')`` of one axis of the backward upfirdn2d (:mod:`kernels.upfirdn2d`)."""
    return k - 1 - p0, size * up - out * down + p0 - up + 1


def forward_kernel(
    rt: Runtime, x: torch.Tensor, f: torch.Tensor, up: tuple[int, int], down: tuple[int, int],
    pad: tuple[int, int, int, int],
) -> torch.Tensor:
    """``(B, C, OH, OW)`` for contiguous ``x`` and a contiguous compute-dtype filter ``f``."""
    (uy, ux), (dy, dx) = up, down
    px0, px1, py0, py1 = pad
    B, C, H, W = x.shape
    kh, kw = f.shape
    OH, OW = out_size(H, uy, dy, py0, py1, kh), out_size(W, ux, dx, px0, px1, kw)
    out = torch.empty(B, C, OH, OW, dtype=x.dtype, device=x.device)
    total = out.numel()
    if total == 0:
        return out
    blocks = min(-(-total // THREADS), MAX_BLOCKS)
    ints = (H, W, OH, OW, uy, ux, dy, dx, py0, px0, kh, kw)
    with rt.stream(x.device):
        fn = rt.function(SOURCE, NAMES, f"upfirdn2d_kernel<{CTYPES[x.dtype]}>", x.device)
        fn((blocks,), (THREADS,), (rt.array(x), rt.array(f), rt.array(out), np.int64(total), *map(np.int32, ints)))
    return out


class _Upfirdn2dCuda(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: torch.Tensor,
        f: torch.Tensor,
        up: tuple[int, int],
        down: tuple[int, int],
        pad: tuple[int, int, int, int],
        rt: Runtime,
    ) -> torch.Tensor:
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        fc = f.detach().to(compute).contiguous()
        out = forward_kernel(rt, x.detach().contiguous(), fc, up, down, pad)
        (uy, ux), (dy, dx) = up, down
        px0, _, py0, _ = pad
        (H, W), (OH, OW), (kh, kw) = x.shape[2:], out.shape[2:], f.shape
        gy, gx = grad_pad(H, OH, uy, dy, py0, kh), grad_pad(W, OW, ux, dx, px0, kw)
        ctx.back = (torch.flip(fc, [0, 1]), down, up, (*gx, *gy), rt)
        ctx.x_dtype = x.dtype
        return out

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if not ctx.needs_input_grad[0]:
            return (None,) * 6
        flipped, up, down, pad, rt = ctx.back
        grad_x = _Upfirdn2dCuda.apply(grad.to(ctx.x_dtype), flipped, up, down, pad, rt)
        return grad_x, None, None, None, None, None


def upfirdn2d_cuda(
    x: torch.Tensor,
    f: torch.Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    pad: tuple[int, int, int, int],
    *,
    runtime: Runtime | None = None,
) -> torch.Tensor:
    """The CUDA path of :func:`kernels.upfirdn2d.upfirdn2d` (validated, normalised arguments).

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
    return _Upfirdn2dCuda.apply(x, f, up, down, pad, runtime)
