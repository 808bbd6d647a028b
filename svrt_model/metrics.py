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


def _gaussian_valid(x: torch.Tensor) -> torch.Tensor:
    """The separable 11x11 Gaussian filter over the last two axes, 'valid' region only (no padding).

    Shifted multiply-adds rather than ``conv2d``: memory-bound passes that run ~3x faster than a float64
    convolution on the CPU and need no cuDNN on the GPU; the tap order is fixed, so results do not depend
    on the batch.
    """
    g = gaussian_window().tolist()
    k = len(g)
    h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    y = x[..., 0:h, :] * g[0]
    for i in range(1, k):
        y.add_(x[..., i : i + h, :], alpha=g[i])
    z = y[..., :, 0:w] * g[0]
    for i in range(1, k):
        z.add_(y[..., :, i : i + w], alpha=g[i])
    return z


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
    # the five maps of every channel of every image, filtered together
    x = torch.empty((n, 5, h, w), dtype=dtype, device=a.device)  # (N C) 5 H W
    x[:, 0], x[:, 1] = a.reshape(n, h, w), b.reshape(n, h, w)
    torch.mul(x[:, 0], x[:, 0], out=x[:, 2])
    torch.mul(x[:, 1], x[:, 1], out=x[:, 3])
    torch.mul(x[:, 0], x[:, 1], out=x[:, 4])
    mu_a, mu_b, aa, bb, ab = _gaussian_valid(x).unbind(1)
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    # in place over the filtered maps (full frames in float64 are large):
    # ((2 mu_a mu_b + c1)(2 cov + c2)) / ((mu_a^2 + mu_b^2 + c1)(var_a + var_b + c2))
    mu_ab = mu_a * mu_b
    cov2 = ab.sub_(mu_ab).mul_(2).add_(c2)  # 2 cov + c2
    var = aa.add_(bb).addcmul_(mu_a, mu_a, value=-1).addcmul_(mu_b, mu_b, value=-1).add_(c2)  # var_a + var_b + c2
    lum = mu_a.square_().addcmul_(mu_b, mu_b).add_(c1)  # mu_a^2 + mu_b^2 + c1
    s = mu_ab.mul_(2).add_(c1).mul_(cov2).div_(lum.mul_(var))
    return s.mean(dim=(-2, -1)).view(*lead, c).mean(dim=-1)
