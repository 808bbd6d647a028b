"""What one sequence of a raw dataset contributes to a store, resolved and checked before any write.

:func:`plan_sequence_sources` turns an align log plus the raw folder into :class:`SequenceSource`
objects: the blurry/sharp image files, the spike frames each source file must contribute
(``[floor(min t0), ceil(max t1))`` of the windows that use it, concatenated in first-use order) and
the windows re-expressed in the concatenated (stored) frame units. Everything is validated here, so
a bad input fails before the first byte is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from svrt_data.align import AlignLog, validate_align_log
from svrt_data.geometry import Geometry
from svrt_data.spike_io import PackedStream, SpikeStream
from svrt_errors import StoreError, SvrtValueError

__all__ = ["SpikeRange", "SequenceSource", "ConcatSpikes", "plan_sequence_sources", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class SpikeRange:
    """Frames ``[start, start + frames)`` of ``file`` stored at ``offset`` in the sequence's spikes array."""

    file: str  # relative to the raw root
    start: int
    frames: int
    offset: int


@dataclass(frozen=True)
class SequenceSource:
    split: str
    sequence: str
    raw_root: Path
    geometry: Geometry
    blur_files: tuple[str, ...]
    sharp_files: tuple[str, ...] | None
    rgb_shape: tuple[int, int]
    spike_ranges: tuple[SpikeRange, ...]
    windows: np.ndarray  # float64 (N, 2) in stored spike-frame units

    @property
    def key(self) -> str:
        return f"{self.split}/{self.sequence}" if self.split else self.sequence

    @property
    def n_frames(self) -> int:
        return len(self.blur_files)

    @property
    def n_spike_frames(self) -> int:
        return sum(r.frames for r in self.spike_ranges)

    def spikes(self) -> ConcatSpikes:
        return ConcatSpikes(self)


class ConcatSpikes(PackedStream):
    """The sequence's stored spike frames, read lazily from the source ``.dat`` files."""

    def __init__(self, source: SequenceSource) -> None:
        self.geometry = source.geometry
        self._ranges = source.spike_ranges
        self._streams = {r.file: SpikeStream(source.raw_root / r.file, source.geometry) for r in self._ranges}
        self._n = source.n_spike_frames

    def packed(self, start: int | None = None, stop: int | None = None) -> np.ndarray:
        a, b = self._range(start, stop)
        parts = []
        for r in self._ranges:
            lo, hi = max(a, r.offset), min(b, r.offset + r.frames)
            if lo < hi:
                s = r.start + lo - r.offset
                parts.append(self._streams[r.file].packed(s, s + hi - lo))
        if not parts:
            return np.zeros((0, self.height, self.width // 8), np.uint8)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _image_size(path: Path) -> tuple[int, int]:
    """The image's size, after reading all of it: a file cut short (a valid header and a truncated body)
    fails here, before anything is written. PNGs are checked by their chunk CRCs (no decoding), other
    formats are decoded."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.mode not in ("RGB", "RGBA", "L", "P"):
                raise SvrtValueError(f"{path}: image mode {im.mode} is not 8-bit RGB/gray; convert it to 8-bit RGB")
            if im.format == "PNG":
                im.verify()
            else:
                im.load()
    except (OSError, SyntaxError, ValueError) as exc:  # PIL reports damage as any of these
        raise SvrtValueError(f"{path}: cannot read this image ({exc or type(exc).__name__}); the file is truncated "
                             "or damaged: replace it") from None
    return h, w


def plan_sequence_sources(
    raw_root: str | Path,
    log: AlignLog,
    *,
    blur_dir: str = "blur",
    sharp_dir: str | None = "sharp",
    sequences: list[str] | None = None,
) -> list[SequenceSource]:
    """Resolve and validate every sequence of ``log`` (optionally only those named in ``sequences``,
    as ``split/sequence`` or ``sequence``). Raises before anything is written."""
    root = Path(raw_root)
    validate_align_log(log, root, check_blur_frames=False)
    out: list[SequenceSource] = []
    problems: list[str] = []
    for (split, seq), entries in log.sequences().items():
        key = f"{split}/{seq}" if split else seq
        if sequences is not None and key not in sequences and seq not in sequences:
            continue
        folder = root / split / seq
        blur = _images(folder / blur_dir)
        if len(blur) != len(entries):
            problems.append(f"{key}: {len(blur)} images in {folder / blur_dir} but {len(entries)} frames in the "
                            "align log; every blurry frame needs its window and vice versa")
            continue
        sharp = _images(folder / sharp_dir) if sharp_dir else []
        if sharp and len(sharp) != len(blur):
            problems.append(f"{key}: {len(sharp)} sharp images but {len(blur)} blurry ones in {folder}")
            continue
        sizes = {_image_size(p) for p in blur + sharp}
        if len(sizes) != 1:
            problems.append(f"{key}: images of different sizes {sorted(sizes)}; all frames must match")
            continue
        ranges: dict[str, list[float]] = {}
        for e in entries:
            lo_hi = ranges.setdefault(e.spike_file, [math.inf, -math.inf])
            lo_hi[0] = min(lo_hi[0], e.t0)
            lo_hi[1] = max(lo_hi[1], e.t1)
        spike_ranges, offset, base = [], 0, {}
        for f, (lo, hi) in ranges.items():
            start, stop = math.floor(lo), math.ceil(hi)
            spike_ranges.append(SpikeRange(f, start, stop - start, offset))
            base[f] = offset - start
            offset += stop - start
        # Windows move by whole frames only (exact for the integer and dyadic ends of real layouts; other
        # ends may move by one ulp). Voxels are computed from these stored windows, so the store is
        # self-consistent: re-binning its spikes with its windows reproduces its voxels exactly.
        windows = np.array([[e.t0 + base[e.spike_file], e.t1 + base[e.spike_file]] for e in entries],
                           dtype=np.float64).reshape(-1, 2)
        out.append(SequenceSource(
            split, seq, root, log.geometry, tuple(p.relative_to(root).as_posix() for p in blur),
            tuple(p.relative_to(root).as_posix() for p in sharp) if sharp else None,
            sizes.pop(), tuple(spike_ranges), windows,
        ))
    if sequences is not None:
        known = {s.key for s in out} | {s.sequence for s in out}
        missing = [s for s in sequences if s not in known]
        if missing:
            problems.append(f"--sequences names not in the align log: {missing}")
    if problems:
        listing = "\n  ".join(problems)
        raise StoreError(f"raw dataset {root} cannot be stored: {len(problems)} problem(s):\n  {listing}")
    return out
