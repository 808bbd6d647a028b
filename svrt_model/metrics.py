"""PSNR and SSIM of RGB frames as video-deblurring papers report them, in torch (batched, any device).

The field's convention (VRT, S-VRT, BasicSR's ``calculate_psnr`` / ``calculate_ssim`` with
``test_y_channel=False``): images on the 0-255 scale, every RGB channel counted; PSNR from the mean
squared error over all pixels and channels; SSIM (Wang et al., "Image quality assessment: from error
visibility to structural similarity", 2004) with an 11x11 Gaussian window of sigma 1.5, constants
``(0.01 * 255)^2`` and ``(0.03 * 255)^2``, population (not sample) statistics, averaged over the
positions where the whole window fits inside the image (5 px are left out at each border), then over
the channels. This equals scikit-image's
``structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255)`` on ``(H, W, 3)`` arrays (tested to 1e-6 in float64).

**Rounding.** These functions use their inputs as given: uint8 tensors, or float tensors already on
the 0-255 scale (not rounded here). Published results measure the saved 8-bit frames, so callers that
restore frames round first: :func:`to_uint8` (``round(clamp(x, 0, 1) * 255)``, what VRT's test script
does before measuring) is what :func:`svrt_model.restore.restore_split` applies to model outputs.

**Identical images.** PSNR is ``+inf`` when the mean squared error is 0 (as BasicSR returns); SSIM of
two identical images is 1. Constant images are fine for both (SSIM of two different constants is
below 1 through the luminance term).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from svrt_errors import SvrtValueError

__all__ = ["DATA_RANGE", "SSIM_SIGMA", "SSIM_WINDOW", "gaussian_window", "psnr", "ssim", "to_uint8"]

DATA_RANGE = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Frames in ``[0, 1]`` (any float dtype, any shape) -> uint8 on the 0-255 scale, rounded half to even
    after clamping (``torch.round``; VRT's ``numpy.round`` rounds the same way)."""
    if not x.is_floating_point():
        raise SvrtValueError(f"to_uint8: expected float frames in [0, 1], got dtype {x.dtype}")
    return (x.float().clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)


def _pair(output: torch.Tensor, target: torch.Tensor, name: str, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    for label, t in (("output", output), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise SvrtValueError(f"{name}: {label} must be a torch tensor, got {type(t).__name__}")
        if t.dim() < 3:
            raise SvrtValueError(f"{name}: {label} must be (..., C, H, W) images, got shape {tuple(t.shape)}")
    if output.shape != target.shape:
        raise SvrtValueError(f"{name}: output {tuple(output.shape)} and target {tuple(target.shape)} differ in "
                             "shape; compare frames of the same size")
    if output.device != target.device:
        raise SvrtValueError(f"{name}: output is on {output.device}, target on {target.device}; move one of them")
    if dtype not in (torch.float32, torch.float64):
        raise SvrtValueError(f"{name}: dtype must be torch.float32 or torch.float64, got {dtype}")
    return output.to(dtype), target.to(dtype)


def psnr(output: torch.Tensor, target: torch.Tensor, *, data_range: float = DATA_RANGE,
         dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, one value per image.

    Args:
        output, target: ``(..., C, H, W)`` on the 0-255 scale (uint8 or float; see the module docstring
            on rounding), same shape and device.
        data_range: the peak value (255).
        dtype: computation dtype (float64 by default: exact sums of squared uint8 differences).

    Returns:
        ``(...)`` in ``dtype``: ``10 log10(data_range^2 / MSE)`` with the MSE over C, H and W; ``+inf`` where
        the images are identical.
    """
    a, b = _pair(output, target, "psnr", dtype)
    mse = (a - b).square().mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(data_range**2 / mse)  # mse == 0 gives +inf (IEEE division), as documented


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, *, dtype: torch.dtype = torch.float64,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """The normalised 1-D Gaussian ``(size,)`` sampled at integer offsets (scipy's ``gaussian_filter`` taps,
    and OpenCV's ``getGaussianKernel`` for this size and sigma)."""
    if size < 1 or size % 2 == 0:
        raise SvrtValueError(f"gaussian_window: size must be a positive odd number, got {size}")
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim(output: torch.Tensor, target: torch.Tensor, *, data_range: float = DATA_RANGE,
         dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Structural similarity, one value per image (mean over channels of each channel's mean SSIM).

    Args:
        output, target: ``(..., C, H, W)`` on the 0-255 scale (uint8 or float; see the module docstring),
            same shape and device, H and W at least 11.
        data_range: the value range (255).
        dtype: computation dtype (float64 by default; float32 agrees to ~1e-5).

    Returns:
        ``(...)`` in ``dtype``.
    """
    a, b = _pair(output, target, "ssim", dtype)
    *lead, c, h, w = a.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise SvrtValueError(f"ssim: images of {h}x{w} pixels are smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} "
                             "window; SSIM needs frames of at least 11x11")
    n = math.prod(lead) * c
    g = gaussian_window(dtype=dtype, device=a.device)
    # the five filtered maps of every channel of every image go through one separable 'valid' convolution
    x = torch.stack([a, b, a * a, b * b, a * b], dim=-3).reshape(n * 5, 1, h, w)  # (N C 5) 1 H W
    x = F.conv2d(x, g.view(1, 1, -1, 1))
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    mu_a, mu_b, aa, bb, ab = x.view(n, 5, h - SSIM_WINDOW + 1, w - SSIM_WINDOW + 1).unbind(1)
    var_a, var_b, cov = aa - mu_a * mu_a, bb - mu_b * mu_b, ab - mu_a * mu_b
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    return s.mean(dim=(-2, -1)).view(*lead, c).mean(dim=-1)
