"""Position terms of VRT's window attention: the relative position index and bias, and the sine encoding.

- Relative position bias (Swin, Liu et al. 2021): a learned table of ``(2Wd-1)(2Wh-1)(2Ww-1)`` rows
  by heads, looked up by the (dd, dh, dw) offset between two tokens of a window.
- Sine position encoding (DETR, Carion et al. 2020): a fixed 2D encoding of the ``Wh x Ww`` window
  positions, added before the mutual attention's q/k/v projection.

Both buffers are computed in float32 exactly as the official code does, so a model cast to float64
holds the same (float32-rounded) values as the official model cast to float64.
"""

from __future__ import annotations

import math

import torch

__all__ = ["relative_position_bias", "relative_position_index", "sine_position_encoding"]


def relative_position_index(window: tuple[int, int, int]) -> torch.Tensor:
    """Table row of every token pair of a window: ``(N, N)`` int64, ``N = Wd*Wh*Ww``.

    Row of tokens i, j: ``(dd+Wd-1)(2Wh-1)(2Ww-1) + (dh+Wh-1)(2Ww-1) + (dw+Ww-1)`` with ``dd = d_i - d_j``
    (likewise h, w); tokens in (d, h, w) order.
    """
    wd, wh, ww = window
    grid = torch.stack(torch.meshgrid(torch.arange(wd), torch.arange(wh), torch.arange(ww), indexing="ij"))
    coords = grid.flatten(1)  # 3 N
    rel = coords[:, :, None] - coords[:, None, :]  # 3 N N: token i minus token j
    return (
        (rel[0] + wd - 1) * (2 * wh - 1) * (2 * ww - 1)
        + (rel[1] + wh - 1) * (2 * ww - 1)
        + (rel[2] + ww - 1)
    )


def relative_position_bias(table: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Per-head bias ``(nH, n, n)`` for the first ``n`` tokens of a window.

    Args:
        table: ``(rows, nH)`` learned table.
        index: ``(N, N)`` from :func:`relative_position_index` of the full window; a window that shrank
            to fewer tokens uses the top-left ``n x n`` block, as the official code does.
    """
    idx = index[:n, :n].reshape(-1)
    # contiguous: SDPA's memory-efficient kernel refuses a mask whose last dimension is strided
    return table[idx].view(n, n, -1).permute(2, 0, 1).contiguous()


def sine_position_encoding(
    height: int, width: int, num_pos_feats: int, temperature: float = 10000.0
) -> torch.Tensor:
    """Normalised 2D sine encoding of a ``height x width`` window: ``(1, height*width, 2*num_pos_feats)``.

    Positions ``1..height`` and ``1..width`` are scaled to ``(0, 2*pi]``; feature ``2i`` is a sine and
    ``2i+1`` a cosine of ``pos / temperature^(2i/num_pos_feats)``; channels are ``[y features, x
    features]``; tokens are row-major (h, w). Computed in float32 like the official buffer.
    """
    scale = 2 * math.pi
    eps = 1e-6
    ones = torch.ones(1, height, width)
    y = ones.cumsum(1, dtype=torch.float32)
    x = ones.cumsum(2, dtype=torch.float32)
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32)
    dim_t = temperature ** (2 * (dim_t // 2) / num_pos_feats)
    pos_x = x[:, :, :, None] / dim_t
    pos_y = y[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos = torch.cat((pos_y, pos_x), dim=3)  # 1 H W 2F
    return pos.flatten(1, 2).contiguous()  # 1 (H W) 2F
