"""Modulated deformable convolution on CUDA: the kernels of ``deform_conv.cu`` (through CuPy) plus cuBLAS.

Forward, per chunk of the batch: a deformable im2col kernel writes the columns ``(Bc, C_in*K, Ho*Wo)``
(bilinear samples times the mask, ``K = kh*kw``), then per weight group ``out = weight @ columns``
(``torch.matmul``). Backward: the columns are recomputed (not kept from the forward, to save memory);
``grad_weight = grad_out @ columns^T`` summed over the batch; ``grad_columns = weight^T @ grad_out``
feeds one kernel that scatters ``grad_input`` (atomics) and writes ``grad_offset`` and ``grad_mask``.
The batch is split into chunks whose column buffer holds at most ``max_column_elements`` elements.

Precision: float32 and float64 run natively. float16/bfloat16 tensors (autocast) are cast to float32,
computed in float32 (autocast is disabled inside), and the output is returned in ``input``'s dtype;
each gradient is returned in its tensor's dtype. With a float16/bfloat16 ``input`` the GEMMs may use
TF32 tensor cores (10-bit mantissa, finer than the half-precision output; sampling positions and
bilinear weights stay float32); with float32 input they follow torch's TF32 setting, so float32 stays
float32. Double backward is not supported.

CuPy is optional: it is imported on first use; without it :class:`BackendUnavailableError` says how to
install it. Kernels run on torch's current stream; tensors reach CuPy through DLPack without copies.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from kernels.deform_conv_args import check_deform_conv_args, compute_dtype
from svrt_errors import BackendUnavailableError, SvrtValueError

__all__ = ["MAX_COLUMN_ELEMENTS", "cupy_available", "deform_conv2d_cuda"]

cp: Any = None  # the cupy module once imported; stays None while CuPy is absent
_cupy_missing: str | None = None  # the ImportError message once an import failed

CUDA_SOURCE = Path(__file__).with_name("deform_conv.cu")
MAX_COLUMN_ELEMENTS = 1 << 28  # 1 GiB of float32 columns per chunk
_CTYPES = {torch.float32: "float", torch.float64: "double"}
_KERNELS = ("deform_im2col", "deform_col2im")
_THREADS = 256
_MAX_BLOCKS = 1 << 20  # the kernels loop (grid stride) over anything beyond this
_INSTALL_HINT = (
    'install CuPy with pip install "svrt[cuda]" (or "svrt[cuda13]" on a CUDA 13 stack), '
    "or pass backend='reference'"
)


def _import_cupy() -> Any:
    global cp, _cupy_missing
    if cp is None:
        if _cupy_missing is None:
            try:
                import cupy
            except ImportError as exc:
                _cupy_missing = str(exc)
            else:
                cp = cupy
                return cp
        raise BackendUnavailableError(
            f"deform_conv2d: backend 'cuda' needs CuPy, which cannot be imported ({_cupy_missing}); {_INSTALL_HINT}"
        )
    return cp


def cupy_available() -> bool:
    """Whether CuPy imports (the CUDA path's only extra dependency)."""
    try:
        _import_cupy()
    except BackendUnavailableError:
        return False
    return True


@functools.cache
def _module(device_index: int) -> Any:
    names = [f"{kernel}<{ctype}>" for kernel in _KERNELS for ctype in _CTYPES.values()]
    return _import_cupy().RawModule(
        code=CUDA_SOURCE.read_text(), options=("-std=c++17",), name_expressions=names
    )


def _kernel(name: str, like: torch.Tensor) -> Any:
    return _module(like.device.index).get_function(f"{name}<{_CTYPES[like.dtype]}>")


_STREAMS: dict[tuple[int, int], Any] = {}  # (device, stream pointer) -> CuPy's wrapper of that torch stream


def _cupy_stream(device: torch.device) -> Any:
    """CuPy's handle on torch's current stream of ``device``, made once per stream."""
    stream = torch.cuda.current_stream(device)
    key = (device.index, stream.cuda_stream)
    if key not in _STREAMS:
        if len(_STREAMS) > 64:
            _STREAMS.clear()
        wrapped = None
        if hasattr(cp.cuda.Stream, "from_external"):  # CuPy >= 14: the CUDA stream protocol
            try:
                wrapped = cp.cuda.Stream.from_external(stream)
            except (TypeError, ValueError, AttributeError):
                wrapped = None
            if wrapped is not None and wrapped.ptr != stream.cuda_stream:
                wrapped = None
        if wrapped is None:  # CuPy 13, or a torch stream without the protocol
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in CuPy 14 only
                wrapped = cp.cuda.ExternalStream(stream.cuda_stream, device.index)
        _STREAMS[key] = wrapped
    return _STREAMS[key]


@contextlib.contextmanager
def _on_torch_stream(device: torch.device) -> Iterator[None]:
    with cp.cuda.Device(device.index), _cupy_stream(device):
        yield


def _launch(kernel: Any, total: int, args: tuple[Any, ...]) -> None:
    blocks = min(-(-total // _THREADS), _MAX_BLOCKS)
    kernel((blocks,), (_THREADS,), args)


def _dl(t: torch.Tensor) -> Any:
    return cp.from_dlpack(t.detach())


@dataclass(frozen=True)
class _Geometry:
    """Sizes shared by every launch of one call."""

    C: int
    H: int
    W: int
    G: int
    kh: int
    kw: int
    Ho: int
    Wo: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @property
    def K(self) -> int:
        return self.kh * self.kw

    @property
    def N(self) -> int:
        return self.Ho * self.Wo

    def kernel_args(self) -> tuple[np.int32, ...]:
        values = (self.C, self.H, self.W, self.G, self.kh, self.kw, self.Ho, self.Wo)
        return tuple(np.int32(v) for v in (*values, *self.stride, *self.padding, *self.dilation))

    def chunks(self, batch: int, max_column_elements: int) -> Iterator[tuple[int, int]]:
        per_sample = self.C * self.K * self.N
        step = max(1, max_column_elements // per_sample)
        for b0 in range(0, batch, step):
            yield b0, min(batch, b0 + step)


def _im2col(x: torch.Tensor, off: torch.Tensor, msk: torch.Tensor | None, geo: _Geometry) -> torch.Tensor:
    """Columns ``(Bc, C*K, Ho*Wo)`` of one chunk; every element is written by the kernel."""
    bc = x.shape[0]
    cols = x.new_empty(bc, geo.C * geo.K, geo.N)
    total = bc * geo.G * geo.K * geo.N
    with _on_torch_stream(x.device):
        args = (_dl(x), _dl(off), _dl(off if msk is None else msk), _dl(cols), np.int64(total))
        _launch(_kernel("deform_im2col", x), total, (*args, *geo.kernel_args(), np.int32(msk is not None)))
    return cols


def _col2im(
    x: torch.Tensor,
    off: torch.Tensor,
    msk: torch.Tensor | None,
    grad_cols: torch.Tensor,
    grad_x: torch.Tensor | None,
    grad_off: torch.Tensor | None,
    grad_msk: torch.Tensor | None,
    geo: _Geometry,
) -> None:
    """Accumulate ``grad_x`` (zero-filled by the caller) and write ``grad_off``, ``grad_msk`` of one chunk.

    Neighbouring lanes that share corners combine their ``grad_x`` updates (fewer atomics; see
    ``deform_conv.cu``), so the order of float additions into ``grad_x`` is not the reference's.
    """
    total = x.shape[0] * geo.G * geo.K * geo.N
    with _on_torch_stream(x.device):
        gcols = _dl(grad_cols)  # also stands in for the outputs not wanted (never touched then)
        args = (
            _dl(x),
            _dl(off),
            _dl(off if msk is None else msk),
            gcols,
            gcols if grad_x is None else _dl(grad_x),
            gcols if grad_off is None else _dl(grad_off),
            gcols if grad_msk is None else _dl(grad_msk),
            np.int64(total),
            *geo.kernel_args(),
            np.int32(msk is not None),
            np.int32(grad_x is not None),
            np.int32(grad_off is not None),
            np.int32(grad_msk is not None),
        )
        _launch(_kernel("deform_col2im", x), total, args)


@contextlib.contextmanager
def _gemm_math(input_dtype: torch.dtype) -> Iterator[None]:
    """TF32 GEMMs for half-precision inputs (module docstring); torch's setting otherwise. The flag is
    process-wide (``torch.backends.cuda.matmul.allow_tf32``): it is set for this block only and restored."""
    if input_dtype not in (torch.float16, torch.bfloat16):
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def _prepare(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.detach().to(dtype).contiguous()


class _DeformConv2dCuda(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        input: torch.Tensor,
        offset: torch.Tensor,
        mask: torch.Tensor | None,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        geo: _Geometry,
        max_column_elements: int,
    ) -> torch.Tensor:
        dtype = compute_dtype(input, offset, mask, weight, bias)
        ctx.save_for_backward(input, offset, mask, weight)
        ctx.geo, ctx.dtype, ctx.max_column_elements = geo, dtype, max_column_elements
        ctx.bias_dtype = None if bias is None else bias.dtype
        B, Cout = input.shape[0], weight.shape[0]
        groups = geo.C // weight.shape[1]
        with torch.autocast("cuda", enabled=False), _gemm_math(input.dtype):
            x, off, msk, w, b = (_prepare(t, dtype) for t in (input, offset, mask, weight, bias))
            w = w.view(groups, Cout // groups, -1)  # rows: out channel; columns: (in channel, tap)
            parts = []
            for b0, b1 in geo.chunks(B, max_column_elements):
                cols = _im2col(x[b0:b1], off[b0:b1], None if msk is None else msk[b0:b1], geo)
                parts.append(torch.matmul(w, cols.view(b1 - b0, groups, -1, geo.N)))  # Bc groups Cout/groups N
                del cols
            out = torch.cat(parts) if len(parts) > 1 else parts[0] if parts else x.new_empty(0)
            out = out.view(B, Cout, geo.Ho, geo.Wo)
            if b is not None:
                out = out + b.view(1, Cout, 1, 1)
        return out.to(input.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        input, offset, mask, weight = ctx.saved_tensors
        geo, dtype = ctx.geo, ctx.dtype
        need_x, need_off, need_msk, need_w, need_b = ctx.needs_input_grad[:5]
        need_msk = need_msk and mask is not None
        B, Cout = input.shape[0], weight.shape[0]
        groups = geo.C // weight.shape[1]
        with torch.autocast("cuda", enabled=False), _gemm_math(input.dtype):
            x, off, msk, w = (_prepare(t, dtype) for t in (input, offset, mask, weight))
            go = grad_out.detach().to(dtype).contiguous()
            grad_x = torch.zeros_like(x) if need_x else None
            grad_off = torch.empty_like(off) if need_off else None
            grad_msk = torch.empty_like(msk) if need_msk else None
            grad_w = w.new_zeros(groups, Cout // groups, w.shape[1] * geo.K) if need_w else None
            w_t = w.view(groups, Cout // groups, -1).transpose(1, 2)  # groups (C_in/groups * K) Cout/groups
            for b0, b1 in geo.chunks(B, ctx.max_column_elements):
                go_c = go[b0:b1].view(b1 - b0, groups, Cout // groups, geo.N)
                chunk_msk = None if msk is None else msk[b0:b1]
                if need_w:
                    cols = _im2col(x[b0:b1], off[b0:b1], chunk_msk, geo).view(b1 - b0, groups, -1, geo.N)
                    grad_w += torch.matmul(go_c, cols.transpose(2, 3)).sum(0)
                    del cols
                if need_x or need_off or need_msk:
                    grad_cols = torch.matmul(w_t, go_c).contiguous()  # Bc groups (C_in/groups * K) N
                    _col2im(
                        x[b0:b1],
                        off[b0:b1],
                        chunk_msk,
                        grad_cols,
                        None if grad_x is None else grad_x[b0:b1],
                        None if grad_off is None else grad_off[b0:b1],
                        None if grad_msk is None else grad_msk[b0:b1],
                        geo,
                    )
                    del grad_cols
            grad_b = go.sum((0, 2, 3)) if need_b else None
        return (
            None if grad_x is None else grad_x.to(input.dtype),
            None if grad_off is None else grad_off.to(offset.dtype),
            None if grad_msk is None else grad_msk.to(mask.dtype),
            None if grad_w is None else grad_w.view_as(weight).to(weight.dtype),
            None if grad_b is None else grad_b.to(ctx.bias_dtype),
            None,
            None,
        )


def deform_conv2d_cuda(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: torch.Tensor | None = None,
    *,
    max_column_elements: int = MAX_COLUMN_ELEMENTS,
) -> torch.Tensor:
    """Modulated deformable conv2d on CUDA tensors (arguments and shapes as :func:`kernels.deform_conv2d`).

    Args:
        max_column_elements: the column buffer of one chunk of the batch holds at most this many elements
            (one sample at least, however large).

    Returns:
        ``(B, C_out, Ho, Wo)`` in ``input``'s dtype.

    Raises:
        SvrtValueError: bad arguments (see :func:`kernels.deform_conv_args.check_deform_conv_args`), tensors not on
            a CUDA device, or float64 mixed with other dtypes.
        BackendUnavailableError: CuPy is not installed.
    """
    stride, padding, dilation = check_deform_conv_args(input, offset, weight, bias, stride, padding, dilation, mask)
    if not input.is_cuda:
        raise SvrtValueError(
            f"deform_conv2d: backend 'cuda' needs CUDA tensors; got input on {input.device}; move the tensors "
            "with .cuda() or pass backend='reference'"
        )
    if max_column_elements < 1:
        raise SvrtValueError(f"deform_conv2d: max_column_elements={max_column_elements} must be >= 1")
    _import_cupy()
    _, C, H, W = input.shape
    _, _, kh, kw = weight.shape
    Ho, Wo = offset.shape[2:]
    geo = _Geometry(C, H, W, offset.shape[1] // (2 * kh * kw), kh, kw, Ho, Wo, stride, padding, dilation)
    return _DeformConv2dCuda.apply(input, offset, mask, weight, bias, geo, max_column_elements)
