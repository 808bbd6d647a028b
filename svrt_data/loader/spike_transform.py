"""``SpikeTransform``: the batch-side half of the loader, run after the batch reaches its device.

Items stay uint8 through the workers, pinned memory and the host-to-device copy (4x less to move
than float32); this module turns a batch from :func:`svrt_data.loader.collate.collate_clips` (moved with
:func:`svrt_data.loader.collate.move_batch`) into model input, on the GPU or the CPU alike:

- ``blur``/``sharp``: ``uint8 (B, T, 3, H, W)`` -> float ``x * rgb_scale`` (``[0, 1]`` by default);
- ``spikes`` (voxel input): ``(B, T, K, Hs, Ws)`` -> float, ``log1p`` (optional), then
  ``(x - mean) / max(std, eps)`` with scalar or per-bin statistics (given, or from a store:
  :meth:`SpikeTransform.from_store`); the same steps as :mod:`svrt_data.loader.transforms`, whose functions
  this module calls (the statistics are kept as module buffers so no step copies them per batch);
- raw input, ``raw_output="voxels"``: ``spike_bits`` are re-binned into ``spikes`` with
  :func:`svrt_data.voxelize.voxelize` (CuPy kernels for CUDA tensors, Numba on the CPU; any K), one
  launch for the whole batch, then transformed as above;
- raw input, ``raw_output="bits"`` (the learnable accumulator's hand-off): ``spike_bits``
  ``uint8 (B, S, Hs, Ws/8)`` stay packed on the device (pixel x = bit ``x % 8`` of byte ``x // 8``;
  frames ``>= spike_len[b]`` are zero padding), and ``spike_bin_ranges`` ``int64 (B, T, K, 2)`` is
  added on the same device: bin k of frame t of clip b sums the bits of frames
  ``[ranges[b, t, k, 0], ranges[b, t, k, 1])`` of ``spike_bits[b]`` (the same frames ``voxelize``
  counts, so ``V_k = sum_t S_t gamma^(t_end_k - t)`` with ``t_end_k = ranges[..., 1] - 1`` reduces to
  the stored counts at ``gamma = 1``). ``spike_windows`` (host, float64) stay as they came.

Other keys pass through unchanged.

Why this lives in the loader and not in ``svrt_model``: it has no learnable parameters. Its buffers are
statistics measured on the data (mean/std of a store's voxels) and every step (uint8 to float,
``log1p``, normalisation, re-binning with the store's own bin edges) is defined by the data and the
store layout, so it is part of what a batch means, it must agree with the store it was measured on,
and nothing in it needs gradients. The buffers make ``.to(device)`` move the statistics once and let
the training code save them with a checkpoint. What is learnable about spikes, the accumulator
``V_k = sum_t S_t gamma^(t_end_k - t)`` that consumes ``raw_output="bits"``, belongs to the model in
``svrt_model``, which may import this module's contract (the import order runs ``svrt_data`` <-
``svrt_model``), never the other way round.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from svrt_data.loader.transforms import VoxelStats, log1p, to_float
from svrt_errors import SvrtValueError

__all__ = ["SpikeTransform"]

_FLOATS = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32", torch.float64: "float64"}


def _stat_buffer(values: Any, name: str) -> torch.Tensor:
    v = torch.as_tensor(np.asarray(values, np.float64))
    if v.dim() > 1:
        raise SvrtValueError(f"SpikeTransform: {name} must be a scalar or a (K,) sequence, got shape {tuple(v.shape)}")
    return v


class SpikeTransform(nn.Module):
    """Converts a uint8 batch into model input (module docstring). A data transform without learnable
    parameters, so it belongs to the loader; the learnable accumulator for ``raw_output="bits"`` belongs
    to ``svrt_model`` (module docstring, "Why this lives in the loader").

    Args:
        spike_input: ``"voxels"``, ``"raw"`` or ``"none"`` (as the dataset's).
        bins: K for raw input re-binned to voxels (any K; need not be the store's).
        bin_mode: ``"count"`` (uint8 counts, as stored) or ``"linear"`` for re-binning.
        raw_output: raw input: ``"voxels"`` (re-bin) or ``"bits"`` (hand bits to a learnable accumulator).
        log1p: apply ``log1p`` to the voxels.
        mean, std: normalisation statistics (scalars or ``(K,)``), of the values after ``log1p`` when on;
            both or neither. ``stats``: a :class:`~svrt_data.loader.transforms.VoxelStats` instead.
        eps: floor of ``std``.
        rgb_scale: factor applied to float RGB (None leaves ``blur``/``sharp`` uint8).
        dtype: float dtype of the outputs.
        backend: voxelize backend for re-binning (``"auto"``: CuPy on CUDA, Numba on the CPU).
    """

    def __init__(
        self,
        *,
        spike_input: Literal["voxels", "raw", "none"] = "voxels",
        bins: int | None = None,
        bin_mode: Literal["count", "linear"] = "count",
        raw_output: Literal["voxels", "bits"] = "voxels",
        log1p: bool = True,
        mean: float | Sequence[float] | np.ndarray | None = None,
        std: float | Sequence[float] | np.ndarray | None = None,
        stats: VoxelStats | None = None,
        eps: float = 1e-6,
        rgb_scale: float | None = 1.0 / 255.0,
        dtype: torch.dtype = torch.float32,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if spike_input not in ("voxels", "raw", "none"):
            raise SvrtValueError(f"SpikeTransform: spike_input must be 'voxels', 'raw' or 'none', got {spike_input!r}")
        if raw_output not in ("voxels", "bits"):
            raise SvrtValueError(f"SpikeTransform: raw_output must be 'voxels' or 'bits', got {raw_output!r}")
        if bin_mode not in ("count", "linear"):
            raise SvrtValueError(f"SpikeTransform: bin_mode must be 'count' or 'linear', got {bin_mode!r}")
        if spike_input == "raw" and (isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1):
            raise SvrtValueError(f"SpikeTransform: raw input needs bins=K (a positive integer), got {bins!r}")
        if dtype not in _FLOATS:
            raise SvrtValueError(f"SpikeTransform: dtype must be a float dtype, got {dtype}")
        if stats is not None and (mean is not None or std is not None):
            raise SvrtValueError("SpikeTransform: give stats= or mean=/std=, not both")
        if (mean is None) != (std is None):
            raise SvrtValueError("SpikeTransform: mean and std go together; give both or neither")
        if stats is not None:
            mean, std = stats.mean, stats.std
        self.spike_input, self.bins, self.bin_mode, self.raw_output = spike_input, bins, bin_mode, raw_output
        self.log1p, self.eps, self.rgb_scale, self.dtype, self.backend = log1p, float(eps), rgb_scale, dtype, backend
        self.normalize = mean is not None
        if self.normalize:
            m, s = _stat_buffer(mean, "mean"), _stat_buffer(std, "std").clamp_min(self.eps)
            if m.shape != s.shape:
                raise SvrtValueError(f"SpikeTransform: mean {tuple(m.shape)} and std {tuple(s.shape)} differ in shape")
            k = self.bins if spike_input == "raw" else None
            if m.dim() == 1 and k is not None and m.shape[0] != k:
                raise SvrtValueError(f"SpikeTransform: {m.shape[0]} per-bin statistics for bins={k}; compute them "
                                     "with the same K (store_voxel_stats(..., bins=K))")
            shape = (-1, 1, 1) if m.dim() == 1 else ()
            self.register_buffer("mean", m.reshape(shape).to(dtype), persistent=True)
            self.register_buffer("std", s.reshape(shape).to(dtype), persistent=True)

    @classmethod
    def from_store(
        cls,
        store: str | os.PathLike,
        split: str,
        *,
        spike_input: Literal["voxels", "raw"] = "voxels",
        bins: int | None = None,
        bin_mode: Literal["count", "linear"] = "count",
        raw_output: Literal["voxels", "bits"] = "voxels",
        log1p: bool = True,
        per_bin: bool = True,
        max_frames: int = 64,
        seed: int = 0,
        rgb_scale: float | None = 1.0 / 255.0,
        dtype: torch.dtype = torch.float32,
    ) -> SpikeTransform:
        """A transform normalised by statistics of the store's split
        (:func:`~svrt_data.loader.store_stats.store_voxel_stats`;
        for raw input, of the stored spikes re-binned at ``bins``)."""
        from svrt_data.loader.store_stats import store_voxel_stats

        stats = None
        if not (spike_input == "raw" and raw_output == "bits"):
            stats = store_voxel_stats(store, split, bins=bins if spike_input == "raw" else None, bin_mode=bin_mode,
                                      log1p=log1p, per_bin=per_bin, max_frames=max_frames, seed=seed)
        return cls(spike_input=spike_input, bins=bins, bin_mode=bin_mode, raw_output=raw_output, log1p=log1p,
                   stats=stats, rgb_scale=rgb_scale, dtype=dtype)

    def extra_repr(self) -> str:
        return (f"spike_input={self.spike_input!r}, bins={self.bins}, raw_output={self.raw_output!r}, "
                f"log1p={self.log1p}, normalize={self.normalize}, dtype={self.dtype}")

    # -- steps ----------------------------------------------------------------------------------------
    def voxels(self, x: torch.Tensor) -> torch.Tensor:
        """Voxels ``(..., K, H, W)`` (any dtype) -> float, ``log1p``, normalised."""
        x = to_float(x, _FLOATS[self.dtype])
        if self.log1p:
            x = log1p(x)
        if self.normalize:
            if self.mean.dim() == 3 and (x.dim() < 3 or x.shape[-3] != self.mean.shape[0]):
                raise SvrtValueError(f"SpikeTransform: {self.mean.shape[0]} per-bin statistics for voxels of shape "
                                     f"{tuple(x.shape)} (K on axis -3); compute the statistics with the same K")
            x = (x - self.mean) / self.std
        return x

    def rebin(self, bits: torch.Tensor, windows: Any, first: Any = None) -> torch.Tensor:
        """Packed ``(B, S, Hs, Ws/8)`` + host windows ``(B, T, 2)`` -> voxels ``(B, T, K, Hs, Ws)``.

        ``first`` (``(B,)``, the batch's ``spike_first``): each clip's windows are restored to the store's
        frame units and voxelized with ``first_frame``, so bin edges are computed exactly as when the
        store was written and the result equals the stored voxels bit for bit. One launch per clip.
        """
        from svrt_data.voxelize import voxelize

        b, s = bits.shape[:2]
        w, f = _windows_and_first(windows, first, b)
        dtype = torch.uint8 if self.bin_mode == "count" else torch.float32
        out = torch.empty((b, w.shape[1], self.bins, bits.shape[2], bits.shape[3] * 8), dtype=dtype,
                          device=bits.device)  # B T K Hs Ws
        for i in range(b):
            voxelize(bits[i], w[i] + f[i], bins=self.bins, mode=self.bin_mode, backend=self.backend, out=out[i],
                     first_frame=int(f[i]))
        return out

    def bin_ranges(self, bits: torch.Tensor, windows: Any, first: Any = None) -> torch.Tensor:
        """``int64 (B, T, K, 2)`` frame ranges of every bin in ``bits`` (the accumulator's plan), on bits' device;
        edges computed in the store's frame units as in :meth:`rebin`."""
        from svrt_data.voxelize import bin_frame_ranges

        b, s = bits.shape[:2]
        w, f = _windows_and_first(windows, first, b)
        ranges = np.stack([bin_frame_ranges(w[i] + f[i], self.bins, s, first_frame=int(f[i])) for i in range(b)])
        return torch.from_numpy(ranges).to(bits.device, non_blocking=True)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Args: a collated batch (see :mod:`svrt_data.loader.dataset`). Returns: a new dict (module docstring)."""
        out = dict(batch)
        if self.rgb_scale is not None:
            for key in ("blur", "sharp"):
                if key in out:
                    out[key] = to_float(_uint8(out[key], key), _FLOATS[self.dtype]) * self.rgb_scale
        if self.spike_input == "voxels":
            if "spikes" not in batch:
                raise SvrtValueError("SpikeTransform(spike_input='voxels'): the batch has no 'spikes'; build the "
                                     "dataset with spike_input='voxels'")
            out["spikes"] = self.voxels(batch["spikes"])
        elif self.spike_input == "raw":
            if "spike_bits" not in batch or "spike_windows" not in batch:
                raise SvrtValueError("SpikeTransform(spike_input='raw'): the batch has no "
                                     "'spike_bits'/'spike_windows'; build the dataset with spike_input='raw'")
            bits = _uint8(batch["spike_bits"], "spike_bits")
            if bits.dim() != 4:
                raise SvrtValueError(f"SpikeTransform: spike_bits must be (B, S, Hs, Ws/8), got {tuple(bits.shape)}")
            if self.raw_output == "voxels":
                out["spikes"] = self.voxels(self.rebin(bits, batch["spike_windows"], batch.get("spike_first")))
            else:
                out["spike_bin_ranges"] = self.bin_ranges(bits, batch["spike_windows"], batch.get("spike_first"))
        return out


def _uint8(x: Any, key: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise SvrtValueError(f"SpikeTransform: {key} must be a uint8 tensor (as the dataset delivers it), got {got}")
    return x


def _windows_and_first(windows: Any, first: Any, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative windows ``(B, T, 2)`` and each clip's first stored frame ``(B,)`` (zeros when not given)."""
    w = _host_windows(windows, b)
    if first is None:
        return w, np.zeros(b, np.int64)
    f = first.detach().cpu().numpy() if isinstance(first, torch.Tensor) else np.asarray(first)
    f = np.asarray(f, np.int64).reshape(-1)
    if f.shape != (b,):
        raise SvrtValueError(f"SpikeTransform: spike_first must hold one frame per clip ({b}), got shape {f.shape}")
    return w, f


def _host_windows(windows: Any, b: int) -> np.ndarray:
    w = windows.detach().cpu().numpy() if isinstance(windows, torch.Tensor) else np.asarray(windows)
    w = np.asarray(w, np.float64)
    if w.ndim != 3 or w.shape[0] != b or w.shape[2] != 2:
        raise SvrtValueError(f"SpikeTransform: spike_windows must be (B, T, 2) with B={b}, got {w.shape}")
    return w
