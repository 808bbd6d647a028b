"""Modulated deformable convolution (DCNv2), pure torch: the slow, obviously-correct reference.

Semantics are torchvision's ``torchvision.ops.deform_conv2d`` (Zhu et al., "Deformable ConvNets v2",
CVPR 2019), which VRT's flow-guided alignment calls:

- output pixel ``(i, j)``, kernel tap ``k = (ki, kj)`` of offset group ``g`` samples the input at
  ``y = i*stride_h - pad_h + ki*dil_h + offset[:, 2*(g*K + k)]`` and
  ``x = j*stride_w - pad_w + kj*dil_w + offset[:, 2*(g*K + k) + 1]`` (``K = kh*kw``; dy before dx);
- bilinear interpolation with zeros outside the image (each of the four corners that falls outside
  contributes nothing), multiplied by ``mask[:, g*K + k]`` when a mask is given;
- input channels are split into ``offset_groups`` consecutive blocks, each using its own offsets;
  the weight's ``groups`` split channels as in ``conv2d``.

Everything is differentiable through autograd, so this also serves as the gradient reference.
"""

from __future__ import annotations

import torch

__all__ = ["deform_conv2d_reference", "deform_sample_columns", "conv_out_size"]


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_out_size(size: int, kernel: int, stride: int, pad: int, dil: int) -> int:
    return (size + 2 * pad - dil * (kernel - 1) - 1) // stride + 1


def deform_sample_columns(
    input: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor | None,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """Deformable im2col: ``(B, C_in, K, Ho, Wo)`` bilinear samples (times the mask).

    Args:
        input: ``(B, C_in, H, W)``.
        offset: ``(B, 2 * G * K, Ho, Wo)``, (dy, dx) pairs per (group, tap).
        mask: ``(B, G * K, Ho, Wo)`` or None.
    """
    B, C, H, W = input.shape
    kh, kw = kernel_size
    K = kh * kw
    Ho, Wo = offset.shape[-2:]
    G = offset.shape[1] // (2 * K)
    dev, dt = input.device, input.dtype
    off = offset.view(B, G, K, 2, Ho, Wo)
    ki = torch.arange(kh, device=dev).repeat_interleave(kw)  # tap k -> row within the kernel
    kj = torch.arange(kw, device=dev).repeat(kh)
    base_y = (torch.arange(Ho, device=dev) * stride[0] - padding[0]).view(1, 1, 1, Ho, 1)
    base_x = (torch.arange(Wo, device=dev) * stride[1] - padding[1]).view(1, 1, 1, 1, Wo)
    py = base_y + (ki * dilation[0]).view(1, 1, K, 1, 1) + off[:, :, :, 0]  # B G K Ho Wo
    px = base_x + (kj * dilation[1]).view(1, 1, K, 1, 1) + off[:, :, :, 1]
    y0 = torch.floor(py)
    x0 = torch.floor(px)
    ly, lx = py - y0, px - x0
    y0, x0 = y0.long(), x0.long()
    src = input.reshape(B, G, C // G, H * W)
    cols = input.new_zeros(B, G, C // G, K * Ho * Wo)
    for dy, dx, wgt in (
        (0, 0, (1 - ly) * (1 - lx)),
        (0, 1, (1 - ly) * lx),
        (1, 0, ly * (1 - lx)),
        (1, 1, ly * lx),
    ):
        yy, xx = y0 + dy, x0 + dx
        valid = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        idx = (yy.clamp(0, H - 1) * W + xx.clamp(0, W - 1)).reshape(B, G, 1, K * Ho * Wo)
        vals = src.gather(3, idx.expand(B, G, C // G, K * Ho * Wo))
        cols = cols + vals * (wgt * valid.to(dt)).reshape(B, G, 1, K * Ho * Wo)
    if mask is not None:
        cols = cols * mask.reshape(B, G, 1, K * Ho * Wo)
    return cols.view(B, C, K, Ho, Wo)


def deform_conv2d_reference(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Modulated deformable conv2d with torchvision's signature and semantics (see module docstring).

    Args:
        input: ``(B, C_in, H, W)``.
        offset: ``(B, 2 * G * kh * kw, Ho, Wo)``.
        weight: ``(C_out, C_in / groups, kh, kw)``.
        bias: ``(C_out,)`` or None.
        mask: ``(B, G * kh * kw, Ho, Wo)`` or None (no modulation).

    Returns:
        ``(B, C_out, Ho, Wo)``.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    B, C, H, W = input.shape
    Cout, Cg, kh, kw = weight.shape
    groups = C // Cg
    K = kh * kw
    Ho = conv_out_size(H, kh, stride[0], padding[0], dilation[0])
    Wo = conv_out_size(W, kw, stride[1], padding[1], dilation[1])
    if offset.shape[-2:] != (Ho, Wo) or offset.shape[1] % (2 * K) or C % (offset.shape[1] // (2 * K)):
        raise ValueError(
            f"deform_conv2d: offset of shape {tuple(offset.shape)} does not fit input {tuple(input.shape)} "
            f"and kernel {kh}x{kw}: expected (B, 2*G*{K}, {Ho}, {Wo}) with C_in divisible by G"
        )
    if mask is not None and mask.shape[1] * 2 != offset.shape[1]:
        raise ValueError(f"deform_conv2d: mask has {mask.shape[1]} channels, expected {offset.shape[1] // 2}")
    cols = deform_sample_columns(input, offset, mask, (kh, kw), stride, padding, dilation)
    cols = cols.view(B, groups, Cg * K, Ho * Wo)  # channels then taps, as weight.view(Cout, Cg*K)
    w = weight.reshape(groups, Cout // groups, Cg * K)
    out = torch.einsum("gok,bgkn->bgon", w, cols).reshape(B, Cout, Ho, Wo)
    if bias is not None:
        out = out + bias.view(1, Cout, 1, 1)
    return out

