"""Options and helpers shared by the svrt command groups."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from svrt_data.geometry import Geometry, parse_geometry
from svrt_errors import SvrtError


def library_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn svrt's own errors into ``click.ClickException`` (a clean message, exit status 1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SvrtError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def geometry_option(text: str, flip: bool | None, rate_hz: float | None) -> Geometry:
    """Parse a ``--geometry`` value, reporting a bad one as a usage error (exit status 2)."""
    try:
        return parse_geometry(text, flip=flip, rate_hz=rate_hz)
    except SvrtError as exc:
        raise click.BadParameter(str(exc), param_hint="--geometry") from exc


def parse_size(text: str, what: str = "--size") -> tuple[int, int]:
    """Parse ``HxW`` into ``(H, W)`` for options that are sizes, not geometries."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise click.BadParameter(f"expected HxW such as 128x256, got {text!r}", param_hint=what)
    h, w = (int(p) for p in parts)
    if h <= 0 or w <= 0:
        raise click.BadParameter(f"sizes must be positive, got {text!r}", param_hint=what)
    return h, w


__all__ = ["Geometry", "geometry_option", "library_errors", "parse_size"]
