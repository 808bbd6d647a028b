"""Argument checks shared by the loader's constructors."""

from __future__ import annotations

from typing import Any

import numpy as np

from svrt_errors import SvrtValueError

__all__ = ["positive_int"]


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int, or :class:`SvrtValueError` naming ``name`` when it is not an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SvrtValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
