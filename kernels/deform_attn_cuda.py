"""Flow-guided deformable attention on CUDA: the kernels of ``deform_attn.cu`` as a ``torch.autograd.Function``.

Forward: one kernel, one thread per (clip, offset group, pixel); nothing but the output is written (no
sampled copies of the keys and values, which the ``grid_sample`` path materialises ``N * kh * kw`` times).
Backward: one kernel that recomputes the softmax and writes ``grad_query`` and ``grad_offset`` directly and
scatters ``grad_key`` / ``grad_value`` with atomics (float32 atomics: the order of additions varies, so
those two gradients are reproducible only to rounding). Double backward is not supported.

Precision: float32 and float64 run natively; float16/bfloat16 tensors are cast to float32, computed,
and the output (each gradient) returned in ``query``'s (its tensor's) dtype. Arguments arrive validated by
:func:`kernels.deform_attn.deform_attn`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from kernels.cuda_runtime import CUDA_RUNTIME, Runtime, import_cupy, require_cuda
from svrt_errors import SvrtValueError

__all__ = ["MAX_SAMPLES", "NAMES", "SOURCE", "compute_dtype", "deform_attn_cuda"]

SOURCE = "deform_attn.cu"
MAX_SAMPLES = 64  # DA_MAX_SAMPLES in the .cu file
THREADS = 128
MAX_BLOCKS = 1 << 16  # the kernels loop (grid stride) beyond this
CTYPES = {torch.float32: "float", torch.float64: "double"}
NAMES = tuple(f"deform_attn_{k}<{c}>" for k in ("forward", "backward") for c in CTYPES.values())
_OP = "deform_attn"
_HALF = (torch.float16, torch.bfloat16)


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if every tensor is float64, else float32 (float16/bfloat16/float32 may be mixed).

    Raises:
        SvrtValueError: float64 mixed with another dtype, or an unsupported dtype.
    """
    dtypes = {t.dtype for t in tensors}
    if torch.float64 in dtypes:
        if dtypes != {torch.float64}:
            got = ", ".join(sorted(str(d) for d in dtypes))
            raise SvrtValueError(
                f"{_OP}: float64 mixed with other dtypes ({got}); cast every tensor to float64 or none"
            )
        return torch.float64
    unsupported = dtypes - {*_HALF, torch.float32}
    if unsupported:
        raise SvrtValueError(
            f"{_OP}: unsupported dtype(s) {sorted(str(d) for d in unsupported)}; expected float16, bfloat16, float32 "
            "or float64"
        )
    return torch.float32


def _launch(rt: Runtime, name: str, like: torch.Tensor, total: int, args: tuple) -> None:
    if total == 0:
        return
    blocks = min(-(-total // THREADS), MAX_BLOCKS)
    with rt.stream(like.device):
        fn = rt.function(SOURCE, NAMES, f"{name}<{CTYPES[like.dtype]}>", like.device)
        fn((blocks,), (THREADS,), tuple(rt.array(a) if isinstance(a, torch.Tensor) else a for a in args))


def _sizes(query: torch.Tensor, key: torch.Tensor, kernel_size: tuple[int, int], heads: int, groups: int):
    B, C, H, W = query.shape
    total = B * groups * H * W
    ints = (key.shape[1], C, H, W, groups, heads, *kernel_size)
    return total, (np.int64(total), *map(np.int32, ints))


def forward_kernel(rt: Runtime, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, off: torch.Tensor,
                   kernel_size: tuple[int, int], heads: int, groups: int, scale: float) -> torch.Tensor:
    """``(B, C, H, W)`` from contiguous tensors of one compute dtype."""
    out = torch.empty_like(q)
    total, sizes = _sizes(q, k, kernel_size, heads, groups)
    sc = np.float64(scale) if q.dtype == torch.float64 else np.float32(scale)
    _launch(rt, "deform_attn_forward", q, total, (q, k, v, off, out, *sizes, sc))
    return out


def backward_kernel(
    rt: Runtime, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, off: torch.Tensor, grad_out: torch.Tensor,
    kernel_size: tuple[int, int], heads: int, groups: int, scale: float, needs: tuple[bool, bool, bool, bool],
) -> tuple[torch.Tensor | None, ...]:
    """``(grad_query, grad_key, grad_value, grad_offset)``, None where ``needs`` says no."""
    need_q, need_k, need_v, need_off = needs
    gq = torch.empty_like(q) if need_q else None
    gk = torch.zeros_like(k) if need_k else None
    gv = torch.zeros_like(v) if need_v else None
    goff = torch.empty_like(off) if need_off else None
    total, sizes = _sizes(q, k, kernel_size, heads, groups)
    sc = np.float64(scale) if q.dtype == torch.float64 else np.float32(scale)
    outs = tuple(grad_out if t is None else t for t in (gq, gk, gv, goff))  # stand-ins are never written
    flags = tuple(np.int32(n) for n in needs)
    _launch(rt, "deform_attn_backward", q, total, (q, k, v, off, grad_out, *outs, *sizes, sc, *flags))
    return gq, gk, gv, goff


class _DeformAttnCuda(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        offset: torch.Tensor,
        kernel_size: tuple[int, int],
        heads: int,
        groups: int,
        scale: float,
        rt: Runtime,
    ) -> torch.Tensor:
        dtype = compute_dtype(query, key, value, offset)
        ctx.save_for_backward(query, key, value, offset)
        ctx.geometry = (kernel_size, heads, groups, scale)
        ctx.dtype, ctx.rt = dtype, rt
        with torch.autocast(query.device.type, enabled=False):
            q, k, v, off = (t.detach().to(dtype).contiguous() for t in (query, key, value, offset))
            out = forward_kernel(rt, q, k, v, off, kernel_size, heads, groups, scale)
        return out.to(query.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        tensors = ctx.saved_tensors
        needs = tuple(bool(n) for n in ctx.needs_input_grad[:4])
        with torch.autocast(grad_out.device.type, enabled=False):
            q, k, v, off = (t.detach().to(ctx.dtype).contiguous() for t in tensors)
            go = grad_out.detach().to(ctx.dtype).contiguous()
            grads = backward_kernel(ctx.rt, q, k, v, off, go, *ctx.geometry, needs)
        grads = tuple(None if g is None else g.to(t.dtype) for g, t in zip(grads, tensors, strict=True))
        return (*grads, None, None, None, None, None)


def deform_attn_cuda(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    offset: torch.Tensor,
    kernel_size: tuple[int, int],
    heads: int,
    groups: int,
    scale: float,
    *,
    runtime: Runtime | None = None,
) -> torch.Tensor:
    """The CUDA path of :func:`kernels.deform_attn.deform_attn` (validated arguments).

    Args:
        runtime: the kernel runtime; default CuPy on CUDA tensors (tests pass the CPU emulation).

    Raises:
        BackendUnavailableError: no CuPy or no CUDA device (default runtime).
        SvrtValueError: tensors not on a CUDA device while one exists (default runtime).
    """
    if runtime is None:
        require_cuda(_OP, query, "query")
        import_cupy(_OP)
        runtime = CUDA_RUNTIME
    return _DeformAttnCuda.apply(query, key, value, offset, kernel_size, heads, groups, scale, runtime)
