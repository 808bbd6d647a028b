"""Flow-guided deformable attention: the public op, its validation, and its pure-torch (``grid_sample``) path.

Guided deformable attention (Liang et al., "Recurrent Video Restoration Transformer with Guided Deformable
Attention" (RVRT), NeurIPS 2022): every query pixel attends to a few keys/values sampled bilinearly, in
each of ``N`` neighbouring frames, at offsets around a ``kh x kw`` window that an offset network places
along the optical flow. For query pixel ``(i, j)`` of clip ``b``, head ``h`` (of ``M``; ``D = C / M``
channels) in offset group ``g`` (of ``G``; group ``g`` holds heads ``[g*M/G, (g+1)*M/G)``), and sample
``s = (n, p)``, ``p = (pi, pj)`` a window tap::

    pos_s = (i - kh//2 + pi + dy, j - kw//2 + pj + dx),   (dy, dx) = offset[b, ((n*G + g)*P + p)*2 + (0, 1), i, j]
    l_s   = scale * sum_d query[b, h*D + d, i, j] * key[b, n, h*D + d](pos_s)
    out[b, h*D + d, i, j] = sum_s softmax_s(l)_s * value[b, n, h*D + d](pos_s)

with ``P = kh * kw`` taps, the softmax over all ``N * P`` samples, and ``scale = D ** -0.5`` by default.
Sampling is bilinear with zero outside the image (DCN's and ``grid_sample``'s ``padding_mode="zeros"``),
so, as in RVRT, a sample that falls outside still takes part in the softmax with a zero key. Keys and
values of a head are sampled at the same positions (RVRT's implementation splits the offset groups over
the concatenated key+value channels instead; the formulation here is the one its paper describes).

Gradients: ``query``, ``key``, ``value`` and ``offset`` (the sampling positions) all carry them.

Paths: ``"torch"`` (``grid_sample`` per (clip, frame, group), any device, autograd; memory grows with the
``N * P`` sampled copies of the keys and values), ``"cuda"`` (``deform_attn.cu``: no sampled copies; one
thread per (clip, group, pixel)), ``"auto"``. Dtypes as :func:`kernels.deform_conv.compute_dtype`:
float16/bfloat16 tensors compute in float32 (sample positions in bfloat16 would be rounded to whole
pixels beyond 128), float64 is never mixed with other dtypes; the output has ``query``'s dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.cuda_runtime import cupy_available
from kernels.deform_attn_cuda import MAX_SAMPLES, compute_dtype, deform_attn_cuda
from svrt_errors import SvrtValueError

__all__ = ["BACKENDS", "MAX_SAMPLES", "check_deform_attn_args", "deform_attn", "deform_attn_torch"]

BACKENDS = ("auto", "torch", "cuda")
_OP = "deform_attn"


def _kernel_size(value: int | tuple[int, int]) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair)):
        raise SvrtValueError(f"{_OP}: kernel_size={value!r} is invalid; expected an int >= 1 or a (kh, kw) pair")
    return int(pair[0]), int(pair[1])


def check_deform_attn_args(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    offset: torch.Tensor,
    kernel_size: int | tuple[int, int],
    heads: int,
    groups: int,
    scale: float | None,
) -> tuple[tuple[int, int], float]:
    """Validate :func:`deform_attn`'s arguments; return ``(kernel_size, scale)``.

    Raises:
        SvrtValueError: a tensor of the wrong type, rank, shape, dtype or device, heads or groups that do not
            divide, too many samples for the CUDA kernel, or a bad scale; the message says which and the fix.
    """
    named = {"query": (query, 4), "key": (key, 5), "value": (value, 5), "offset": (offset, 4)}
    for name, (t, rank) in named.items():
        if not isinstance(t, torch.Tensor) or t.dim() != rank or not t.is_floating_point():
            got = f"{t.dtype} of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise SvrtValueError(f"{_OP}: {name} must be a {rank}-D floating-point tensor, got {got}")
        if t.device != query.device:
            raise SvrtValueError(f"{_OP}: {name} is on {t.device} but query is on {query.device}; use one device")
    kh, kw = _kernel_size(kernel_size)
    B, C, H, W = query.shape
    N = key.shape[1]
    for name, t in (("key", key), ("value", value)):
        if t.shape[0] != B or t.shape[2:] != (C, H, W) or t.shape[1] != N or N < 1:
            raise SvrtValueError(
                f"{_OP}: {name} has shape {tuple(t.shape)}; expected (B, N, C, H, W) = ({B}, N, {C}, {H}, {W}) with "
                f"the same N >= 1 neighbouring frames for key and value (key has N={N})"
            )
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or C % heads:
        raise SvrtValueError(f"{_OP}: heads={heads!r} must be a positive int dividing the {C} channels")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or heads % groups:
        raise SvrtValueError(
            f"{_OP}: groups={groups!r} must be a positive int dividing heads={heads} (each offset group holds whole "
            "heads)"
        )
    P = kh * kw
    want = (B, N * groups * P * 2, H, W)
    if tuple(offset.shape) != want:
        raise SvrtValueError(
            f"{_OP}: offset has shape {tuple(offset.shape)}; expected (B, N*G*kh*kw*2, H, W) = {want} "
            f"(N={N} frames, G={groups} groups, a {kh}x{kw} window, (dy, dx) pairs)"
        )
    if N * P > MAX_SAMPLES:
        raise SvrtValueError(
            f"{_OP}: {N} frames x {kh}x{kw} taps = {N * P} samples per query; at most {MAX_SAMPLES} are supported "
            "(the CUDA kernel keeps them in thread-local arrays); use fewer frames or a smaller window"
        )
    if H * W >= 2**31:
        raise SvrtValueError(f"{_OP}: {H}x{W} pixels per frame is too many; at most 2**31 - 1 are supported")
    if scale is None:
        scale = (C // heads) ** -0.5
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale == scale:
        raise SvrtValueError(f"{_OP}: scale must be a number or None (head_dim ** -0.5), got {scale!r}")
    compute_dtype(query, key, value, offset)
    return (kh, kw), float(scale)


def deform_attn_torch(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    offset: torch.Tensor,
    kernel_size: tuple[int, int],
    heads: int,
    groups: int,
    scale: float,
) -> torch.Tensor:
    """The ``grid_sample`` path (validated arguments, one compute dtype): ``(B, C, H, W)``."""
    B, C, H, W = query.shape
    N = key.shape[1]
    kh, kw = kernel_size
    P, G, M = kh * kw, groups, heads
    D = C // M
    dev, dt = query.device, query.dtype
    off = offset.view(B, N, G, P, 2, H, W)
    tap_y = (torch.arange(kh, device=dev) - kh // 2).repeat_interleave(kw).view(P, 1, 1)
    tap_x = (torch.arange(kw, device=dev) - kw // 2).repeat(kh).view(P, 1, 1)
    y = torch.arange(H, device=dev).view(1, H, 1) + tap_y + off[:, :, :, :, 0]  # B N G P H W
    x = torch.arange(W, device=dev).view(1, 1, W) + tap_x + off[:, :, :, :, 1]
    # grid_sample's normalised coordinates (align_corners=False): pixel centres at (2x + 1) / W - 1
    grid = torch.stack([(2 * x + 1) / W - 1, (2 * y + 1) / H - 1], dim=-1).to(dt)  # B N G P H W 2
    grid = grid.reshape(B * N * G, P * H, W, 2)

    def sampled(t: torch.Tensor) -> torch.Tensor:
        planes = t.reshape(B * N * G, C // G, H, W)  # (B N G) (C/G) H W
        s = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        s = s.view(B, N, G, M // G, D, P, H, W)
        return s.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(B, M, D, N * P, H, W)  # B M D S H W

    k, v = sampled(key), sampled(value)
    q = query.view(B, M, D, 1, H, W)
    attn = torch.softmax((q * k).sum(2) * scale, dim=2)  # B M S H W
    return (attn.unsqueeze(2) * v).sum(3).reshape(B, C, H, W)  # B M D H W -> B C H W


def deform_attn(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    offset: torch.Tensor,
    *,
    kernel_size: int | tuple[int, int] = 3,
    heads: int,
    groups: int,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Flow-guided deformable attention (module docstring).

    Args:
        query: ``(B, C, H, W)`` features of the frames being aligned to.
        key, value: ``(B, N, C, H, W)`` features of ``N`` neighbouring frames per query frame.
        offset: ``(B, N*G*kh*kw*2, H, W)`` sampling offsets (dy, dx) around each window tap, in pixels
            (flow plus a learned residual).
        kernel_size: the ``(kh, kw)`` window (an int for a square one); ``N * kh * kw <= 64``.
        heads: attention heads ``M`` (dividing ``C``).
        groups: offset groups ``G`` (dividing ``M``).
        scale: logit scale; default ``(C / M) ** -0.5``.
        backend: ``"auto"``, ``"torch"`` or ``"cuda"``.

    Returns:
        ``(B, C, H, W)`` in ``query``'s dtype, differentiable with respect to all four tensors (once on
        the CUDA path).

    Raises:
        SvrtValueError: bad arguments (:func:`check_deform_attn_args`) or an unknown ``backend``.
        BackendUnavailableError: ``backend="cuda"`` without CuPy or without a CUDA device.
    """
    ks, scale = check_deform_attn_args(query, key, value, offset, kernel_size, heads, groups, scale)
    if backend == "auto":
        use_cuda = query.is_cuda and cupy_available()
    elif backend == "torch":
        use_cuda = False
    elif backend == "cuda":
        use_cuda = True
    else:
        raise SvrtValueError(f"{_OP}: unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if use_cuda:
        return deform_attn_cuda(query, key, value, offset, ks, heads, groups, scale)
    dtype = compute_dtype(query, key, value, offset)
    with torch.autocast(query.device.type, enabled=False):
        out = deform_attn_torch(*(t.to(dtype) for t in (query, key, value, offset)), ks, heads, groups, scale)
    return out.to(query.dtype)
