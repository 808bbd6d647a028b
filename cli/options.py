"""Options and helpers shared by the svrt command groups."""

from __future__ import annotations

import functools
import json
import os
import traceback
from collections.abc import Callable
from typing import Any

import click

from svrt_data.geometry import Geometry, parse_geometry
from svrt_errors import SvrtError

DEBUG_ENV = "SVRT_DEBUG"  # set to 1 to see the traceback of an internal error
REPORT_TO = "the svrt maintainers (the project's issue tracker)"
# Exceptions raised inside these packages while reading files are decode errors of damaged or foreign
# input (a truncated zarr.json, a corrupt Blosc frame, a non-HDF5 file), not bugs of svrt.
_DECODERS = ("zarr", "numcodecs", "h5py", "PIL", "json", "blosc", "google_crc32c", "yaml", "numpy/lib/format")


class InternalError(click.ClickException):
    """An unexpected exception: svrt has a bug. Exit status 2, one line saying so and where to report it."""

    exit_code = 2


def _from_decoder(exc: BaseException) -> bool:
    if isinstance(exc, json.JSONDecodeError):
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and any(f"{os.sep}{name}" in frames[-1].filename for name in _DECODERS)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split("\n")[0].split()) or type(exc).__name__
    return text if isinstance(exc, SvrtError) else f"{text} ({type(exc).__name__})"


class SvrtGroup(click.Group):
    """A command group whose commands never show a traceback for bad input.

    svrt's own errors, I/O errors and decode errors of damaged files become one ``Error:`` line and exit
    status 1; any other exception is a bug: one line naming its type and message and where to report
    it, exit status 2 (the traceback only with ``SVRT_DEBUG=1``).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except SvrtError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            raise click.ClickException(_one_line(exc)) from exc
        except Exception as exc:
            if _from_decoder(exc):
                raise click.ClickException(f"cannot decode the input: {_one_line(exc)}") from exc
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            detail = " ".join(str(exc).split())[:500]
            raise InternalError(
                f"internal error, a bug in svrt: {type(exc).__name__}: {detail}. Please report it to "
                f"{REPORT_TO} with the command you ran; {DEBUG_ENV}=1 shows the traceback"
            ) from exc


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


__all__ = ["Geometry", "InternalError", "SvrtGroup", "geometry_option", "library_errors", "parse_size"]
