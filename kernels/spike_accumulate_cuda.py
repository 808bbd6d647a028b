"""Learnable spike accumulator on CUDA: the kernels of ``spike_accumulate.cu`` as a ``torch.autograd.Function``.

Forward: one launch, grid ``(ceil(F / 256), bins)`` with ``F = H * Wb`` packed bytes per frame and one
grid row per bin ``(b, t, k)`` (grid-stride beyond 65535 bins); each thread turns one packed byte of
every frame of its bin's range into 8 output values (the ``.cu`` file explains the stores). Traffic:
each frame byte is read once per bin that holds it (a bin range's frames are adjacent) and each output
value is written once, so the kernel moves ``~(bits read + output)`` bytes; the benchmark reports its
share of the device's copy bandwidth.

Backward (``gamma`` only; the bits and ranges carry none): the recurrence again, with the derivative
carried alongside, dotted with ``grad_out``; one partial sum per (bin, block), summed here in float64,
so the result is deterministic. Double backward is not supported.

Arguments arrive validated by :func:`kernels.spike_accumulate.spike_accumulate`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from kernels.cuda_runtime import CUDA_RUNTIME, Runtime, import_cupy, require_cuda

__all__ = ["NAMES", "SOURCE", "STAGED_STORES", "spike_accumulate_cuda"]

SOURCE = "spike_accumulate.cu"
THREADS = 256  # SPIKE_THREADS in the .cu file
MAX_GRID_Y = 65535
STAGED_STORES = True  # default store path for whole-byte widths (bench_ops.py times both)
CTYPES = {torch.float32: "float", torch.float64: "double", torch.float16: "half_t", torch.bfloat16: "bf16_t"}
NAMES = tuple(
    [f"spike_accumulate_forward<{c}, {s}>" for c in CTYPES.values() for s in ("false", "true")]
    + [f"spike_accumulate_backward<{c}>" for c in CTYPES.values()]
)
_OP = "spike_accumulate"


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _launch(
    rt: Runtime, name: str, bits: torch.Tensor, ranges: torch.Tensor, tensors: tuple[torch.Tensor, ...], width: int
) -> int:
    """Launch ``name`` over every bin; returns the grid's x size (0: nothing to do, nothing launched)."""
    B, S, H, Wb = bits.shape
    T, K = ranges.shape[1:3]
    n_bins, frame_bytes = B * T * K, H * Wb
    if n_bins == 0 or frame_bytes == 0:
        return 0
    grid = (-(-frame_bytes // THREADS), min(n_bins, MAX_GRID_Y))
    scalars = (np.int64(n_bins), np.int32(T), np.int32(K), np.int32(S), np.int32(H), np.int32(Wb), np.int32(width))
    with rt.stream(bits.device):
        fn = rt.function(SOURCE, NAMES, name, bits.device)
        fn(grid, (THREADS,), (rt.array(bits), rt.array(ranges), *(rt.array(t) for t in tensors), *scalars))
    return grid[0]


def forward_kernel(
    rt: Runtime, bits: torch.Tensor, ranges: torch.Tensor, gamma: torch.Tensor, width: int, dtype: torch.dtype,
    staged: bool,
) -> torch.Tensor:
    """``(B, T, K, H, W)`` in ``dtype``; ``bits``, ``ranges`` contiguous, ``gamma`` contiguous in the compute dtype."""
    B, _, H, _ = bits.shape
    T, K = ranges.shape[1:3]
    out = torch.empty(B, T, K, H, width, dtype=dtype, device=bits.device)
    name = f"spike_accumulate_forward<{CTYPES[dtype]}, {'true' if staged else 'false'}>"
    _launch(rt, name, bits, ranges, (gamma, out), width)
    return out


def gamma_grad_kernel(
    rt: Runtime, bits: torch.Tensor, ranges: torch.Tensor, gamma: torch.Tensor, grad_out: torch.Tensor, width: int
) -> torch.Tensor:
    """``dL/dgamma`` ``(K,)`` float64 from ``grad_out`` (contiguous, the output's dtype)."""
    B, _, H, Wb = bits.shape
    T, K = ranges.shape[1:3]
    blocks = -(-(H * Wb) // THREADS)
    partial = torch.empty(B * T * K, blocks, dtype=gamma.dtype, device=bits.device)
    name = f"spike_accumulate_backward<{CTYPES[grad_out.dtype]}>"
    if _launch(rt, name, bits, ranges, (gamma, grad_out, partial), width) == 0:
        return torch.zeros(K, dtype=torch.float64, device=bits.device)
    return partial.view(B, T, K, blocks).sum((0, 1, 3), dtype=torch.float64)  # B T K blocks -> K


class _SpikeAccumulateCuda(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        gamma: torch.Tensor,
        bits: torch.Tensor,
        ranges: torch.Tensor,
        width: int,
        dtype: torch.dtype,
        staged: bool,
        rt: Runtime,
    ) -> torch.Tensor:
        bits, ranges = bits.detach().contiguous(), ranges.detach().contiguous()
        g = gamma.detach().to(_acc_dtype(dtype)).contiguous()
        ctx.save_for_backward(bits, ranges, g)
        ctx.width, ctx.dtype, ctx.rt, ctx.gamma_dtype = width, dtype, rt, gamma.dtype
        return forward_kernel(rt, bits, ranges, g, width, dtype, staged)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_gamma = None
        if ctx.needs_input_grad[0]:
            bits, ranges, g = ctx.saved_tensors
            go = grad_out.detach().to(ctx.dtype).contiguous()
            grad_gamma = gamma_grad_kernel(ctx.rt, bits, ranges, g, go, ctx.width).to(ctx.gamma_dtype)
        return grad_gamma, None, None, None, None, None, None


def spike_accumulate_cuda(
    bits: torch.Tensor,
    ranges: torch.Tensor,
    gamma: torch.Tensor,
    width: int,
    dtype: torch.dtype,
    *,
    staged: bool | None = None,
    runtime: Runtime | None = None,
) -> torch.Tensor:
    """The CUDA path of :func:`kernels.spike_accumulate.spike_accumulate` (validated arguments).

    Args:
        width: output width ``W``; dtype: output dtype (float16/bfloat16/float32/float64).
        staged: store through shared memory (default :data:`STAGED_STORES`); only for whole-byte widths.
        runtime: the kernel runtime; default CuPy on CUDA tensors (tests pass the CPU emulation).

    Raises:
        BackendUnavailableError: no CuPy or no CUDA device (default runtime).
        SvrtValueError: tensors not on a CUDA device while one exists (default runtime).
    """
    if runtime is None:
        require_cuda(_OP, bits, "bits")
        import_cupy(_OP)
        runtime = CUDA_RUNTIME
    staged = STAGED_STORES if staged is None else staged
    return _SpikeAccumulateCuda.apply(gamma, bits, ranges, width, dtype, staged, runtime)
