"""``SpikeAccumulator``: the learnable spike accumulator as a module, the raw-spike input of VRT+Spike.

It turns the loader's packed bits into K-bin voxels with one learnable decay per bin,
``V_k = sum_{s in bin k} S_s * gamma_k ** (t_end_k - s)`` (:func:`kernels.spike_accumulate.spike_accumulate`;
``gamma = 1`` gives the stored count voxels), reading ``spike_bits`` and ``spike_bin_ranges`` exactly as
``SpikeTransform(spike_input="raw", raw_output="bits")`` produces them.

Parametrisation: ``gamma = exp(-softplus(raw_gamma))``, so ``gamma`` stays in (0, 1] whatever the optimiser
does, and the decay rate ``-log(gamma) = softplus(raw_gamma)`` moves on a log-like scale. ``init_gamma = 1``
is reached in floating point by ``raw_gamma = -30`` (``softplus(-30) ~ 1e-13``): counts at the start,
with a small but non-zero gradient (an adaptive optimiser such as Adam moves it at its usual pace).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kernels.spike_accumulate import spike_accumulate
from svrt_model.errors import ModelConfigError

__all__ = ["SpikeAccumulator"]

_RAW_AT_ONE = -30.0  # softplus(-30) = 9.4e-14: gamma rounds to 1 in float32


def _raw_from_gamma(gamma: float) -> float:
    rate = -math.log(gamma)  # softplus(raw) = rate
    return _RAW_AT_ONE if rate < 1e-12 else max(_RAW_AT_ONE, math.log(math.expm1(rate)))


class SpikeAccumulator(nn.Module):
    """Packed spike bits -> K-bin decayed voxels with a learnable decay per bin.

    Args:
        bins: K.
        init_gamma: the initial decay, in (0, 1]: one value for every bin or K values.
        backend: of :func:`kernels.spike_accumulate.spike_accumulate` (``"auto"``, ``"torch"``, ``"cuda"``);
            a run-time switch (attribute ``backend``).

    Parameter: ``raw_gamma`` ``(K,)``.
    """

    def __init__(self, bins: int, init_gamma: float | Sequence[float] = 1.0, *, backend: str = "auto") -> None:
        super().__init__()
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ModelConfigError(f"SpikeAccumulator: bins must be a positive int (K), got {bins!r}")
        values = [init_gamma] * bins if isinstance(init_gamma, (int, float)) else list(init_gamma)
        if len(values) != bins or not all(isinstance(g, (int, float)) and 0 < g <= 1 for g in values):
            raise ModelConfigError(
                f"SpikeAccumulator: init_gamma must be one value or {bins} values in (0, 1], got {init_gamma!r}"
            )
        self.bins = bins
        self.raw_gamma = nn.Parameter(torch.tensor([_raw_from_gamma(float(g)) for g in values]))
        self.backend = backend

    @property
    def gamma(self) -> torch.Tensor:
        """The decays ``(K,)`` in (0, 1], differentiable with respect to ``raw_gamma``."""
        return torch.exp(-F.softplus(self.raw_gamma))

    def extra_repr(self) -> str:
        return f"bins={self.bins}, backend={self.backend!r}"

    def forward(self, bits: torch.Tensor, ranges: torch.Tensor, *, width: int | None = None) -> torch.Tensor:
        """Accumulate.

        Args:
            bits: ``uint8 (B, S, Hs, Ws/8)`` packed spike frames (``spike_bits``).
            ranges: ``int64 (B, T, K, 2)`` frame ranges of every bin (``spike_bin_ranges``).
            width: ``Ws`` when it is not a multiple of 8.

        Returns:
            ``(B, T, K, Hs, Ws)``: float32, or the autocast dtype under autocast.
        """
        if ranges.dim() == 4 and ranges.shape[2] != self.bins:
            raise ModelConfigError(
                f"SpikeAccumulator: ranges hold {ranges.shape[2]} bins per frame but the accumulator has "
                f"{self.bins}; build SpikeTransform with bins={self.bins}"
            )
        # the range check synchronises with the host, which a CUDA graph being recorded cannot (train.cuda_graph);
        # the kernels clamp every range into [0, S] either way
        capturing = bits.is_cuda and torch.cuda.is_current_stream_capturing()
        return spike_accumulate(bits, ranges, self.gamma, width=width, backend=self.backend, validate=not capturing)
