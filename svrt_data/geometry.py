"""Spike sensor geometries: explicit height, width, row order and rate, plus a registry of known ones.

A ``.dat`` file stores no resolution, rate or row order, and one file size can fit several
geometries, so svrt never guesses: every reader takes a :class:`Geometry` (or height/width/flip/rate)
and a size that does not fit is an error listing the geometries that would.

Stored rows may be wider than the image: some Vidar captures carry 16 extra columns at the head of
each row (250x416 -> 250x400) and SPS100 decodes 1000x1000 from 1024-wide rows. ``stored_width`` and
``col_offset`` describe that; the kept columns are ``[col_offset, col_offset + width)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from svrt_errors import GeometryError

__all__ = ["Geometry", "GEOMETRIES", "get_geometry", "parse_geometry", "geometries_fitting"]

DEFAULT_RATE_HZ = 20000.0


@dataclass(frozen=True)
class Geometry:
    """How the frames of one spike stream are laid out.

    Args:
        height: rows of the decoded image.
        width: columns of the decoded image.
        flip: rows are stored bottom-up (camera data, Spk-GoPro, SREDS); the reader flips them upright.
        rate_hz: spike frames per second (20 kHz for Vidar cameras).
        stored_width: columns per stored row (defaults to ``width``).
        col_offset: first kept column within a stored row.
        name: registry name, informational.
    """

    height: int
    width: int
    flip: bool = True
    rate_hz: float = DEFAULT_RATE_HZ
    stored_width: int | None = None
    col_offset: int = 0
    name: str = ""
    aliases: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise GeometryError(
                f"geometry {self.height}x{self.width}: height and width must be positive integers"
            )
        sw = self.row_width
        if self.col_offset < 0 or self.col_offset + self.width > sw:
            raise GeometryError(
                f"geometry {self.height}x{self.width}: kept columns [{self.col_offset}, "
                f"{self.col_offset + self.width}) do not fit stored rows of {sw} columns"
            )
        if (self.height * sw) % 8:
            raise GeometryError(
                f"geometry {self.height}x{sw}: a frame of {self.height * sw} bits is not a whole "
                "number of bytes; .dat frames are H*W/8 bytes, so H*W must be a multiple of 8"
            )
        if sw != self.width and (self.col_offset % 8 or sw % 8 or self.width % 8):
            raise GeometryError(
                f"geometry {self.height}x{self.width} in rows of {sw}: column cropping needs the "
                "stored width, kept width and offset to be multiples of 8 (byte-aligned)"
            )
        if not self.rate_hz > 0:
            raise GeometryError(f"geometry {self.height}x{self.width}: rate_hz must be > 0, got {self.rate_hz}")

    @property
    def row_width(self) -> int:
        """Columns per stored row, including any stripped columns."""
        return self.width if self.stored_width is None else self.stored_width

    @property
    def frame_bytes(self) -> int:
        """Bytes one stored frame occupies in a .dat file."""
        return self.height * self.row_width // 8

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def packed_width(self) -> int:
        """Bytes per upright packed row (``W / 8``); only defined when the width is a multiple of 8."""
        if self.width % 8:
            raise GeometryError(
                f"geometry {self.height}x{self.width}: packed rows need a width that is a multiple of 8"
            )
        return self.width // 8

    def with_options(self, *, flip: bool | None = None, rate_hz: float | None = None) -> Geometry:
        """A copy with a different row order or rate."""
        return Geometry(
            self.height,
            self.width,
            self.flip if flip is None else flip,
            self.rate_hz if rate_hz is None else rate_hz,
            self.stored_width,
            self.col_offset,
            self.name,
            self.aliases,
        )

    def describe(self) -> str:
        crop = "" if self.row_width == self.width else f" (rows of {self.row_width}, from column {self.col_offset})"
        order = "bottom-up rows" if self.flip else "top-down rows"
        return f"{self.height}x{self.width}{crop}, {order}, {self.rate_hz:g} Hz"


GEOMETRIES: dict[str, Geometry] = {}


def _register(g: Geometry) -> None:
    for key in (g.name, *g.aliases):
        GEOMETRIES[key] = g


for _g in (
    Geometry(250, 400, True, 20000.0, name="vidar-250x400", aliases=("250x400",)),
    Geometry(250, 400, True, 40000.0, name="vidar-250x400-40k"),
    Geometry(250, 400, True, 20000.0, stored_width=416, col_offset=16, name="vidar-250x416",
             aliases=("250x416",)),
    Geometry(360, 640, True, 20000.0, name="spk-gopro", aliases=("360x640",)),
    Geometry(180, 320, True, 20000.0, name="s-sdm", aliases=("180x320",)),
    Geometry(500, 800, True, 20000.0, name="spift", aliases=("500x800",)),
    Geometry(1000, 1000, False, 20000.0, name="spike-x4k", aliases=("1000x1000",)),
    Geometry(1000, 1000, False, 20000.0, stored_width=1024, col_offset=0, name="sps100",
             aliases=("1000x1024",)),
):
    _register(_g)

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_geometry(text: str, *, flip: bool | None = None, rate_hz: float | None = None) -> Geometry:
    """Parse ``"HxW"`` or a registry name into a :class:`Geometry`.

    A registered name or ``HxW`` alias takes its flip and rate from the registry unless overridden;
    any other ``HxW`` gives a plain geometry (flip defaults to True, rate to 20 kHz).
    """
    key = text.strip()
    if key in GEOMETRIES:
        return GEOMETRIES[key].with_options(flip=flip, rate_hz=rate_hz)
    m = _SIZE_RE.match(key)
    if not m:
        known = ", ".join(sorted(GEOMETRIES))
        raise GeometryError(f"geometry {text!r}: expected 'HxW' (e.g. 250x400) or one of: {known}")
    h, w = int(m.group(1)), int(m.group(2))
    return Geometry(h, w, True if flip is None else flip, DEFAULT_RATE_HZ if rate_hz is None else rate_hz,
                    name=f"{h}x{w}")


def get_geometry(name: str) -> Geometry:
    """A registered geometry by name or alias."""
    try:
        return GEOMETRIES[name]
    except KeyError:
        raise GeometryError(
            f"unknown geometry {name!r}; known: {', '.join(sorted(GEOMETRIES))}, or give HxW"
        ) from None


def geometries_fitting(n_bytes: int) -> list[Geometry]:
    """Registered geometries whose frame size divides ``n_bytes`` (each listed once)."""
    seen: list[Geometry] = []
    for g in GEOMETRIES.values():
        if n_bytes % g.frame_bytes == 0 and g not in seen:
            seen.append(g)
    return seen
