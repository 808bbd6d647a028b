"""Learnable spike accumulator on packed bits: the public op, its validation, and its pure-torch path.

For clip ``b``, frame ``t`` and bin ``k`` with frame range ``(r0, r1) = ranges[b, t, k]``::

    V[b, t, k] = sum_{s in [r0, r1)} S[b, s] * gamma[k] ** (r1 - 1 - s)

where ``S[b, s]`` is spike frame ``s`` of clip ``b`` (pixel ``x`` is bit ``x % 8`` of byte ``x // 8`` of its
row, as :class:`svrt_data.SpikeTransform` with ``raw_output="bits"`` hands the packed bits over, together
with ``ranges``). The newest frame of a bin counts fully and older ones decay by ``gamma`` per frame (a
leaky integrator read out at the end of the bin); ``gamma = 1`` gives exactly the stored count voxels of
:func:`svrt_data.voxelize` (``mode="count"``), and ``0 ** 0 = 1``, so ``gamma = 0`` keeps only a bin's
last frame. The op itself accepts any real ``gamma``; the model's ``SpikeAccumulator`` keeps it in (0, 1].

Paths (chosen in :func:`spike_accumulate`):

- ``"torch"``: vectorized pure torch (any device, gradients through autograd): Horner's recurrence over
  the bins' frames, aligned at each bin's end, one frame per bin at a time, so at most one unpacked
  frame per bin is in memory (never an unpacked time axis);
- ``"cuda"``: the kernels of ``spike_accumulate.cu`` through CuPy (:mod:`kernels.spike_accumulate_cuda`);
- ``"auto"``: ``"cuda"`` for CUDA tensors when CuPy imports, otherwise ``"torch"``.

Dtypes: the output is float32; the autocast dtype when autocast is enabled for the device; float64
when ``gamma`` is float64 (for ``gradcheck``). Only ``gamma`` gets a gradient.
"""

from __future__ import annotations

import torch

from kernels.cuda_runtime import cupy_available
from kernels.packed_bits import bit_shifts, check_bits_and_ranges, unpack_bits
from kernels.spike_accumulate_cuda import spike_accumulate_cuda
from svrt_errors import SvrtValueError

__all__ = ["BACKENDS", "check_spike_accumulate_args", "output_dtype", "spike_accumulate", "spike_accumulate_torch"]

BACKENDS = ("auto", "torch", "cuda")
_OP = "spike_accumulate"
_GAMMA_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def output_dtype(gamma: torch.Tensor, device_type: str) -> torch.dtype:
    """float64 for float64 ``gamma``; else the autocast dtype under autocast on ``device_type``; else float32."""
    if gamma.dtype == torch.float64:
        return torch.float64
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.float32


def check_spike_accumulate_args(
    bits: torch.Tensor, ranges: torch.Tensor, gamma: torch.Tensor, width: int | None, validate: bool
) -> int:
    """Validate :func:`spike_accumulate`'s arguments; return the output width ``W``.

    Raises:
        SvrtValueError: a tensor of the wrong type, rank, shape, dtype or device, a bad ``width``, or (with
            ``validate``) a range outside ``0 <= r0 <= r1 <= S``; the message says which and how to fix it.
    """
    if not isinstance(gamma, torch.Tensor):
        raise SvrtValueError(f"{_OP}: gamma must be a torch tensor, got {type(gamma).__name__}")
    W = check_bits_and_ranges(_OP, bits, ranges, width, validate)
    K = ranges.shape[2]
    if gamma.dtype not in _GAMMA_DTYPES or tuple(gamma.shape) != (K,):
        raise SvrtValueError(
            f"{_OP}: gamma must be a floating-point ({K},) tensor (one decay per bin of ranges); got {gamma.dtype} "
            f"of shape {tuple(gamma.shape)}"
        )
    if gamma.device != bits.device:
        raise SvrtValueError(
            f"{_OP}: gamma is on {gamma.device} but bits are on {bits.device}; move all tensors to one device"
        )
    return W


def spike_accumulate_torch(
    bits: torch.Tensor,
    ranges: torch.Tensor,
    gamma: torch.Tensor,
    width: int,
    dtype: torch.dtype,
    steps: int | None = None,
) -> torch.Tensor:
    """The pure-torch path (arguments already validated): ``(B, T, K, H, W)`` in ``dtype``.

    Step ``j`` of ``L = max(r1 - r0)`` reads frame ``s = r1 - L + j`` of every bin at once (a gather of
    packed frames, unpacked right away); steps before a bin's ``r0`` add nothing, and since they all come
    first they leave its accumulator at zero, so every bin ends on its own last frame. ``steps``: ``L``
    when the caller knows it (no host synchronisation; ``torch.compile`` then sees static shapes); a
    larger value gives the same result.
    """
    B, S, H, Wb = bits.shape
    T, K = ranges.shape[1:3]
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    with torch.autocast(bits.device.type, enabled=False):
        g = gamma.to(compute).view(1, 1, K, 1, 1)
        acc = torch.zeros(B, T, K, H, width, dtype=compute, device=bits.device)
        # clamped into [0, S] as the CUDA kernels do (only matters with validate=False)
        r0 = ranges[..., 0].clamp(0, S)
        r1 = torch.maximum(ranges[..., 1].clamp(max=S), r0)
        if not acc.numel() or not S:
            steps = 0
        elif steps is None:
            steps = int((r1 - r0).max())
        if steps == 0:
            return (acc * g).to(dtype)  # zeros, still a function of gamma (zero gradient)
        shifts = bit_shifts(bits.device)  # once, not per step
        clip = torch.arange(B, device=bits.device).view(B, 1, 1)
        for j in range(steps):
            s = r1 - steps + j  # B T K
            frames = bits[clip, s.clamp(0, S - 1)]  # B T K H Wb
            spikes = unpack_bits(frames, width, shifts=shifts)  # B T K H W
            live = (s >= r0).to(compute).view(B, T, K, 1, 1)
            acc = acc * g + spikes.to(compute) * live
    return acc.to(dtype)


def spike_accumulate(
    bits: torch.Tensor,
    ranges: torch.Tensor,
    gamma: torch.Tensor,
    *,
    width: int | None = None,
    validate: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """Accumulate packed spike frames into ``K`` decayed bins per frame (module docstring).

    Args:
        bits: ``uint8 (B, S, H, Wb)`` packed spike frames (``spike_bits``).
        ranges: ``int64 (B, T, K, 2)``: bin ``k`` of frame ``t`` of clip ``b`` reads frames ``[r0, r1)`` of
            ``bits[b]`` (``spike_bin_ranges``); an empty range gives zeros.
        gamma: ``(K,)`` decay per bin, float16/bfloat16/float32/float64.
        width: ``W`` when the rows' last byte holds padding bits (``8 * (Wb - 1) < W <= 8 * Wb``); default
            ``8 * Wb``.
        validate: check ``0 <= r0 <= r1 <= S`` (one host synchronisation on a GPU). Either way the CUDA
            kernels clamp ranges into ``[0, S]``, so an unvalidated bad range never reads out of bounds.
        backend: ``"auto"``, ``"torch"`` or ``"cuda"`` (module docstring).

    Returns:
        ``(B, T, K, H, W)`` in :func:`output_dtype`'s dtype, differentiable with respect to ``gamma``.

    Raises:
        SvrtValueError: bad arguments (see :func:`check_spike_accumulate_args`) or an unknown ``backend``.
        BackendUnavailableError: ``backend="cuda"`` without CuPy or without a CUDA device.
    """
    W = check_spike_accumulate_args(bits, ranges, gamma, width, validate)
    dtype = output_dtype(gamma, bits.device.type)
    if backend == "auto":
        use_cuda = bits.is_cuda and cupy_available()
    elif backend == "torch":
        use_cuda = False
    elif backend == "cuda":
        use_cuda = True
    else:
        raise SvrtValueError(f"{_OP}: unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if use_cuda:
        return spike_accumulate_cuda(bits, ranges, gamma, W, dtype)
    return spike_accumulate_torch(bits, ranges, gamma, W, dtype)
