"""Which clips a dataset serves, and every random choice of one clip, from ``(seed, epoch, index)`` alone.

A :class:`ClipPlan` is pure: it knows the sequences' sizes and windows, never reads pixels, and
:meth:`ClipPlan.spec` turns a clip number into a :class:`ClipSpec` (frames, crop box, flips, spike
frames). The same ``(seed, epoch, index)`` always gives the same spec, in any process, whatever the
number of DataLoader workers.

**Training** (``mode="train"``). Each sequence of ``N`` frames is cut into slots of ``stride`` starts:
slot ``j`` covers first frames ``[j * stride, min((j + 1) * stride - 1, N - T)]`` and the clip's first
frame is drawn uniformly in it (``jitter=True``; otherwise it is the slot's first). One epoch serves
every slot once, so every frame is equally likely to be seen, and each clip is ``T`` consecutive
frames, in time order. The crop offset is drawn uniformly on the scale grid
(:mod:`svrt_data.loader.clip_geometry`), and the flips / transpose each with probability 1/2 (``augment``
``"dihedral"``: all 8 symmetries; ``"flips"``: the 4 without transposition; ``"none"``).

**Evaluation** (``mode="eval"``). No randomness: clips start at ``0, stride, 2 stride, ...`` and one more
clip is aligned to the end (first frame ``N - T``) when the last regular one stops short of it, so
every frame is in at least one clip. With ``stride < T`` or the end-aligned clip, frames appear in
several clips (see :class:`svrt_data.loader.assemble.SequenceAssembler`). Frames are full, or a crop
centred on the scale grid when ``crop`` is given.

Random draws per clip, in this order, from ``numpy.random.default_rng([seed, epoch, index])``: the
start within the slot, the three flip/transpose coin flips (always drawn, then masked by ``augment``),
the crop's y, then x grid position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from svrt_data.loader.clip_geometry import IDENTITY, AxisScale, Dihedral
from svrt_errors import SvrtValueError

__all__ = ["AUGMENTS", "ClipSpec", "ClipPlan", "ClipSource"]

AUGMENTS = ("none", "flips", "dihedral")
Augment = Literal["none", "flips", "dihedral"]


@dataclass(frozen=True)
class ClipSource:
    """A sequence clips are cut from, as the plan sees it: its name, sizes and (for raw spikes) its windows."""

    key: str
    n_frames: int
    rgb_shape: tuple[int, int]
    spike_shape: tuple[int, int]
    windows: np.ndarray | None = None  # float64 (N, 2); needed for raw spike input

    def scales(self) -> tuple[AxisScale, AxisScale]:
        return AxisScale(self.rgb_shape[0], self.spike_shape[0]), AxisScale(self.rgb_shape[1], self.spike_shape[1])


@dataclass(frozen=True)
class ClipSpec:
    """One clip: read ``box`` (RGB) / ``spike_box`` (spikes) of frames ``[start, start + length)``, then
    apply ``dihedral``. Boxes are ``(y0, x0, h, w)`` in the stored (untransformed) frame, so the output
    is ``(w, h)``-sized when ``dihedral.transpose``. ``spike_range`` ``[lo, hi)``: the spike frames the
    clip's windows need (raw input only)."""

    index: int
    epoch: int
    seq: int
    start: int
    length: int
    box: tuple[int, int, int, int]
    spike_box: tuple[int, int, int, int]
    dihedral: Dihedral
    spike_range: tuple[int, int] | None = None

    @property
    def frames(self) -> np.ndarray:
        return np.arange(self.start, self.start + self.length, dtype=np.int64)

    @property
    def out_shape(self) -> tuple[int, int]:
        return self.dihedral.source_shape(self.box[2], self.box[3])

    @property
    def spike_out_shape(self) -> tuple[int, int]:
        return self.dihedral.source_shape(self.spike_box[2], self.spike_box[3])


def _spike_ranges(windows: np.ndarray, clip_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Per first frame s: ``[floor(min t0), ceil(max t1))`` over the windows of frames ``[s, s + T)``."""
    t0 = np.lib.stride_tricks.sliding_window_view(windows[:, 0], clip_len).min(axis=1)
    t1 = np.lib.stride_tricks.sliding_window_view(windows[:, 1], clip_len).max(axis=1)
    return np.floor(t0).astype(np.int64), np.ceil(t1).astype(np.int64)


class ClipPlan:
    """The clips of a dataset (see the module docstring). Raises :class:`SvrtValueError` for requests
    that no clip of some sequence can satisfy, naming the sequence, expected and got, and the fix."""

    def __init__(
        self,
        sequences: Sequence[ClipSource],
        *,
        clip_len: int,
        stride: int,
        crop: tuple[int, int] | None,
        mode: Literal["train", "eval"],
        augment: Augment,
        seed: int,
        jitter: bool = True,
        raw_spikes: bool = False,
    ) -> None:
        self.sequences = list(sequences)
        self.clip_len, self.stride, self.crop = clip_len, stride, crop
        self.mode, self.augment, self.seed, self.jitter = mode, augment, seed, jitter
        self.raw_spikes = raw_spikes
        if mode not in ("train", "eval"):
            raise SvrtValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        if augment not in AUGMENTS:
            raise SvrtValueError(f"augment must be one of {AUGMENTS} (or True/False), got {augment!r}")
        if mode == "eval" and augment != "none":
            raise SvrtValueError(f"augment={augment!r} with mode='eval': evaluation is deterministic; "
                                 "use augment='none'")
        if not self.sequences:
            raise SvrtValueError("the dataset holds no sequence; check the split and the `sequences` filter")
        problems = []
        for s in self.sequences:
            problems += self._check_sequence(s)
        if problems:
            raise SvrtValueError("clips cannot be made as asked:\n  " + "\n  ".join(problems))
        rows = []  # (sequence, first start, last start)
        for i, s in enumerate(self.sequences):
            last = s.n_frames - clip_len
            if mode == "train":
                for lo in range(0, last + 1, stride):
                    rows.append((i, lo, min(lo + stride - 1, last) if jitter else lo))
            else:
                starts = list(range(0, last + 1, stride))
                if starts[-1] != last:
                    starts.append(last)
                rows += [(i, st, st) for st in starts]
        self.table = np.array(rows, np.int64).reshape(-1, 3)
        self._ranges = None
        self.max_spike_frames = 0
        if raw_spikes:
            self._ranges = [_spike_ranges(s.windows, clip_len) for s in self.sequences]
            self.max_spike_frames = max(
                int((hi[a : b + 1] - lo[a : b + 1]).max())
                for (i, a, b) in self.table
                for lo, hi in [self._ranges[i]]
            )

    # -- checks -------------------------------------------------------------------------------
    def _check_sequence(self, s: ClipSource) -> list[str]:
        t = self.clip_len
        h, w = s.rgb_shape
        if s.n_frames < t:
            return [f"sequence {s.key}: clip_len={t} is longer than its {s.n_frames} frames; use clip_len <= "
                    f"{s.n_frames} or leave it out with sequences=[...]"]
        sy, sx = s.scales()
        out = []
        if self.raw_spikes and s.spike_shape[1] % 8:
            out.append(f"sequence {s.key}: raw spike input needs a spike width that is a multiple of 8, got "
                       f"{s.spike_shape[1]}; use spike_input='voxels'")
        transpose = self.augment == "dihedral"
        if transpose and sy.ratio != sx.ratio:
            out.append(f"sequence {s.key}: transposing needs the same spike/RGB scale on both axes, got "
                       f"{sy.ratio} (y) and {sx.ratio} (x); use augment='flips'")
        if self.crop is None:
            if transpose and h != w:
                out.append(f"sequence {s.key}: full {h}x{w} frames cannot be transposed into the same shape; give "
                           "a square crop or use augment='flips'")
            return out
        ch, cw = self.crop
        if ch > h or cw > w:
            out.append(f"sequence {s.key}: crop {ch}x{cw} is larger than its {h}x{w} frames; use a crop of at "
                       f"most {h}x{w}")
            return out
        if transpose and (cw > h or ch > w):
            out.append(f"sequence {s.key}: crop {ch}x{cw} transposed ({cw}x{ch}) does not fit its {h}x{w} frames; "
                       "use a crop that fits both ways or augment='flips'")
        for axis, size, sc in (("height", ch, sy), ("width", cw, sx)):
            if not sc.on_grid(size):
                lower = size // sc.step * sc.step
                out.append(
                    f"sequence {s.key}: crop {axis} {size} does not map to whole spike pixels (spike/RGB scale "
                    f"{sc.spike}/{sc.rgb} = {sc.ratio}); use a multiple of {sc.step}, e.g. {lower or sc.step}"
                )
        if self.raw_spikes and not out:
            hs, ws = sy.to_spike(ch), sx.to_spike(cw)
            if ws % 8 or (transpose and hs % 8):
                need = "height and width" if transpose else "width"
                out.append(f"sequence {s.key}: raw spike input packs 8 pixels per byte, so the spike crop {need} "
                           f"must be multiples of 8; crop {ch}x{cw} gives spike crop {hs}x{ws}")
        return out

    # -- clips ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.table)

    def clips_of(self, seq: int) -> np.ndarray:
        """The clip numbers of sequence ``seq``, in frame order."""
        return np.flatnonzero(self.table[:, 0] == seq)

    def spec(self, index: int, epoch: int = 0) -> ClipSpec:
        """The clip ``index`` of epoch ``epoch`` (negative indices count from the end)."""
        n = len(self.table)
        if not -n <= index < n:
            raise IndexError(f"clip {index} out of range for a dataset of {n} clips")
        index %= n
        seq, lo, hi = (int(v) for v in self.table[index])
        s = self.sequences[seq]
        sy, sx = s.scales()
        h, w = s.rgb_shape
        if self.mode == "train":
            rng = np.random.default_rng([self.seed, epoch, index])
            start = lo + int(rng.integers(0, hi - lo + 1))
            coins = rng.random(3) < 0.5
            dihedral = Dihedral(
                bool(coins[0]) and self.augment != "none",
                bool(coins[1]) and self.augment != "none",
                bool(coins[2]) and self.augment == "dihedral",
            )
        else:
            rng, start, dihedral = None, lo, IDENTITY
        if self.crop is None:
            box = (0, 0, h, w)
        else:
            rh, rw = dihedral.source_shape(*self.crop)
            if rng is not None:
                y0 = sy.step * int(rng.integers(0, (h - rh) // sy.step + 1))
                x0 = sx.step * int(rng.integers(0, (w - rw) // sx.step + 1))
            else:
                y0 = (h - rh) // 2 // sy.step * sy.step
                x0 = (w - rw) // 2 // sx.step * sx.step
            box = (y0, x0, rh, rw)
        spike_box = tuple(sc.to_spike(v) for v, sc in zip(box, (sy, sx, sy, sx), strict=True))
        spike_range = None
        if self._ranges is not None:
            lo_f, hi_f = self._ranges[seq]
            spike_range = (int(lo_f[start]), int(hi_f[start]))
        return ClipSpec(index, epoch, seq, start, self.clip_len, box, spike_box, dihedral, spike_range)

    def coverage(self) -> list[np.ndarray]:
        """Eval: per sequence, how many clips hold each frame (every entry >= 1)."""
        counts = [np.zeros(s.n_frames, np.int64) for s in self.sequences]
        for seq, lo, _ in self.table:
            counts[seq][lo : lo + self.clip_len] += 1
        return counts

