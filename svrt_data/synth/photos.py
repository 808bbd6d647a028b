"""Photographs for the synthetic scenes, and the canvases cut from them.

By default the scenes are the colour photographs that scikit-image ships inside its wheel (no
download: ``skimage.data`` reads them from the installed package). scikit-image is the optional
``synth`` extra; without it, pass a folder of your own photographs.

Each sequence crops a random region of one photograph with the aspect ratio of its canvas and
resamples it (Lanczos, with antialiasing) to two canvases:

- RGB: ``(Hc, Wc, 3)`` float32 gray levels in [0, 255], the canvas of the RGB frames;
- luminance: ``(Hcs, Wcs)`` float32 in [0, 1] at spike resolution (``Hcs = round(s Hc)``), the canvas of
  the spike frames. Luminance is linear in RGB, so taking it before warping equals taking it after.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from svrt_data.synth.camera import View
from svrt_errors import BackendUnavailableError, SvrtValueError

__all__ = ["BUNDLED_PHOTOS", "IMAGE_SUFFIXES", "LUMA", "Canvases", "Photo", "dead_leaves", "load_photos",
           "luminance", "make_canvases", "photo_source"]

# scikit-image loaders of colour photographs stored in its wheel (checked: they load with no network
# and without pooch). Grayscale test images and the mostly black ones (hubble_deep_field, retina)
# are left out.
BUNDLED_PHOTOS = ("astronaut", "chelsea", "coffee", "immunohistochemistry", "motorcycle", "rocket")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# ITU-R BT.601 luma weights on the stored (gamma-encoded) values, as PIL's "L" conversion uses.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_MIN_SIDE = 8


@dataclass(frozen=True)
class Photo:
    """A named RGB photograph, uint8 ``(H, W, 3)``."""

    name: str
    pixels: np.ndarray


@dataclass(frozen=True)
class Canvases:
    """The two canvases of one sequence (module docstring) and where they came from."""

    rgb: np.ndarray  # float32 (Hc, Wc, 3) in [0, 255]
    luma: np.ndarray  # float32 (Hcs, Wcs) in [0, 1]
    luma_scale: tuple[float, float]  # (Hcs / Hc, Wcs / Wc)
    crop: tuple[float, float, float, float]  # (left, top, right, bottom) in photo pixels


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Gray luminance of ``(..., 3)`` RGB gray levels in [0, 255]: float32 ``(...)`` in [0, 1]."""
    return np.asarray(rgb, np.float32) @ (LUMA / np.float32(255.0))


def _bundled() -> list[Photo]:
    try:
        from skimage import data
    except ImportError:
        raise BackendUnavailableError(
            "synthetic data needs photographs: install scikit-image for its bundled ones "
            "(pip install \"svrt[synth]\"), or pass a folder of your own (--images DIR / images=DIR)"
        ) from None
    photos = []
    for name in BUNDLED_PHOTOS:
        try:
            pixels = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
        except Exception as exc:  # a scikit-image build that would download it, or lacks it
            raise BackendUnavailableError(
                f"scikit-image could not load its bundled photograph {name!r} ({type(exc).__name__}: {exc}); "
                "install scikit-image >= 0.22 (pip install \"svrt[synth]\") or pass --images DIR"
            ) from None
        photos.append(Photo(name, np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)))
    return photos


def _from_folder(folder: Path) -> list[Photo]:
    if not folder.is_dir():
        raise SvrtValueError(f"--images {folder}: not a folder; give a folder of photographs")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SvrtValueError(
            f"--images {folder}: no photographs found (looked for {', '.join(IMAGE_SUFFIXES)} files)"
        )
    photos = []
    for f in files:
        try:
            with Image.open(f) as im:
                pixels = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError) as exc:
            raise SvrtValueError(f"{f}: cannot read this image ({exc}); remove it from {folder} or convert it"
                                 ) from None
        if min(pixels.shape[:2]) < _MIN_SIDE:
            raise SvrtValueError(f"{f}: {pixels.shape[0]}x{pixels.shape[1]} is too small; photographs need at least "
                                 f"{_MIN_SIDE} pixels per side")
        photos.append(Photo(f.name, pixels))
    return photos


def load_photos(images: str | os.PathLike | None = None) -> list[Photo]:
    """The photographs to draw scenes from: those in folder ``images`` (sorted by name), else the
    scikit-image ones. Raises :class:`BackendUnavailableError` when neither is available."""
    return _bundled() if images is None else _from_folder(Path(images))


def photo_source(images: str | os.PathLike | None = None) -> str:
    """Where :func:`load_photos` takes its photographs from (recorded with the dataset)."""
    if images is not None:
        return f"folder {Path(images)}"
    import skimage

    return f"scikit-image {skimage.__version__} (bundled data)"


def dead_leaves(count: int, *, size: int = 768, seed: int = 0, palette: np.ndarray | None = None,
                radii: tuple[float, float] = (4.0, 300.0), max_leaves: int = 200_000) -> list[Photo]:
    """``count`` synthetic scenes of the dead-leaves model: opaque disks dropped one on another until
    the image is covered, radii distributed as ``r**-3`` on ``radii`` (the scale-invariant choice, whose
    images share natural photographs' power spectrum and edge statistics), centres uniform, colours drawn
    from ``palette`` (``(N, 3)`` uint8 RGB, e.g. the pixels of the training photographs) or uniform.

    Unlimited scenes with real occlusion edges at every scale, for training sets larger than a few
    photographs; the names are ``dead_leaves_000`` ... Generated front to back: each disk paints only
    pixels no earlier disk took, and generation stops when none is left (after ``max_leaves`` disks the
    rest takes one more colour). Deterministic for a given ``seed``.
    """
    rmin, rmax = radii
    if count < 0 or size < _MIN_SIDE or not 0 < rmin <= rmax:
        raise SvrtValueError(f"dead_leaves: expected count >= 0, size >= {_MIN_SIDE} and 0 < rmin <= rmax, got "
                             f"count={count}, size={size}, radii={radii}")
    if palette is not None:
        palette = np.asarray(palette, np.uint8).reshape(-1, 3)
        if not len(palette):
            raise SvrtValueError("dead_leaves: the palette is empty; give (N, 3) RGB colours with N >= 1")
    rng = np.random.default_rng(seed)
    lo, hi = rmin ** -2.0, rmax ** -2.0  # inverse CDF of p(r) ~ r^-3: r = (lo - u (lo - hi))^(-1/2)

    def colour() -> np.ndarray:
        return palette[rng.integers(len(palette))] if palette is not None else rng.integers(0, 256, 3)

    photos = []
    for index in range(count):
        pixels = np.zeros((size, size, 3), np.uint8)
        free = np.ones((size, size), bool)
        left = free.size
        for _ in range(max_leaves):
            r = (lo - rng.random() * (lo - hi)) ** -0.5
            cy, cx = rng.uniform(-r, size + r, 2)
            y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, size)
            x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, size)
            paint = colour()  # drawn for every disk, seen or not: the draws do not depend on the image
            if y0 >= y1 or x0 >= x1:
                continue
            yy, xx = np.ogrid[y0:y1, x0:x1]
            take = ((yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= r * r) & free[y0:y1, x0:x1]
            taken = int(take.sum())
            if taken:
                pixels[y0:y1, x0:x1][take] = paint
                free[y0:y1, x0:x1][take] = False
                left -= taken
                if not left:
                    break
        if left:
            pixels[free] = colour()
        photos.append(Photo(f"dead_leaves_{index:03d}", pixels))
    return photos


def make_canvases(photo: Photo, view: View, spike_scale: float, rng: np.random.Generator) -> Canvases:
    """Crop a random region of ``photo`` (60-100 % of the largest crop with the canvas's aspect ratio)
    and resample it to the RGB canvas of ``view`` and to the luminance canvas at ``spike_scale``."""
    hp, wp = photo.pixels.shape[:2]
    hc, wc = view.canvas_height, view.canvas_width
    aspect = wc / hc
    ch, cw = (hp, hp * aspect) if wp / hp > aspect else (wp / aspect, wp)
    frac = rng.uniform(0.6, 1.0)
    ch, cw = ch * frac, cw * frac
    left, top = rng.uniform(0.0, wp - cw), rng.uniform(0.0, hp - ch)
    crop = (float(left), float(top), float(left + cw), float(top + ch))
    rgb = Image.fromarray(photo.pixels).resize((wc, hc), Image.Resampling.LANCZOS, box=crop)
    hs, ws = max(1, round(hc * spike_scale)), max(1, round(wc * spike_scale))
    gray = Image.fromarray(luminance(photo.pixels)).resize((ws, hs), Image.Resampling.LANCZOS, box=crop)
    luma = np.clip(np.asarray(gray, np.float32), 0.0, 1.0)
    return Canvases(np.asarray(rgb, np.float32), luma, (hs / hc, ws / wc), crop)
