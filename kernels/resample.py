"""Anti-aliased resizing to a target size with :func:`kernels.upfirdn2d.upfirdn2d`.

:func:`resize` halves or doubles each axis with a separable FIR filter (default the binomial
``[1, 3, 3, 1] / 8``, StyleGAN2's) while the target is at least 2x away, then finishes the remaining
factor (< 2) with antialiased bilinear interpolation. Each 2x step is one upfirdn2d call over both
axes (an axis that needs no step gets the 1-tap filter). Downsampling filters before decimating, so
content above the new Nyquist frequency is attenuated instead of aliased (what plain bilinear
interpolation, which reads 2x2 samples whatever the factor, does not do); upsampling interpolates with
the same filter (gain 2 per upsampled axis to make up for the inserted zeros).

Step geometry per axis for a ``k``-tap filter: down by 2 pads ``((k - 1) // 2, (k - 2) // 2)`` and gives
``floor(n / 2)`` samples for even ``k``; up by 2 pads ``((k + 1) // 2, (k - 2) // 2)`` and gives ``2n``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from kernels.upfirdn2d import upfirdn2d
from svrt_errors import SvrtValueError

__all__ = ["DEFAULT_TAPS", "resize", "resize_plan"]

DEFAULT_TAPS = (1.0, 3.0, 3.0, 1.0)
_OP = "resize"


def resize_plan(size: tuple[int, int], target: tuple[int, int]) -> list[tuple[int, int]]:
    """The 2x steps ``[(sy, sx), ...]`` (``-1`` halve, ``+1`` double, ``0`` keep) from ``size`` towards
    ``target``, taken while an axis is at least 2x away; the rest is left to bilinear interpolation."""
    h, w = size
    th, tw = target
    steps = []
    while True:
        sy = -1 if h >= 2 * th else (1 if 2 * h <= th else 0)
        sx = -1 if w >= 2 * tw else (1 if 2 * w <= tw else 0)
        if sy == 0 and sx == 0:
            return steps
        steps.append((sy, sx))
        h = h // 2 if sy < 0 else (2 * h if sy > 0 else h)
        w = w // 2 if sx < 0 else (2 * w if sx > 0 else w)


def _axis(step: int, taps: torch.Tensor) -> tuple[torch.Tensor, int, int, tuple[int, int]]:
    """(1-D filter, up, down, pads) of one axis for one step."""
    k = taps.numel()
    if step < 0:
        return taps, 1, 2, ((k - 1) // 2, (k - 2) // 2)
    elif step > 0:
        return taps * 2, 2, 1, ((k + 1) // 2, (k - 2) // 2)
    elif step == 0:
        return taps.new_ones(1), 1, 1, (0, 0)
    else:
        raise SvrtValueError(f"{_OP}: unknown step {step!r}")


def resize(
    x: torch.Tensor,
    size: tuple[int, int],
    *,
    taps: Sequence[float] = DEFAULT_TAPS,
    backend: str = "auto",
) -> torch.Tensor:
    """Resize ``x`` ``(B, C, H, W)`` to ``size = (H', W')`` (module docstring).

    Args:
        taps: the 1-D filter, normalised to sum 1; an even length >= 2 (symmetric filters keep the image
            centred).
        backend: upfirdn2d's backend (``"auto"``, ``"torch"`` or ``"cuda"``).

    Returns:
        ``(B, C, H', W')`` in ``x``'s dtype; differentiable with respect to ``x``.

    Raises:
        SvrtValueError: a bad ``size`` or ``taps``, or ``x`` not a 4-D floating-point tensor.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise SvrtValueError(f"{_OP}: x must be a (B, C, H, W) floating-point tensor, got {got}")
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)):
        raise SvrtValueError(f"{_OP}: size={size!r} is invalid; expected (H, W) with positive ints")
    t = torch.as_tensor(list(taps), dtype=torch.float64)
    if t.dim() != 1 or t.numel() < 2 or t.numel() % 2 or not torch.isfinite(t).all() or t.sum() <= 0:
        raise SvrtValueError(f"{_OP}: taps={tuple(taps)!r} must be an even number (>= 2) of finite values with a "
                             "positive sum")
    t = (t / t.sum()).to(device=x.device, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    for sy, sx in resize_plan(tuple(x.shape[2:]), tuple(size)):
        fy, uy, dy, (py0, py1) = _axis(sy, t)
        fx, ux, dx, (px0, px1) = _axis(sx, t)
        x = upfirdn2d(x, torch.outer(fy, fx), up=(uy, ux), down=(dy, dx), pad=(px0, px1, py0, py1), backend=backend)
    if tuple(x.shape[2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return x
