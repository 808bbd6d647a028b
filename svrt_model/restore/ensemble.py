"""Geometric self-ensemble at test time: the mean of a model's outputs over flips and transpositions.

Restoration papers report it as "x8" (EDSR's "+" models): each input is also restored flipped and rotated,
each output is transformed back, and the outputs are averaged. It costs that many forwards and needs no
training; a model trained with the loader's ``dihedral`` augmentation has seen all eight views.

:class:`SelfEnsemble` wraps any restore model (:data:`~svrt_model.restore.restorer.RestoreModel`) and is
one itself, so tiling, evaluation and inference take it unchanged. A view is
:class:`svrt_data.loader.clip_geometry.Dihedral` (flip rows, flip columns, then swap the axes) applied
to the RGB frames and to the spikes alike: voxels ``(B, T, K, Hs, Ws)`` directly, packed bits
(:class:`~svrt_model.spike.inputs.RawSpikes`) unpacked, transformed and packed again. Time and spike bins
are untouched. ``views=8`` needs spikes at the same RGB/spike ratio on both axes (a transposed clip swaps
them); ``views=4`` (flips only) and ``2`` (left-right) do not.
"""

from __future__ import annotations

from itertools import product

import torch
from torch import nn

from kernels.packed_bits import pack_bits, unpack_bits
from svrt_data.loader.clip_geometry import Dihedral
from svrt_errors import SvrtValueError
from svrt_model.errors import ModelInputError
from svrt_model.spike.inputs import RawSpikes

__all__ = ["ENSEMBLE_VIEWS", "SelfEnsemble", "dihedral_views", "invert_view", "view"]

ENSEMBLE_VIEWS = (1, 2, 4, 8)
"""Views an ensemble may average: 1 (the model alone), 2 (+ left-right flip), 4 (all flips), 8 (and transposed)."""


def dihedral_views(n: int) -> list[Dihedral]:
    """The first ``n`` (:data:`ENSEMBLE_VIEWS`) of the eight views, the identity first."""
    if isinstance(n, bool) or n not in ENSEMBLE_VIEWS:
        raise SvrtValueError(f"self-ensemble views must be one of {ENSEMBLE_VIEWS}, got {n!r}")
    views = [Dihedral(fy, fx, tr) for tr, fy, fx in product((False, True), repeat=3)]
    return views[:n]


def view(d: Dihedral, x: torch.Tensor) -> torch.Tensor:
    """``x (..., H, W)`` seen through ``d`` (:meth:`Dihedral.apply` on the last two axes)."""
    dims = [a for a, f in ((-2, d.flip_y), (-1, d.flip_x)) if f]
    if dims:
        x = x.flip(dims)
    return x.transpose(-2, -1).contiguous() if d.transpose else x


def invert_view(d: Dihedral, x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`view`: swap back first, then flip."""
    if d.transpose:
        x = x.transpose(-2, -1)
    dims = [a for a, f in ((-2, d.flip_y), (-1, d.flip_x)) if f]
    return x.flip(dims) if dims else x


def _view_spikes(d: Dihedral, spikes: torch.Tensor | RawSpikes | None) -> torch.Tensor | RawSpikes | None:
    if spikes is None or d == Dihedral():
        return spikes
    if isinstance(spikes, RawSpikes):
        planes = view(d, unpack_bits(spikes.bits, spikes.width)).contiguous()
        width = planes.shape[-1]
        return RawSpikes(pack_bits(planes), spikes.ranges, width if width % 8 else None)
    return view(d, spikes)


def _spike_hw(spikes: torch.Tensor | RawSpikes) -> tuple[int, int]:
    if isinstance(spikes, RawSpikes):
        return spikes.bits.shape[-2], spikes.width or 8 * spikes.bits.shape[-1]
    return spikes.shape[-2], spikes.shape[-1]


class SelfEnsemble(nn.Module):
    """``model``'s output averaged over ``views`` flips / transpositions of its input (module docstring).

    Args:
        model: ``model(rgb (B, T, 3, H, W), spikes) -> (B, T, 3, H, W)``; a VRT-based model keeps its input
            rules (:attr:`vrt`), so :func:`~svrt_model.restore.restorer.input_rules` reads them through the
            wrapper.
        views: 1, 2, 4 or 8 (:func:`dihedral_views`).
    """

    def __init__(self, model: nn.Module, views: int = 8) -> None:
        super().__init__()
        self.model = model
        self.views = dihedral_views(views)

    @property
    def vrt(self) -> nn.Module | None:
        return getattr(self.model, "vrt", None)

    def forward(self, rgb: torch.Tensor, spikes: torch.Tensor | RawSpikes | None = None) -> torch.Tensor:
        if spikes is not None and any(d.transpose for d in self.views):
            (h, w), (hs, ws) = rgb.shape[-2:], _spike_hw(spikes)
            if h * ws != w * hs:
                raise ModelInputError(f"self-ensemble: 8 views transpose the clip, which needs the same RGB/spike "
                                      f"ratio on both axes; got RGB {h}x{w} with spikes {hs}x{ws}: use 4 views "
                                      "(flips only)")
        total = None
        for d in self.views:
            out = invert_view(d, self.model(view(d, rgb), _view_spikes(d, spikes))).float()
            total = out if total is None else total + out
        return total / len(self.views)
