"""Align logs: which spike window belongs to which blurry frame.

An align log maps each blurry frame ``(split, sequence, frame)`` of a raw dataset to a spike file and
a window ``[t0, t1)`` in spike-frame units (floats; frame ``t`` is the instant ``t``). It is a small
CSV file with a versioned header::

    # svrt-align-log
    # format_version: 1
    # rate_hz: 20000
    # height: 360
    # width: 640
    # flip: true
    # rule: per-frame-files frames_per_blur=NN*8
    split,sequence,frame,spike_file,t0,t1
    train,GOPR0372_07_00,0,train/GOPR0372_07_00/spike/000000.dat,0,56

``spike_file`` is relative to the raw dataset root, with ``/`` separators. ``split`` may be empty for
datasets without splits. Header keys other than ``rule`` are required; unknown keys are kept.
Numbers are written so that reading gives back exactly the same floats.

Logs are made from timing rules (:class:`PerFrameFiles`, :class:`CentredExposure`,
:class:`Timestamps`) by :func:`build_align_log`, and checked against the streams by
:func:`validate_align_log`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from svrt_data.geometry import Geometry
from svrt_data.names import name_problem, path_problem
from svrt_data.spike_io import SpikeStream
from svrt_errors import AlignLogError, SpikeFormatError

__all__ = [
    "FORMAT_VERSION",
    "AlignEntry",
    "AlignHeader",
    "AlignLog",
    "PerFrameFiles",
    "CentredExposure",
    "Timestamps",
    "SequenceDir",
    "build_align_log",
    "discover_sequences",
    "read_align_log",
    "write_align_log",
    "is_align_log",
    "validate_align_log",
    "frames_per_blur_for",
]

FORMAT_VERSION = 1
MAGIC = "svrt-align-log"
COLUMNS = ("split", "sequence", "frame", "spike_file", "t0", "t1")
_REQUIRED_KEYS = ("format_version", "rate_hz", "height", "width", "flip")
_MAX_LISTED = 20


@dataclass(frozen=True)
class AlignHeader:
    """What the log's header says about the streams it points to."""

    rate_hz: float
    height: int
    width: int
    flip: bool
    rule: str = ""
    format_version: int = FORMAT_VERSION
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.height, self.width, self.flip, self.rate_hz, name=f"{self.height}x{self.width}")

    @classmethod
    def from_geometry(cls, geometry: Geometry, rule: str = "") -> AlignHeader:
        if geometry.row_width != geometry.width:
            raise AlignLogError(
                f"align logs describe plain HxW streams; geometry {geometry.describe()} strips columns. "
                "Convert the captures first (read, then write_dat) or extend the format."
            )
        return cls(geometry.rate_hz, geometry.height, geometry.width, geometry.flip, rule)


@dataclass(frozen=True)
class AlignEntry:
    """One blurry frame and its spike window ``[t0, t1)`` inside ``spike_file``."""

    split: str
    sequence: str
    frame: int
    spike_file: str
    t0: float
    t1: float
    line: int = field(default=0, compare=False)  # source line (0 when not read from a file)

    @property
    def key(self) -> tuple[str, str]:
        return (self.split, self.sequence)

    @property
    def window_text(self) -> str:
        return f"[{_format_number(self.t0)}, {_format_number(self.t1)})"

    def where(self) -> str:
        return f"line {self.line}" if self.line else f"{self.split}/{self.sequence} frame {self.frame}"


@dataclass
class AlignLog:
    header: AlignHeader
    entries: list[AlignEntry]

    def sequences(self) -> dict[tuple[str, str], list[AlignEntry]]:
        """Entries grouped by ``(split, sequence)``, each list sorted by frame (insertion order kept)."""
        groups: dict[tuple[str, str], list[AlignEntry]] = defaultdict(list)
        for e in self.entries:
            groups[e.key].append(e)
        return {k: sorted(v, key=lambda e: e.frame) for k, v in groups.items()}

    def windows(self, split: str, sequence: str) -> list[tuple[str, float, float]]:
        """``(spike_file, t0, t1)`` per frame of one sequence, in frame order."""
        seq = self.sequences().get((split, sequence))
        if seq is None:
            raise AlignLogError(f"align log has no sequence {split}/{sequence}")
        return [(e.spike_file, e.t0, e.t1) for e in seq]

    @property
    def geometry(self) -> Geometry:
        return self.header.geometry


# -- reading and writing --------------------------------------------------------------------------


def _format_number(t: float) -> str:
    t = float(t)
    return str(int(t)) if t.is_integer() and abs(t) < 2**53 else repr(t)


def _parse_bool(text: str, where: str) -> bool:
    v = text.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise AlignLogError(f"{where}: flip must be true or false, got {text!r}")


def read_align_log(path: str | os.PathLike) -> AlignLog:
    """Parse an align log. Errors name the file and line and say what was expected."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AlignLogError(f"{path}: align log not found") from None
    lines = text.splitlines()
    if not lines or lines[0].strip().lstrip("#").strip() != MAGIC:
        got = repr(lines[0]) if lines else "an empty file"
        raise AlignLogError(f"{path} line 1: expected the header '# {MAGIC}', got {got}")
    meta: dict[str, str] = {}
    body_start = None
    for i, raw in enumerate(lines[1:], start=2):
        s = raw.strip()
        if not s:
            continue
        if s.startswith("#"):
            key, sep, value = s.lstrip("#").partition(":")
            if not sep:
                raise AlignLogError(f"{path} line {i}: header lines are '# key: value', got {raw!r}")
            meta[key.strip()] = value.strip()
            continue
        body_start = i
        break
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if missing:
        raise AlignLogError(f"{path}: header lacks {', '.join(missing)} (required: {', '.join(_REQUIRED_KEYS)})")
    where = f"{path} header"
    try:
        version = int(meta["format_version"])
    except ValueError:
        raise AlignLogError(f"{where}: format_version must be an integer, got {meta['format_version']!r}") from None
    if version != FORMAT_VERSION:
        raise AlignLogError(
            f"{where}: format_version {version} is not supported (this svrt reads version {FORMAT_VERSION}); "
            "upgrade svrt or regenerate the log with `svrt-data align`"
        )
    try:
        header = AlignHeader(
            rate_hz=float(meta["rate_hz"]),
            height=int(meta["height"]),
            width=int(meta["width"]),
            flip=_parse_bool(meta["flip"], where),
            rule=meta.get("rule", ""),
            format_version=version,
            extra=tuple((k, v) for k, v in meta.items() if k not in (*_REQUIRED_KEYS, "rule")),
        )
        header.geometry  # noqa: B018 - validates height/width/rate
    except ValueError as exc:
        raise AlignLogError(f"{where}: {exc}") from None
    if body_start is None:
        raise AlignLogError(f"{path}: no column header; expected '{','.join(COLUMNS)}'")
    cols = [c.strip() for c in lines[body_start - 1].split(",")]
    if tuple(cols) != COLUMNS:
        raise AlignLogError(f"{path} line {body_start}: expected columns {','.join(COLUMNS)}, got {','.join(cols)}")
    entries: list[AlignEntry] = []
    reader = csv.reader(lines[body_start:])
    for offset, row in enumerate(reader):
        lineno = body_start + 1 + offset
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(COLUMNS):
            raise AlignLogError(f"{path} line {lineno}: expected {len(COLUMNS)} fields ({','.join(COLUMNS)}), "
                                f"got {len(row)}")
        split, seq, frame_s, spike_file, t0_s, t1_s = (c.strip() for c in row)
        try:
            frame = int(frame_s)
        except ValueError:
            raise AlignLogError(f"{path} line {lineno}: frame must be an integer, got {frame_s!r}") from None
        try:
            t0, t1 = float(t0_s), float(t1_s)
        except ValueError:
            raise AlignLogError(f"{path} line {lineno}: t0 and t1 must be numbers, got {t0_s!r}, {t1_s!r}") from None
        entry = AlignEntry(split, seq, frame, spike_file, t0, t1, lineno)
        why = _name_problems(entry)
        if why:
            raise AlignLogError(f"{path} line {lineno}: {why[0]}")
        entries.append(entry)
    if not entries:
        raise AlignLogError(f"{path}: the log has a header but no rows (no blurry frame has a spike window); "
                            "write it with `svrt-data align RAW_ROOT`")
    return AlignLog(header, entries)


def _name_problems(e: AlignEntry) -> list[str]:
    """What is wrong with the names of one row (they become folders of a store, so they must be plain)."""
    out = []
    if e.split != "" and (why := name_problem(e.split)):
        out.append(f"split {e.split!r} {why}; splits must be plain folder names (or empty)")
    if why := name_problem(e.sequence):
        out.append(f"sequence {e.sequence!r} {why}; sequences must be plain folder names")
    if why := path_problem(e.spike_file):
        out.append(f"spike_file {e.spike_file!r} {why}")
    return out


def is_align_log(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file starting with an align log's header (one svrt may replace)."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(256)
    except OSError:
        return False
    return first.strip().lstrip(b"#").strip() == MAGIC.encode()


def write_align_log(log: AlignLog, path: str | os.PathLike) -> Path:
    """Write ``log`` to ``path`` atomically (a temporary file renamed into place). An existing ``path`` is
    replaced only when it is an align log; anything else is refused."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not is_align_log(path):
        raise AlignLogError(f"{path} exists and is not an align log (no '# {MAGIC}' header); refusing to overwrite "
                            "it. Choose another --out")
    h = log.header
    buf = io.StringIO()
    buf.write(f"# {MAGIC}\n# format_version: {FORMAT_VERSION}\n# rate_hz: {_format_number(h.rate_hz)}\n")
    buf.write(f"# height: {h.height}\n# width: {h.width}\n# flip: {'true' if h.flip else 'false'}\n")
    if h.rule:
        buf.write(f"# rule: {h.rule}\n")
    for k, v in h.extra:
        buf.write(f"# {k}: {v}\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for e in log.entries:
        w.writerow([e.split, e.sequence, e.frame, e.spike_file, _format_number(e.t0), _format_number(e.t1)])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(buf.getvalue())
    os.replace(tmp, path)
    return path


# -- validation -----------------------------------------------------------------------------------


def _problems_error(what: str, problems: list[str]) -> AlignLogError:
    shown = problems[:_MAX_LISTED]
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    return AlignLogError(f"{what}: {len(problems)} problem(s):\n  " + "\n  ".join(shown) + more)


def validate_align_log(log: AlignLog, raw_root: str | os.PathLike, *, check_blur_frames: bool = True) -> None:
    """Check ``log`` against the streams under ``raw_root``; raise one error listing every problem.

    Checks: every spike file exists and is a whole number of frames of the header's geometry; every
    window is non-empty and inside its stream (0 <= t0 < t1 <= frames); frames of a sequence are
    0..N-1 without gaps or duplicates; windows that share a file are ordered (t0 and t1 increase with
    the frame index); with ``check_blur_frames``, a sequence's ``blur/`` folder (if present) holds as
    many images as the log has frames.
    """
    root = Path(raw_root)
    geometry = log.geometry
    if not log.entries:
        raise AlignLogError(f"align log for {root} has no rows (no blurry frame has a spike window)")
    named = [f"{e.where()}: {why}" for e in log.entries for why in _name_problems(e)]
    if named:  # before any of these names is joined to a path
        raise _problems_error(f"align log for {root} names folders that svrt will not create", named)
    problems: list[str] = []
    lengths: dict[str, int | None] = {}
    for e in log.entries:
        if e.spike_file not in lengths:
            p = root / e.spike_file
            try:
                lengths[e.spike_file] = len(SpikeStream(p, geometry))
            except SpikeFormatError as exc:
                lengths[e.spike_file] = None
                problems.append(f"{e.where()}: {exc}")
        n = lengths[e.spike_file]
        if not (math.isfinite(e.t0) and math.isfinite(e.t1)) or not e.t0 < e.t1:
            problems.append(f"{e.where()}: window {e.window_text} is empty or reversed; need t0 < t1")
        elif n is not None and (e.t0 < 0 or e.t1 > n):
            problems.append(f"{e.where()}: window {e.window_text} lies outside {e.spike_file} "
                            f"(frames [0, {n}))")
    for (split, seq), entries in log.sequences().items():
        name = f"{split}/{seq}" if split else seq
        frames = [e.frame for e in entries]
        if frames != list(range(len(frames))):
            dups = sorted(f for f, n in Counter(frames).items() if n > 1)
            gaps = sorted(set(range(max(frames) + 1)) - set(frames))
            problems.append(f"sequence {name}: frames must be 0..{len(frames) - 1} once each; "
                            f"duplicated {dups[:10]}, missing {gaps[:10]}")
        by_file: dict[str, list[AlignEntry]] = defaultdict(list)
        for e in entries:
            by_file[e.spike_file].append(e)
        for f, es in by_file.items():
            for a, b in zip(es, es[1:], strict=False):
                if not (a.t0 <= b.t0 and a.t1 <= b.t1):
                    problems.append(f"{b.where()}: window {b.window_text} of frame {b.frame} comes before "
                                    f"frame {a.frame}'s {a.window_text} in {f}; windows must be ordered")
        blur = root / split / seq / "blur"
        if check_blur_frames and blur.is_dir():
            n_img = sum(1 for p in blur.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
            if n_img != len(entries):
                problems.append(f"sequence {name}: {n_img} blurry images in {blur} but {len(entries)} frames "
                                "in the log")
    if problems:
        raise _problems_error(f"align log does not match {root}", problems)


# -- rules ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceDir:
    split: str
    sequence: str
    path: Path


def discover_sequences(raw_root: str | os.PathLike, *, spike_dir: str = "spike") -> list[SequenceDir]:
    """Sequences of a raw dataset: ``<root>/<split>/<seq>/spike/`` or ``<root>/<seq>/spike/``."""
    root = Path(raw_root)
    if not root.is_dir():
        raise AlignLogError(f"{root}: raw dataset folder not found")
    found: list[SequenceDir] = []

    def folders(parent: Path) -> list[Path]:  # hidden folders are staging areas (synth's .partial), not data
        return sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))

    for first in folders(root):
        if (first / spike_dir).is_dir():
            found.append(SequenceDir("", first.name, first))
            continue
        for second in folders(first):
            if (second / spike_dir).is_dir():
                found.append(SequenceDir(first.name, second.name, second))
    if not found:
        raise AlignLogError(f"{root}: no sequences found; expected <split>/<sequence>/{spike_dir}/ or "
                            f"<sequence>/{spike_dir}/ folders")
    return found


_NN_RE = re.compile(r"^[^_]+_(\d+)_")


def frames_per_blur_for(rule: int | str, sequence: str) -> int:
    """Evaluate a frames-per-blur rule: an int, or ``"NN*k"`` with NN the sequence's middle field.

    Spk-GoPro names sequences like ``GOPR0384_11_00``: the middle field (11) is the number of source
    frames averaged per blurry frame, and each was interpolated 8x, so ``"NN*8"`` gives 88 spike frames.
    """
    if isinstance(rule, int):
        if rule <= 0:
            raise AlignLogError(f"frames per blurry frame must be positive, got {rule}")
        return rule
    text = str(rule).replace(" ", "")
    if text.isdigit():
        return frames_per_blur_for(int(text), sequence)
    m = re.fullmatch(r"NN\*(\d+)", text)
    if not m:
        raise AlignLogError(f"frames-per-blur rule {rule!r}: expected an integer or 'NN*k' (e.g. NN*8)")
    nn = _NN_RE.match(sequence)
    if not nn:
        raise AlignLogError(
            f"sequence {sequence!r}: rule {rule!r} needs NN from a name like GOPR0384_11_00 (middle field); "
            "give an explicit number of frames instead"
        )
    return int(nn.group(1)) * int(m.group(1))


@dataclass(frozen=True)
class PerFrameFiles:
    """One spike file per blurry frame (Spk-GoPro): frame i <-> the i-th file, window [0, n).

    ``frames_per_blur``: an int, ``"NN*k"`` (NN from the sequence name) or ``"file"`` (the whole file).
    A file whose length differs from the rule is an error, never silently cut.
    """

    frames_per_blur: int | str = "NN*8"
    pattern: str = "*.dat"

    def describe(self) -> str:
        return f"per-frame-files frames_per_blur={self.frames_per_blur}"


@dataclass(frozen=True)
class CentredExposure:
    """One long stream per sequence; blurry frame i is the exposure of ``length`` frames centred at
    ``first_centre + i * step`` (X4K style). The number of frames comes from ``n_frames`` or from the
    images in the sequence's ``blur/`` folder."""

    length: float
    step: float
    first_centre: float
    stream: str = "spike/stream.dat"
    n_frames: int | None = None

    def describe(self) -> str:
        return (f"centred-exposure length={_format_number(self.length)} step={_format_number(self.step)} "
                f"first_centre={_format_number(self.first_centre)} stream={self.stream}")


@dataclass(frozen=True)
class Timestamps:
    """Explicit per-frame exposure times from a CSV with columns ``split,sequence,frame,spike_file,start,end``.

    ``unit`` is ``"s"`` (seconds, converted with the geometry's rate) or ``"frames"``.
    """

    path: str
    unit: str = "s"

    def describe(self) -> str:
        return f"timestamps file={Path(self.path).name} unit={self.unit}"


Rule = PerFrameFiles | CentredExposure | Timestamps


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def build_align_log(
    raw_root: str | os.PathLike,
    rule: Rule,
    geometry: Geometry,
    *,
    splits: list[str] | None = None,
    validate: bool = True,
) -> AlignLog:
    """Make the align log of a raw dataset from a timing rule, then (by default) validate it."""
    root = Path(raw_root)
    header = AlignHeader.from_geometry(geometry, rule.describe())
    entries: list[AlignEntry] = []
    if isinstance(rule, Timestamps):
        entries = _entries_from_timestamps(rule, geometry)
    else:
        for sd in discover_sequences(root):
            if splits is not None and sd.split not in splits:
                continue
            if isinstance(rule, PerFrameFiles):
                entries.extend(_entries_per_frame_files(rule, sd, root, geometry))
            elif isinstance(rule, CentredExposure):
                entries.extend(_entries_centred(rule, sd, root))
            else:
                raise AlignLogError(f"unknown align rule {rule!r}")
    log = AlignLog(header, entries)
    if validate:
        validate_align_log(log, root)
    return log


def _entries_per_frame_files(rule: PerFrameFiles, sd: SequenceDir, root: Path, geometry: Geometry) -> list[AlignEntry]:
    files = sorted((sd.path / "spike").glob(rule.pattern))
    if not files:
        raise AlignLogError(f"{sd.path / 'spike'}: no files match {rule.pattern!r}")
    whole = str(rule.frames_per_blur).strip().lower() == "file"
    n = None if whole else frames_per_blur_for(rule.frames_per_blur, sd.sequence)
    out = []
    for i, f in enumerate(files):
        length = len(SpikeStream(f, geometry))
        if n is not None and length != n:
            raise AlignLogError(
                f"{f}: {length} spike frames, but rule {rule.describe()} gives {n} for sequence {sd.sequence}; "
                "check the geometry and the rule (use frames_per_blur='file' to take whole files)"
            )
        out.append(AlignEntry(sd.split, sd.sequence, i, _rel(f, root), 0.0, float(length if n is None else n)))
    return out


def _entries_centred(rule: CentredExposure, sd: SequenceDir, root: Path) -> list[AlignEntry]:
    if not rule.length > 0 or not rule.step > 0:
        raise AlignLogError(f"centred exposure needs length > 0 and step > 0, got {rule.length}, {rule.step}")
    n = rule.n_frames
    if n is None:
        blur = sd.path / "blur"
        if not blur.is_dir():
            raise AlignLogError(f"{sd.path}: no blur/ folder to count frames from; give n_frames")
        n = sum(1 for p in blur.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    stream = sd.path / rule.stream
    half = rule.length / 2
    return [
        AlignEntry(sd.split, sd.sequence, i, _rel(stream, root),
                   rule.first_centre + i * rule.step - half, rule.first_centre + i * rule.step + half)
        for i in range(n)
    ]


def _entries_from_timestamps(rule: Timestamps, geometry: Geometry) -> list[AlignEntry]:
    if rule.unit not in ("s", "frames"):
        raise AlignLogError(f"timestamps unit must be 's' or 'frames', got {rule.unit!r}")
    scale = geometry.rate_hz if rule.unit == "s" else 1.0
    path = Path(rule.path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AlignLogError(f"{path}: timestamps file not found") from None
    rows = list(csv.reader(text.splitlines()))
    want = ["split", "sequence", "frame", "spike_file", "start", "end"]
    if not rows or [c.strip() for c in rows[0]] != want:
        raise AlignLogError(f"{path} line 1: expected columns {','.join(want)}")
    out = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(want):
            raise AlignLogError(f"{path} line {lineno}: expected {len(want)} fields, got {len(row)}")
        split, seq, frame, spike_file, start, end = (c.strip() for c in row)
        try:
            out.append(AlignEntry(split, seq, int(frame), spike_file, float(start) * scale, float(end) * scale))
        except ValueError:
            raise AlignLogError(f"{path} line {lineno}: frame must be an integer and start/end numbers") from None
    return out
