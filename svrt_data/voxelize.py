"""Spike windows to K-bin voxels: validation, the host-side bin plan, and backend dispatch.

Semantics (also in ``docs/voxelization.md``). A window ``[t0, t1)`` is given in spike-frame units
(float, relative to frame 0 of the packed array handed in); spike frame ``t`` (an integer) is the
instant ``t``. The window is cut into ``K`` equal bins with edges, in float64,

    e_k = t0 + (k * (t1 - t0)) / K   for k < K,      e_K = t1 exactly,

(each clipped to ``t1`` against rounding). Frame ``t`` belongs to bin ``k`` iff ``e_k <= t < e_{k+1}``,
so bin ``k`` holds the integer frames ``[ceil(e_k), ceil(e_{k+1}))``. These integer ranges are computed
once on the host (:func:`bin_frame_ranges`) and handed to every backend.

- ``mode="count"``: ``uint8`` spikes per pixel and bin. A bin that can hold more than 255 frames is an
  error (never wrapped or saturated). Splitting a window at one of its bin edges gives the same counts
  as the two halves voxelized on their own (e.g. ``[t0, t1)`` with K=2 equals ``[t0, e_1)`` and
  ``[e_1, t1)`` with K=1 each), because both see the same float64 edges.
- ``mode="linear"``: ``float32``; each frame ``t`` of the window shares its spike between the two
  nearest bin centres ``c_k = t0 + (k + 0.5) * (t1 - t0) / K``: with ``u = (t - t0) * K / (t1 - t0) - 0.5``,
  bin ``floor(u)`` gets ``1 - frac(u)`` and the next bin ``frac(u)``; frames before ``c_0`` go wholly to
  bin 0 and frames after ``c_{K-1}`` wholly to bin ``K-1``, so each window's bins sum to its spike count.
  Kernels accumulate in float64 and round once. Split consistency holds for ``count`` only.

Windows must satisfy ``0 <= t0 < t1 <= S`` (``S`` frames in the array); a window holding no integer
frame (e.g. ``[3.2, 3.7)``) is valid and gives zeros; no windows give an empty ``(0, K, H, W)`` result.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from svrt_data.spike_io import SpikeStream
from svrt_errors import BackendUnavailableError, SpikeFormatError, SvrtValueError, WindowError

__all__ = ["MAX_COUNT", "MODES", "BACKENDS", "voxelize", "bin_frame_ranges", "linear_bin_weights"]

MAX_COUNT = 255  # frames one uint8 count bin may hold
MODES = ("count", "linear")
BACKENDS = ("auto", "numpy", "numba", "cupy")
_OUT_DTYPES = {"count": np.uint8, "linear": np.float32}
_CUPY_HINT = 'install CuPy with pip install "svrt[cuda]" (or "svrt[cuda13]" on a CUDA 13 stack)'


# -- windows and the bin plan ------------------------------------------------------------------
def _check_bins(bins: int) -> int:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise SvrtValueError(f"voxelize: bins must be a positive integer (K), got {bins!r}")
    return int(bins)


def _host_windows(windows: Any) -> np.ndarray:
    """Windows as a float64 (N, 2) host array; accepts sequences, NumPy, CuPy and torch arrays."""
    if hasattr(windows, "detach"):  # torch
        windows = windows.detach().cpu().numpy()
    elif type(windows).__module__.startswith("cupy"):
        windows = windows.get()
    w = np.asarray(windows, dtype=np.float64)
    if w.size == 0:
        return np.zeros((0, 2), np.float64)
    if w.ndim != 2 or w.shape[1] != 2:
        raise WindowError(f"windows must be an (N, 2) array of [t0, t1) rows, got shape {w.shape}")
    return w


def check_windows(windows: Any, n_frames: int, first_frame: int = 0) -> np.ndarray:
    """Validate windows against frames ``[first_frame, first_frame + n_frames)``; return float64 ``(N, 2)``.

    Raises:
        WindowError: a row is not finite or breaks ``first_frame <= t0 < t1 <= first_frame + n_frames``
            (the message names the first offending row and how many rows are bad).
    """
    w = _host_windows(windows)
    t0, t1 = w[:, 0], w[:, 1]
    lo, hi = first_frame, first_frame + n_frames
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(t0) & np.isfinite(t1) & (t0 >= lo) & (t0 < t1) & (t1 <= hi))
    if bad.any():
        rows = np.flatnonzero(bad)
        i = int(rows[0])
        a, b = float(t0[i]), float(t1[i])
        more = f" ({len(rows) - 1} more rows are bad too)" if len(rows) > 1 else ""
        if not (np.isfinite(t0[i]) and np.isfinite(t1[i])):
            why = "is not finite"
        elif t1[i] <= t0[i]:
            why = "is empty or reversed (t1 <= t0)"
        else:
            why = "lies outside the stream"
        held = f"frames [{lo}, {hi})" if lo else f"{n_frames} frames"
        raise WindowError(
            f"window row {i}: [t0, t1) = [{a!r}, {b!r}) {why}; windows need {lo} <= t0 < t1 <= {hi} "
            f"(the stream has {held}){more}. Fix the align log or cut the windows to the stream."
        )
    return w


def _edges(w: np.ndarray, k: int) -> np.ndarray:
    """Bin edges ``float64 (N, K+1)``: ``e_k = t0 + (k * (t1 - t0)) / K``, ``e_K = t1``, clipped to t1."""
    t0, t1 = w[:, :1], w[:, 1:]
    e = t0 + (np.arange(k + 1, dtype=np.float64) * (t1 - t0)) / k
    e[:, k] = t1[:, 0]
    return np.minimum(e, t1)


def bin_frame_ranges(windows: Any, bins: int, n_frames: int, *, first_frame: int = 0) -> np.ndarray:
    """The integer frames of every bin: ``int64 (N, K, 2)`` of ``[first, stop)`` frame indices.

    Bin ``k`` of window ``[t0, t1)`` holds frames ``[ceil(e_k), ceil(e_{k+1}))`` (module docstring).
    Edges are computed from the windows as given; indices are then made relative to ``first_frame``,
    the first of the ``n_frames`` frames held (0: the start of the stream).
    """
    k = _check_bins(bins)
    w = check_windows(windows, n_frames, first_frame)
    first = np.ceil(_edges(w, k)).astype(np.int64) - first_frame
    return np.stack([first[:, :-1], first[:, 1:]], axis=-1)


def linear_bin_weights(
    windows: Any, bins: int, n_frames: int, *, first_frame: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The plan of ``mode="linear"``: which frames feed each bin, and with what weight.

    Returns:
        ranges: ``int64 (N, K, 2)``, the contiguous frames ``[first, stop)`` that feed bin k (those
            whose lower centre is bin k-1 or k), relative to ``first_frame`` as in :func:`bin_frame_ranges`;
        offsets: ``int64 (N*K + 1,)``, bin ``b = n*K + k`` reads ``weights[offsets[b]:offsets[b+1]]``,
            one weight per frame of its range;
        weights: ``float64``, frame ``t``'s share of its spike that goes to that bin.
    """
    k = _check_bins(bins)
    w = check_windows(windows, n_frames, first_frame)
    n = len(w)
    t0, t1 = w[:, 0], w[:, 1]
    f0 = np.ceil(t0).astype(np.int64)
    length = np.ceil(t1).astype(np.int64) - f0
    win = np.repeat(np.arange(n), length)  # window of each (window, frame) pair
    starts = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64) if n else np.zeros(0, np.int64)
    i = np.arange(len(win), dtype=np.int64) - starts[win]  # frame index inside its window
    u = ((f0[win] + i) - t0[win]) * k / (t1 - t0)[win] - 0.5
    lower = np.floor(u)
    inside = (u > 0) & (u < k - 1)
    k_lo = np.where(inside, lower, np.where(u <= 0, 0, k - 1)).astype(np.int64)
    frac = np.where(inside, u - lower, 0.0)

    group = np.bincount(win * k + k_lo, minlength=n * k).reshape(n, k)  # frames whose lower bin is k
    group_start = np.cumsum(group, axis=1) - group  # where group k starts inside its window
    first = group_start[:, np.maximum(np.arange(k) - 1, 0)]  # bin k reads groups k-1 and k
    stop = group_start + group
    offsets = np.concatenate([[0], np.cumsum((stop - first).ravel())]).astype(np.int64)
    weights = np.empty(int(offsets[-1]), np.float64)
    b = win * k + k_lo
    weights[offsets[b] + i - first[win, k_lo]] = 1.0 - frac
    up = k_lo + 1 < k
    b_up, k_up = b[up] + 1, k_lo[up] + 1
    weights[offsets[b_up] + i[up] - first[win[up], k_up]] = frac[up]
    ranges = np.stack([first + f0[:, None], stop + f0[:, None]], axis=-1) - first_frame
    return ranges, offsets, weights


def _check_count_capacity(ranges: np.ndarray, windows: np.ndarray, k: int) -> None:
    if ranges.size == 0:
        return
    frames = ranges[..., 1] - ranges[..., 0]
    if frames.max() > MAX_COUNT:
        i = int(np.argmax(frames.max(axis=1)))
        t0, t1 = (float(v) for v in windows[i])
        raise WindowError(
            f"window row {i}: [t0, t1) = [{t0!r}, {t1!r}) spans {t1 - t0:g} frames in {k} bins, so a bin holds "
            f"up to {int(frames[i].max())} frames, more than the {MAX_COUNT} a uint8 count can hold; "
            f"use at least {math.ceil((t1 - t0) / MAX_COUNT)} bins, or mode='linear' (float32)"
        )


# -- inputs ------------------------------------------------------------------------------------
def _input_kind(spikes: Any) -> str:
    if isinstance(spikes, SpikeStream):
        return "stream"
    if isinstance(spikes, np.ndarray):
        return "numpy"
    module = type(spikes).__module__
    if module.startswith("cupy"):
        return "cupy"
    if module.startswith("torch"):
        return "torch" if spikes.is_cuda else "torch-cpu"
    raise SpikeFormatError(
        "voxelize: spikes must be a SpikeStream, or packed rows uint8 (S, H, W/8) as a NumPy array, a CuPy array "
        f"or a torch tensor; got {type(spikes).__name__}"
    )


def _packed_shape(spikes: Any, kind: str) -> tuple[int, int, int]:
    if kind == "stream":
        g = spikes.geometry
        if g.width % 8:
            raise SpikeFormatError(
                f"voxelize: {spikes.path} is {g.height}x{g.width}; packed voxelization needs a width that is a "
                "multiple of 8 (pack the frames with pack_frames and pass width=)"
            )
        return len(spikes), g.height, g.packed_width
    dtype = str(spikes.dtype).replace("torch.", "")
    if spikes.ndim != 3 or dtype != "uint8":
        raise SpikeFormatError(
            f"voxelize: packed spikes must be uint8 (S, H, W/8) (upright rows, little bit order, as "
            f"SpikeStream.packed returns); got {dtype} of shape {tuple(spikes.shape)}"
        )
    s, h, wb = (int(v) for v in spikes.shape)
    if h == 0 or wb == 0:
        raise SpikeFormatError(f"voxelize: packed spikes of shape {(s, h, wb)} hold no pixels")
    return s, h, wb


def _check_width(width: int | None, wb: int) -> int:
    if width is None:
        return 8 * wb
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or not 8 * (wb - 1) < width <= 8 * wb:
        raise SvrtValueError(
            f"voxelize: width={width!r} does not fit packed rows of {wb} bytes; expected {8 * (wb - 1) + 1} to "
            f"{8 * wb} (the padding bits of the last byte are dropped)"
        )
    return int(width)


def _resolve_backend(backend: str, kind: str) -> str:
    on_device = kind in ("cupy", "torch")
    if backend == "auto":
        return "cupy" if on_device else "numba"
    elif backend in ("numpy", "numba"):
        if on_device:
            raise SvrtValueError(
                f"voxelize: backend={backend!r} runs on host arrays, but the spikes are a {kind} GPU array; "
                "use backend='cupy' (or 'auto'), or copy the spikes to the host first"
            )
        return backend
    elif backend == "cupy":
        return backend
    else:
        raise SvrtValueError(f"voxelize: unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def _needed_frames(ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per window ``[first, stop)`` of the frames its bins read (empty windows give first == stop)."""
    if ranges.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return ranges[:, 0, 0], ranges[:, -1, 1]


def _gather(read: Any, concat: Any, ranges: np.ndarray) -> tuple[Any, np.ndarray]:
    """Read only the frames the windows need, as one contiguous array, and re-index ``ranges`` into it.

    ``read(a, b)`` returns contiguous packed frames [a, b); overlapping or touching windows are read once.
    """
    first, stop = _needed_frames(ranges)
    used = np.flatnonzero(stop > first)
    pieces: list[list[int]] = []
    for i in used[np.argsort(first[used], kind="stable")]:
        if pieces and first[i] <= pieces[-1][1]:
            pieces[-1][1] = max(pieces[-1][1], int(stop[i]))
        else:
            pieces.append([int(first[i]), int(stop[i])])
    if not pieces:
        return read(0, 0), np.zeros_like(ranges)
    a, b = np.array(pieces, np.int64).T
    offset = np.cumsum(b - a) - (b - a)  # where each piece starts in the gathered array
    piece = np.searchsorted(a, first, side="right") - 1
    shift = np.where(stop > first, offset[np.maximum(piece, 0)] - a[np.maximum(piece, 0)], 0)
    new = ranges + shift[:, None, None]
    new[stop <= first] = 0  # empty windows read nothing; keep their (empty) ranges in bounds
    parts = [read(int(x), int(y)) for x, y in pieces]
    return (parts[0] if len(parts) == 1 else concat(parts)), new


def _host_frames(spikes: Any, kind: str, ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if kind == "stream":
        return _gather(spikes.packed, np.concatenate, ranges)
    arr = spikes.numpy() if kind == "torch-cpu" else spikes
    if arr.flags.c_contiguous:
        return arr, ranges
    return _gather(lambda a, b: np.ascontiguousarray(arr[a:b]), np.concatenate, ranges)


# -- outputs -----------------------------------------------------------------------------------
def _check_out(out: Any, shape: tuple[int, ...], dtype: type, want_kind: str, device: int | None) -> None:
    try:
        out_kind = _input_kind(out)
    except SpikeFormatError:
        out_kind = type(out).__name__
    if out_kind != want_kind:
        raise SvrtValueError(f"voxelize: out= must be a {want_kind} array here, got {out_kind}")
    got_dtype = str(out.dtype).replace("torch.", "")
    if tuple(out.shape) != shape or got_dtype != np.dtype(dtype).name:
        raise SvrtValueError(
            f"voxelize: out= must be {np.dtype(dtype).name} {shape}, got {got_dtype} {tuple(out.shape)}"
        )
    contiguous = out.is_contiguous() if want_kind.startswith("torch") else out.flags.c_contiguous
    if not contiguous:
        raise SvrtValueError("voxelize: out= must be C-contiguous; pass a fresh array or let voxelize allocate")
    if device is not None and _device_id(out, out_kind) != device:
        raise SvrtValueError(
            f"voxelize: out= is on GPU {_device_id(out, out_kind)}, the spikes on GPU {device}; use one device"
        )


def _device_id(x: Any, kind: str) -> int | None:
    if kind == "cupy":
        return int(x.device.id)
    if kind == "torch":
        return int(x.device.index)
    return None


def _run_kernel(impl: Any, mode: str, frames: Any, ranges: Any, offsets: Any, weights: Any, target: Any) -> None:
    """One kernel module (numpy, numba or cupy: the same two functions) fills ``target``."""
    if mode == "count":
        impl.voxelize_count(frames, ranges, target)
    else:
        impl.voxelize_linear(frames, ranges, offsets, weights, target)


# -- the public function ------------------------------------------------------------------------
def voxelize(
    spikes: Any,
    windows: Any,
    *,
    bins: int,
    mode: str = "count",
    backend: str = "auto",
    out: Any = None,
    width: int | None = None,
    first_frame: int = 0,
) -> Any:
    """Voxelize spike windows into K bins per window (semantics: module docstring, ``docs/voxelization.md``).

    Args:
        spikes: packed spikes ``uint8 (S, H, W/8)`` (upright rows, pixel x is bit x%8 of byte x//8): a
            :class:`SpikeStream` (only the frames the windows need are read), a NumPy array, a CuPy array
            or a torch tensor (CPU or CUDA).
        windows: ``(N, 2)`` rows ``[t0, t1)`` in spike frames of ``spikes``, ``0 <= t0 < t1 <= S``.
        bins: K, bins per window.
        mode: ``"count"`` (uint8 counts) or ``"linear"`` (float32, spikes shared between bin centres).
        backend: ``"auto"`` (cupy for GPU inputs, numba otherwise), ``"numpy"`` (the reference),
            ``"numba"`` or ``"cupy"`` (host inputs are uploaded; the result stays on the GPU).
        out: optional preallocated result, C-contiguous, of the right shape, dtype and device.
        width: W, for widths that are not a multiple of 8: drops the padding bits of each row's last byte.
        first_frame: the stream frame that ``spikes[0]`` holds, when ``spikes`` is a cut of a longer
            stream and ``windows`` are in that stream's frame units. Bin edges are computed from the
            windows as given, so voxelizing a cut equals voxelizing the whole stream, bit for bit
            (shifting the windows instead would round their ends differently). Arrays only.

    Returns:
        ``(N, K, H, W)`` voxels, ``uint8`` or ``float32``: NumPy for host inputs (torch for torch CPU
        tensors), CuPy for CuPy and for host inputs with backend="cupy", a torch CUDA tensor (shared
        through DLPack, computed on torch's current stream) for torch CUDA inputs.

    Raises:
        WindowError: a bad window (row named), or a count bin that could hold more than 255 frames.
        SpikeFormatError: spikes that are not packed uint8 ``(S, H, W/8)``.
        SvrtValueError: an unknown mode or backend, a bad ``width`` or ``out``.
        BackendUnavailableError: the backend's package (or a GPU) is missing.
    """
    k = _check_bins(bins)
    if mode not in MODES:
        raise SvrtValueError(f"voxelize: unknown mode {mode!r}; expected 'count' or 'linear'")
    kind = _input_kind(spikes)
    chosen = _resolve_backend(backend, kind)
    n_frames, h, wb = _packed_shape(spikes, kind)
    w = _check_width(width, wb)
    if isinstance(first_frame, bool) or not isinstance(first_frame, (int, np.integer)) or first_frame < 0:
        raise SvrtValueError(f"voxelize: first_frame must be a non-negative integer, got {first_frame!r}")
    if first_frame and kind == "stream":
        raise SvrtValueError("voxelize: first_frame applies to cut arrays; a SpikeStream is read from frame 0")
    win = check_windows(windows, n_frames, first_frame)
    if mode == "count":
        ranges = bin_frame_ranges(win, k, n_frames, first_frame=first_frame)
        _check_count_capacity(ranges, win, k)
        offsets = weights = None
    else:
        ranges, offsets, weights = linear_bin_weights(win, k, n_frames, first_frame=first_frame)
    shape = (len(win), k, h, w)
    dtype = _OUT_DTYPES[mode]
    if out is not None:
        if chosen == "cupy":
            out_kind = "torch" if kind == "torch" else "cupy"
        else:
            out_kind = "torch-cpu" if kind == "torch-cpu" else "numpy"
        _check_out(out, shape, dtype, out_kind, _device_id(spikes, kind))
    if chosen in ("numpy", "numba"):
        return _voxelize_host(spikes, kind, chosen, mode, ranges, offsets, weights, shape, dtype, out)
    elif chosen == "cupy":
        return _voxelize_cupy(spikes, kind, mode, ranges, offsets, weights, shape, dtype, out)
    else:
        raise SvrtValueError(f"voxelize: unknown backend {chosen!r}")


def _voxelize_host(spikes: Any, kind: str, backend: str, mode: str, ranges: np.ndarray, offsets: Any,
                   weights: Any, shape: tuple[int, int, int, int], dtype: type, out: Any) -> Any:
    frames, ranges = _host_frames(spikes, kind, ranges)
    wb = frames.shape[2]
    result = out.numpy() if (out is not None and kind == "torch-cpu") else out
    if result is None:
        result = np.empty(shape, dtype)
    # Kernels write whole bytes of 8 pixels into 8-byte-aligned rows; anything else goes through a temporary.
    direct = shape[3] == 8 * wb and result.ctypes.data % 8 == 0
    target = result if direct else np.empty(shape[:3] + (8 * wb,), dtype)
    if backend == "numpy":
        from kernels import voxelize_ref as impl
    elif backend == "numba":
        try:
            from kernels import voxelize_numba as impl
        except ImportError as exc:
            raise BackendUnavailableError(
                f"voxelize: backend 'numba' cannot import numba ({exc}); pip install numba, or use backend='numpy'"
            ) from exc
    else:
        raise SvrtValueError(f"voxelize: unknown host backend {backend!r}")
    _run_kernel(impl, mode, frames, ranges, offsets, weights, target)
    if not direct:
        result[...] = target[..., : shape[3]]
    if kind == "torch-cpu" and out is None:
        import torch

        return torch.from_numpy(result)
    return out if out is not None else result


def _voxelize_cupy(spikes: Any, kind: str, mode: str, ranges: np.ndarray, offsets: Any, weights: Any,
                   shape: tuple[int, int, int, int], dtype: type, out: Any) -> Any:
    try:
        import cupy as cp
    except ImportError as exc:
        raise BackendUnavailableError(f"voxelize: backend 'cupy' needs CuPy ({exc}); {_CUPY_HINT}") from exc
    from kernels import voxelize_cupy as impl

    if kind == "torch":
        import torch

        device = spikes.device
        stream = _cupy_stream(cp, torch.cuda.current_stream(device), device.index)
        with cp.cuda.Device(device.index), stream:
            result = out if out is not None else torch.empty(shape, dtype=getattr(torch, np.dtype(dtype).name),
                                                             device=device)
            _run_cupy(cp, impl, cp.from_dlpack(spikes), "cupy", mode, ranges, offsets, weights, shape, dtype,
                      cp.from_dlpack(result))
        return result
    try:
        n_gpus = cp.cuda.runtime.getDeviceCount()
    except cp.cuda.runtime.CUDARuntimeError as exc:
        raise BackendUnavailableError(f"voxelize: backend 'cupy' finds no usable CUDA device ({exc})") from exc
    if n_gpus == 0:
        raise BackendUnavailableError("voxelize: backend 'cupy' finds no CUDA device")
    if kind == "cupy":
        device = spikes.device.id
    else:
        device = out.device.id if out is not None else cp.cuda.Device().id
    with cp.cuda.Device(device):
        result = out if out is not None else cp.empty(shape, dtype)
        _run_cupy(cp, impl, spikes, kind, mode, ranges, offsets, weights, shape, dtype, result)
    return result


def _cupy_stream(cp: Any, torch_stream: Any, device_index: int) -> Any:
    """Torch's stream as a CuPy stream (CuPy 14 reads the CUDA stream protocol; CuPy 13 takes the pointer)."""
    from_external = getattr(cp.cuda.Stream, "from_external", None)
    if from_external is not None and hasattr(torch_stream, "__cuda_stream__"):
        return from_external(torch_stream)
    return cp.cuda.ExternalStream(torch_stream.cuda_stream, device_index)


def _run_cupy(cp: Any, impl: Any, spikes: Any, kind: str, mode: str, ranges: np.ndarray, offsets: Any,
              weights: Any, shape: tuple[int, int, int, int], dtype: type, result: Any) -> None:
    if kind == "cupy":
        frames, ranges = (spikes, ranges) if spikes.flags.c_contiguous else _gather(
            lambda a, b: cp.ascontiguousarray(spikes[a:b]), cp.concatenate, ranges)
    else:  # host spikes (stream, NumPy, torch CPU): upload only the frames the windows need
        host, ranges = _host_frames(spikes, kind, ranges)
        frames = cp.asarray(host)
    wb = frames.shape[2]
    direct = shape[3] == 8 * wb and result.data.ptr % 16 == 0
    target = result if direct else cp.empty(shape[:3] + (8 * wb,), dtype)
    _run_kernel(impl, mode, frames, ranges, offsets, weights, target)
    if not direct:
        result[...] = target[..., : shape[3]]
