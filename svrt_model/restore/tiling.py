"""The published test-time tiling of VRT (Liang et al., 2022; the official ``main_test_vrt.py``), as a plan.

Whole sequences rarely fit a forward pass, so VRT's results are measured on tiles:

- **Temporal clips** of ``frames`` frames starting at ``range(0, N - frames, frames - frame_overlap)``
  plus ``N - frames``; a frame held by several clips gets the mean of their outputs. A sequence shorter
  than a clip is one clip of all its frames.
- **Spatial patches** of ``height x width`` with ``overlap`` pixels, starting at
  ``range(0, H - P, P - overlap)`` plus ``H - P`` per axis (P is the patch size on that axis). Each
  patch is an independent forward pass (its own flows). Its output is weighted 0 on the
  ``overlap / 2`` pixels along every side that borders another patch (the official code clears
  ``ceil(overlap / 2)`` at the end side and ``floor(overlap / 2)`` at the start side, through Python's
  ``-overlap // 2``) and 1 elsewhere; overlapping outputs are averaged with these weights.
- **Untiled** (``frames = 0`` / ``height = width = 0``, or ``tile=None``): the whole sequence in one
  pass, frames padded at the end to a multiple of the temporal window and pixels to a multiple of the
  spatial one by mirroring (the official ``cat([x, flip(x[-pad:])])``), and the output cropped.

Spike tiles cover exactly the RGB tile's scene at the spike resolution: offsets and sizes go through
the spike/RGB scale grid of :class:`svrt_data.loader.clip_geometry.AxisScale` (half-resolution spikes need
even tile sizes and overlaps), never rounded. Whatever a model cannot take (a patch below its minimum
size, a clip below its minimum length) is padded the same mirrored way and cropped back.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from svrt_data.loader.clip_geometry import AxisScale
from svrt_errors import SvrtValueError
from svrt_model.config import VRTConfig

__all__ = [
    "DEFAULT_TILE",
    "AxisPlan",
    "InputRules",
    "Tile",
    "axis_plan",
    "mirror_index",
    "tile_starts",
    "with_clip_len",
]


@dataclass(frozen=True)
class Tile:
    """Tile sizes and overlaps of the test-time protocol (0 along an axis: that axis is not tiled).

    Args:
        frames: frames per temporal clip (0: the whole sequence, padded to the temporal window).
        height, width: spatial patch size in RGB pixels (0: the whole frame along that axis).
        frame_overlap: frames shared by neighbouring clips (averaged).
        overlap: pixels shared by neighbouring patches (borders of ``overlap / 2`` weighted 0, then averaged).
    """

    frames: int = 18
    height: int = 192
    width: int = 192
    frame_overlap: int = 2
    overlap: int = 20

    def __post_init__(self) -> None:
        for name in ("frames", "height", "width", "frame_overlap", "overlap"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise SvrtValueError(f"Tile: {name} must be an integer >= 0, got {v!r}")
        if self.frames and self.frame_overlap >= self.frames:
            raise SvrtValueError(f"Tile: frame_overlap ({self.frame_overlap}) must be smaller than frames "
                                 f"({self.frames}), or clips never advance")
        for name in ("height", "width"):
            size = getattr(self, name)
            if size and self.overlap >= size:
                raise SvrtValueError(f"Tile: overlap ({self.overlap}) must be smaller than the patch {name} ({size})")

    @property
    def untiled(self) -> bool:
        return self.frames == 0 and self.height == 0 and self.width == 0

    @classmethod
    def parse(cls, text: str) -> Tile | None:
        """``"none"`` (untiled: None), ``"default"`` (:data:`DEFAULT_TILE`) or ``"TxHxW"`` (default overlaps)."""
        t = text.strip().lower()
        if t == "none":
            return None
        if t == "default":
            return DEFAULT_TILE
        parts = t.split("x")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise SvrtValueError(f"tile: expected 'none', 'default' or TxHxW such as 18x192x192 (0 leaves an axis "
                                 f"untiled), got {text!r}")
        f, h, w = (int(p) for p in parts)
        # the protocol's overlaps, shrunk where a tile is too small to hold them
        frame_overlap = min(DEFAULT_TILE.frame_overlap, max(f - 1, 0))
        smallest = min((v for v in (h, w) if v), default=0)
        overlap = min(DEFAULT_TILE.overlap, max(smallest - 1, 0))
        return cls(frames=f, height=h, width=w, frame_overlap=frame_overlap, overlap=overlap)

    def describe(self) -> str:
        if self.untiled:
            return "untiled"
        return (f"{self.frames or 'all'} frames x {self.height or 'full'} x {self.width or 'full'} px, overlap "
                f"{self.frame_overlap} frames / {self.overlap} px")


DEFAULT_TILE = Tile()
"""VRT's GoPro deblurring protocol: clips of 18 frames overlapping by 2, 192x192 patches overlapping by 20."""


def with_clip_len(tile: Tile | None, clip_len: int | None) -> Tile | None:
    """``tile`` with temporal clips of ``clip_len`` frames (e.g. a model's training length), overlapping by the
    tile's frame overlap (the protocol's 2 when ``tile`` is None: whole frames, clips in time only), shrunk to
    fit; ``clip_len=None`` leaves ``tile`` as it is."""
    if clip_len is None:
        return tile
    if isinstance(clip_len, bool) or not isinstance(clip_len, int) or clip_len < 1:
        raise SvrtValueError(f"clip_len must be a positive integer or None, got {clip_len!r}")
    base = tile if tile is not None else Tile(frames=0, height=0, width=0, overlap=0)
    return dataclasses.replace(base, frames=clip_len, frame_overlap=min(base.frame_overlap, clip_len - 1))


@dataclass(frozen=True)
class InputRules:
    """What a model accepts; the restorer pads (mirrored) and crops so each forward satisfies it.

    Args:
        frame_multiple: untiled passes pad the frames to a multiple of this (VRT: its temporal window).
        min_frames: the fewest frames a forward takes (VRT: 2).
        size_multiple: H and W of a forward are multiples of this (VRT: 8).
        min_size: ``(H, W)`` minimum of a forward (VRT: 8 x its window).
    """

    frame_multiple: int = 1
    min_frames: int = 1
    size_multiple: int = 1
    min_size: tuple[int, int] = (1, 1)

    @classmethod
    def for_vrt(cls, config: VRTConfig) -> InputRules:
        """The rules of :class:`svrt_model.vrt.VRT` (and of models built on it) for ``config``: sizes multiples
        of 8 and at least 8 windows; at least 40 px, because SpyNet's 6-level pyramid of a 32 px frame ends in
        an empty level (``VRT.check_input`` lets 32 px through for 4 px windows; the forward then fails)."""
        wd, wh, ww = config.window_size
        return cls(frame_multiple=wd, min_frames=2, size_multiple=8, min_size=(max(8 * wh, 40), max(8 * ww, 40)))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def mirror_index(n: int, length: int) -> torch.Tensor:
    """Indices ``(length,)`` of ``n`` items extended at the end by mirroring: ``0..n-1, n-1, n-2, ..., 0, 0, 1, ...``.

    For ``length - n <= n`` this is the official ``cat([x, flip(x[-pad:])])``; longer pads keep mirroring.
    """
    if n < 1 or length < n:
        raise SvrtValueError(f"mirror_index: cannot extend {n} items to {length}")
    i = torch.arange(length) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of the tiles along one axis (frames of a sequence, or pixels): ``range(0, L - P, P - overlap)``
    plus ``L - P``; one tile of the whole axis when ``tile`` is 0 or at least L."""
    if tile == 0 or tile >= length:
        return [0]
    return list(range(0, length - tile, tile - overlap)) + [length - tile]


@dataclass(frozen=True)
class AxisPlan:
    """The patches along one spatial axis of a frame: RGB and spike starts, sizes, padded sizes and weights."""

    starts: tuple[int, ...]  # RGB pixels
    size: int  # RGB pixels per patch (the frame's size when not tiled, or when smaller than the tile)
    padded: int  # size of the forward after padding (>= size)
    spike_starts: tuple[int, ...]
    spike_size: int
    spike_padded: int
    weights: tuple[torch.Tensor, ...]  # float32 (size,) per patch: 0 on interior borders, else 1

    def index(self) -> torch.Tensor:
        return mirror_index(self.size, self.padded)

    def spike_index(self) -> torch.Tensor:
        return mirror_index(self.spike_size, self.spike_padded)


def axis_plan(length: int, tile: int, overlap: int, scale: AxisScale, *, multiple: int, minimum: int,
              axis: str = "height") -> AxisPlan:
    """Patches along one axis of ``length`` RGB pixels (see the module docstring).

    Args:
        length: the frame's size on this axis (RGB pixels).
        tile: the patch size (0: untiled).
        overlap: pixels shared by neighbouring patches.
        scale: the spike/RGB scale on this axis.
        multiple, minimum: what the model needs of a forward's size on this axis.
        axis: for messages.
    """
    size = length if tile == 0 else min(tile, length)
    step = scale.step
    if tile and length > tile:
        for what, v in (("patch", tile), ("overlap", overlap)):
            if v % step:
                raise SvrtValueError(
                    f"tiling: the {what} {axis} {v} does not map to whole spike pixels (spike/RGB scale "
                    f"{scale.spike}/{scale.rgb} = {scale.ratio}); use a multiple of {step}"
                )
        if tile % multiple or tile < minimum:
            raise SvrtValueError(f"tiling: the model needs patch {axis}s that are multiples of {multiple} and at "
                                 f"least {minimum}, got {tile}; e.g. {max(_round_up(tile, multiple), minimum)}")
    starts = tile_starts(length, tile, overlap)
    grid = math.lcm(multiple, step)
    padded = _round_up(max(size, minimum), grid)
    n = len(starts)
    weights = []
    for i in range(n):
        w = torch.ones(size)
        if i < n - 1:
            w[size - (-(-overlap // 2)) :] = 0  # ceil(overlap / 2) at the end, as the official -overlap//2
        if i > 0:
            w[: overlap // 2] = 0
        weights.append(w)
    return AxisPlan(
        starts=tuple(starts), size=size, padded=padded,
        spike_starts=tuple(scale.to_spike(s) for s in starts), spike_size=scale.to_spike(size),
        spike_padded=scale.to_spike(padded), weights=tuple(weights),
    )
