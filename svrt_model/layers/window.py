"""3D (video) window helpers: effective window and shift, padding, partition, reverse, shifted-window mask.

The shifted-window scheme is Swin's (Liu et al., "Swin Transformer", ICCV 2021; Video Swin, CVPR 2022)
as VRT uses it: tokens are laid out ``(B, D, H, W, C)`` (channels last), zero-padded at the end of D,
H and W to window multiples, optionally rolled by ``-shift``, and cut into windows of ``Wd*Wh*Ww``
tokens in ``(d, h, w)`` order.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from einops import rearrange

__all__ = [
    "MASK_VALUE",
    "effective_window",
    "padded_size",
    "pad_to_windows",
    "MaskGroups",
    "clear_mask_caches",
    "mask_groups",
    "masked_windows",
    "shifted_window_mask",
    "window_partition",
    "window_reverse",
]

Size3 = tuple[int, int, int]

MaskGroups = tuple[tuple[torch.Tensor, torch.Tensor], ...]
"""``((pattern (N, N), window indices (m,)), ...)``: the masked windows grouped by their mask."""

MASK_VALUE = -100.0
"""Additive attention mask between tokens of different shifted-window regions (the official value)."""


def effective_window(size: Size3, window: Size3, shift: Size3) -> tuple[Size3, Size3]:
    """Window and shift actually used for an input of ``size = (D, H, W)``.

    A window dimension that covers the whole input (``size <= window``) shrinks to the input, and its
    shift becomes 0 (nothing to shift), as in the official implementation.
    """
    win = tuple(s if s <= w else w for s, w in zip(size, window, strict=True))
    sft = tuple(0 if s <= w else h for s, w, h in zip(size, window, shift, strict=True))
    return win, sft  # type: ignore[return-value]


def padded_size(size: Size3, window: Size3) -> Size3:
    """``size`` rounded up to window multiples, per dimension."""
    return tuple(-(-s // w) * w for s, w in zip(size, window, strict=True))  # type: ignore[return-value]


def pad_to_windows(x: torch.Tensor, window: Size3) -> torch.Tensor:
    """Zero-pad ``(B, D, H, W, C)`` at the end of D, H and W to window multiples (no copy when aligned)."""
    _, d, h, w, _ = x.shape
    dp, hp, wp = padded_size((d, h, w), window)
    if (dp, hp, wp) == (d, h, w):
        return x
    return F.pad(x, (0, 0, 0, wp - w, 0, hp - h, 0, dp - d))


def window_partition(x: torch.Tensor, window: Size3) -> torch.Tensor:
    """Cut ``(B, D, H, W, C)`` (window multiples) into ``(B*nW, Wd*Wh*Ww, C)`` windows, (d, h, w) order."""
    wd, wh, ww = window
    return rearrange(x, "b (nd wd) (nh wh) (nw ww) c -> (b nd nh nw) (wd wh ww) c", wd=wd, wh=wh, ww=ww)


def window_reverse(windows: torch.Tensor, window: Size3, batch: int, size: Size3) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B*nW, Wd*Wh*Ww, C)`` back to ``(B, D, H, W, C)``."""
    wd, wh, ww = window
    d, h, w = size
    return rearrange(
        windows,
        "(b nd nh nw) (wd wh ww) c -> b (nd wd) (nh wh) (nw ww) c",
        b=batch, nd=d // wd, nh=h // wh, nw=w // ww, wd=wd, wh=wh, ww=ww,
    )


def _region_labels(n: int, window: int, shift: int) -> torch.Tensor:
    """Region of each index along one padded axis after rolling by ``-shift`` (0, 1, 2; all 0 unshifted)."""
    label = torch.zeros(n, dtype=torch.int64)
    if shift > 0:
        label[n - window : n - shift] = 1
        label[n - shift :] = 2
    return label


@functools.lru_cache(maxsize=64)
def _shifted_window_mask(size: Size3, window: Size3, shift: Size3, device: str) -> torch.Tensor:
    ld, lh, lw = (_region_labels(n, w, s) for n, w, s in zip(size, window, shift, strict=True))
    labels = (ld.view(-1, 1, 1) * 9 + lh.view(1, -1, 1) * 3 + lw.view(1, 1, -1)).view(1, *size, 1)
    per_window = window_partition(labels, window).squeeze(-1)  # nW N
    differ = per_window.unsqueeze(1) != per_window.unsqueeze(2)  # nW N N
    mask = torch.zeros(differ.shape, dtype=torch.float32).masked_fill_(differ, MASK_VALUE)
    return mask.to(device)


def shifted_window_mask(size: Size3, window: Size3, shift: Size3, device: torch.device | str) -> torch.Tensor:
    """Additive mask ``(nW, N, N)`` (float32, 0 or -100) for attention in rolled, shifted windows.

    Args:
        size: padded ``(Dp, Hp, Wp)`` (window multiples).
        window: the effective window ``(Wd, Wh, Ww)``; ``N = Wd*Wh*Ww``.
        shift: the effective shift; a zero shift leaves that axis in one region.

    Tokens of two different regions (pieces brought together by the cyclic roll) get -100, the
    official value; the same region gets 0. Cached per (size, window, shift, device): treat as read-only.
    """
    return _shifted_window_mask(tuple(size), tuple(window), tuple(shift), str(torch.device(device)))


@functools.lru_cache(maxsize=64)
def _masked_windows(size: Size3, window: Size3, shift: Size3, device: str) -> torch.Tensor:
    mask = _shifted_window_mask(size, window, shift, "cpu")
    return torch.nonzero(mask.ne(0).flatten(1).any(1)).flatten().to(device)


def masked_windows(size: Size3, window: Size3, shift: Size3, device: torch.device | str) -> torch.Tensor:
    """Indices ``(nM,)`` of the windows whose :func:`shifted_window_mask` is not all zero.

    Only windows along the far border of a shifted axis mix regions (e.g. 47 of 576 windows for a
    192x192 frame and 8x8 windows); attention can skip the mask everywhere else. Cached; read-only.
    """
    return _masked_windows(tuple(size), tuple(window), tuple(shift), str(torch.device(device)))


@functools.lru_cache(maxsize=64)
def _mask_groups(size: Size3, window: Size3, shift: Size3, tokens: int, device: str) -> MaskGroups:
    mask = _shifted_window_mask(size, window, shift, "cpu")[:, :tokens, :tokens]
    windows = _masked_windows(size, window, shift, "cpu")
    patterns, which = torch.unique(mask.index_select(0, windows).flatten(1), dim=0, return_inverse=True)
    groups = []
    for i, pattern in enumerate(patterns):
        if pattern.any():  # an all-zero slice (mutual attention's first-frame block) needs no redo
            groups.append((pattern.view(tokens, tokens).to(device), windows[which == i].to(device)))
    return tuple(groups)


def mask_groups(
    size: Size3, window: Size3, shift: Size3, device: torch.device | str, tokens: int | None = None
) -> MaskGroups:
    """The windows of :func:`masked_windows` grouped by their mask pattern (a handful: one per combination
    of borders), each pattern ``(N, N)`` float32 with its window indices; ``tokens`` takes the top-left
    ``tokens x tokens`` block of every mask first (mutual attention's slice). Patterns that are all
    zero are left out. Cached; read-only.

    Attention can then add ONE broadcast bias per group instead of materialising a bias per window.
    """
    tokens = window[0] * window[1] * window[2] if tokens is None else tokens
    return _mask_groups(tuple(size), tuple(window), tuple(shift), int(tokens), str(torch.device(device)))


def clear_mask_caches() -> None:
    """Forget the cached masks, masked-window lists and groups (they hold device memory: ~0.9 GB of float32 masks
    for svrt_base at 5x256x256); the next call rebuilds what it needs."""
    for cached in (_shifted_window_mask, _masked_windows, _mask_groups):
        cached.cache_clear()
