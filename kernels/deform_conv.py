"""Modulated deformable convolution: the public op, dispatching to the fastest available path.

Paths (chosen in :func:`deform_conv2d`): ``"reference"``, the pure-torch implementation in
:mod:`kernels.deform_conv_ref` (CPU or any device, autograd through gather). Semantics equal
``torchvision.ops.deform_conv2d``.
"""

from __future__ import annotations

import torch

from kernels.deform_conv_ref import deform_conv2d_reference

__all__ = ["deform_conv2d"]


def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Modulated deformable conv2d (torchvision's signature); see :mod:`kernels.deform_conv_ref`.

    Args:
        backend: ``"auto"`` or ``"reference"``.
    """
    if backend in ("auto", "reference"):
        return deform_conv2d_reference(input, offset, weight, bias, stride, padding, dilation, mask)
    else:
        raise ValueError(f"deform_conv2d: unknown backend {backend!r}; expected 'auto' or 'reference'")
