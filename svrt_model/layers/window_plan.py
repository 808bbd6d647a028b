"""Window plans: a block's pad + roll + window partition as ONE precomputed gather, the reverse (window
reverse + roll back + crop) as ONE scatter, and the windows ordered in segments that attend in one call.

The official partition (Swin / VRT, :mod:`svrt_model.layers.window`) zero-pads ``(B, D, H, W, C)`` tokens to
window multiples, rolls them by ``-shift`` and cuts windows: two or three full copies before the q/k/v
projection and two after the attention. A plan stores, once per (batch, size, window, shift), where every
window token comes from, so the same tokens arrive in one gather and leave in one scatter (pure copies:
no value changes). Its windows are ordered so that windows sharing a shifted-window mask pattern and a
padding layout are contiguous *segments*: each segment attends once with one broadcast bias, instead of
all windows attending with the zero mask and the masked ones again with theirs. Optionally a segment
also lists only the token slots whose outputs are used (``rows``): the query rows, mutual-attention
directions and projections of zero-padded frames (T=5 in windows of 2 frames) are then not computed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from svrt_model.errors import ModelConfigError, ModelInputError
from svrt_model.layers.window import MASK_VALUE, clear_mask_caches, padded_size

__all__ = [
    "WindowPlan", "WindowSegment", "clear_window_caches", "gather_windows", "scatter_windows", "window_plan",
]

Size3 = tuple[int, int, int]
_REGIONS = 27  # 3 regions per shifted axis (window.py's labels: d * 9 + h * 3 + w)


@dataclass(frozen=True, eq=False)
class WindowSegment:
    """Windows ``[start, stop)`` of a plan (all clips) that share one mask pattern and one row range.

    Attributes:
        start, stop: window range in plan order.
        pattern: ``(N, N)`` float32 additive mask (0 or -100) of every window in the segment; None when zero.
        half_pattern: ``(N/2, N/2)`` the mutual attention's mask (the official top-left slice); None when
            zero or when the plan is not for mutual windows.
        rows: token slots ``[lo, hi)`` whose outputs are used (``(0, N)`` unless padding is skipped).
        targets: ``((stop - start) * (hi - lo),)`` source token of each output row, in window-major order;
            rows of padding tokens point at the spare row ``num_sources``.
        targets_clamped: ``targets`` with padding rows at 0 (the backward gather; those rows are zeroed).
        target_pads: positions of the padding rows among the segment's output rows.
    """

    start: int
    stop: int
    pattern: torch.Tensor | None
    half_pattern: torch.Tensor | None
    rows: tuple[int, int]
    targets: torch.Tensor
    targets_clamped: torch.Tensor
    target_pads: torch.Tensor

    @property
    def num_windows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True, eq=False)
class WindowPlan:
    """Where the window tokens of one block come from and where its outputs go (see the module docstring).

    Attributes:
        batch, size, window, shift: the clips ``B``, the unpadded ``(D, H, W)``, the effective window and shift.
        split: windows grouped by mask pattern (each segment one pattern); otherwise ONE segment in the
            official window order whose masks the caller applies per window.
        num_windows: windows of all clips; ``tokens``: ``N`` per window.
        gather: ``(num_windows * N,)`` source token (flat ``B*D*H*W`` index) of each window token; 0 for padding.
        gather_pads: window-token positions that are padding (set to zero after the gather).
        gather_back: ``(B*D*H*W,)`` window-token position of every source token (each appears exactly once).
        segments: consecutive window ranges covering all windows.
    """

    batch: int
    size: Size3
    window: Size3
    shift: Size3
    split: bool
    num_windows: int
    tokens: int
    gather: torch.Tensor
    gather_pads: torch.Tensor
    gather_back: torch.Tensor
    segments: tuple[WindowSegment, ...]

    @property
    def num_sources(self) -> int:
        d, h, w = self.size
        return self.batch * d * h * w


def _axis_sources(n: int, padded: int, shift: int) -> torch.Tensor:
    """Source index along one axis of every position of the padded axis rolled by ``-shift`` (-1: padding)."""
    src = (torch.arange(padded) + shift) % padded  # torch.roll(x, -shift)[p] = x[(p + shift) % padded]
    return torch.where(src < n, src, torch.full_like(src, -1))


def _axis_labels(padded: int, window: int, shift: int) -> torch.Tensor:
    """Shifted-window region of each rolled padded position (0, 1, 2), as ``window._region_labels``."""
    label = torch.zeros(padded, dtype=torch.int64)
    if shift > 0:
        label[padded - window : padded - shift] = 1
        label[padded - shift :] = 2
    return label


def _per_window(d: torch.Tensor, h: torch.Tensor, w: torch.Tensor, window: Size3) -> tuple[torch.Tensor, ...]:
    """Axis values laid out as windows: ``(nW, N)`` each, windows in (nd, nh, nw) order, slots in (d, h, w)."""
    wd, wh, ww = window
    dd = d.view(-1, 1, 1, wd, 1, 1)
    hh = h.view(1, -1, 1, 1, wh, 1)
    vv = w.view(1, 1, -1, 1, 1, ww)
    shape = torch.broadcast_shapes(dd.shape, hh.shape, vv.shape)
    n = wd * wh * ww
    return tuple(t.expand(shape).reshape(-1, n) for t in (dd, hh, vv))


def _canonical(labels: torch.Tensor) -> torch.Tensor:
    """Region labels ``(nW, M)`` renamed by the first slot holding each label: equal rows give equal masks."""
    m = labels.shape[1]
    onehot = labels.unsqueeze(-1) == torch.arange(_REGIONS)  # nW M 27
    first = torch.where(onehot, torch.arange(m).view(1, m, 1), m).amin(1)  # nW 27
    return first.gather(1, labels)


def _mask_of(labels: torch.Tensor) -> torch.Tensor | None:
    """The additive mask of one window's canonical labels ``(M,)``: None when all tokens share a region."""
    if not labels.any():
        return None
    differ = labels.unsqueeze(0) != labels.unsqueeze(1)
    return torch.zeros(differ.shape, dtype=torch.float32).masked_fill_(differ, MASK_VALUE)


def _kept_rows(real: torch.Tensor, half: bool) -> torch.Tensor:
    """Per window ``(lo, hi)``: the range of real (non-padding) slots when they are contiguous (for mutual
    windows: exactly one of the two frames), else the whole window. ``real`` is ``(nW, N)`` bool."""
    nwin, n = real.shape
    count = real.sum(1)
    lo = real.int().argmax(1)
    hi = n - real.flip(1).int().argmax(1)
    ok = (count > 0) & (count == hi - lo)
    if half:
        ok &= ((lo == 0) & (hi == n // 2)) | ((lo == n // 2) & (hi == n))
    full = torch.tensor([0, n]).expand(nwin, 2)
    return torch.where(ok.unsqueeze(1), torch.stack([lo, hi], 1), full)


@functools.lru_cache(maxsize=64)
def _build(batch: int, size: Size3, window: Size3, shift: Size3, device: str, split: bool, skip_pads: bool,
           half: bool) -> WindowPlan:
    (d, h, w), n = size, window[0] * window[1] * window[2]
    padded = padded_size(size, window)
    sd, sh, sw = _per_window(*(_axis_sources(*a) for a in zip(size, padded, shift, strict=True)), window)
    pad = (sd < 0) | (sh < 0) | (sw < 0)  # nW N
    src = torch.where(pad, -1, (sd * h + sh) * w + sw)
    nwin = src.shape[0]
    rows = _kept_rows(~pad, half) if skip_pads else torch.tensor([0, n]).expand(nwin, 2)
    if split:
        ld, lh, lw = _per_window(*(_axis_labels(*a) for a in zip(padded, window, shift, strict=True)), window)
        labels = ld * 9 + lh * 3 + lw
        keys = [_canonical(labels), _canonical(labels[:, : n // 2])] if half else [_canonical(labels)]
        _, group = torch.unique(torch.cat([*keys, rows], 1), dim=0, return_inverse=True)
    else:
        group = torch.zeros(nwin, dtype=torch.int64)
    clip = d * h * w
    order, segments_cpu, start = [], [], 0
    for g in range(int(group.max()) + 1):
        members = torch.nonzero(group == g).flatten()
        if members.numel() == 0:
            continue
        ids = (torch.arange(batch).unsqueeze(1) * nwin + members).flatten()  # clip-major within the segment
        order.append(ids)
        first = int(members[0])
        lo, hi = (int(v) for v in rows[first])
        segments_cpu.append((start, start + ids.numel(), first, lo, hi))
        start += ids.numel()
    ids_all = torch.cat(order)
    window_of, clip_of = ids_all % nwin, ids_all // nwin
    tokens = torch.where(src[window_of] < 0, -1, src[window_of] + (clip_of * clip).unsqueeze(1))  # nW_all N
    flat = tokens.flatten()
    is_pad = flat < 0
    gather = torch.where(is_pad, 0, flat)
    gather_back = torch.full((batch * clip,), -1, dtype=torch.int64)
    gather_back[flat[~is_pad]] = torch.nonzero(~is_pad).flatten()
    segments = []
    for s0, s1, first, lo, hi in segments_cpu:
        t = tokens[s0:s1, lo:hi].flatten()
        pads = t < 0
        pattern = half_pattern = None
        if split:
            pattern = _mask_of(keys[0][first])
            half_pattern = _mask_of(keys[1][first]) if half else None
        segments.append(WindowSegment(
            start=s0, stop=s1, rows=(lo, hi),
            pattern=None if pattern is None else pattern.to(device),
            half_pattern=None if half_pattern is None else half_pattern.to(device),
            targets=torch.where(pads, batch * clip, t).to(device),
            targets_clamped=torch.where(pads, 0, t).to(device),
            target_pads=torch.nonzero(pads).flatten().to(device),
        ))
    return WindowPlan(
        batch=batch, size=size, window=window, shift=shift, split=split, num_windows=int(ids_all.numel()),
        tokens=n, gather=gather.to(device), gather_pads=torch.nonzero(is_pad).flatten().to(device),
        gather_back=gather_back.to(device), segments=tuple(segments),
    )


def window_plan(
    batch: int, size: Size3, window: Size3, shift: Size3, device: torch.device | str, *, split: bool = True,
    skip_pads: bool = False, half: bool = False,
) -> WindowPlan:
    """The plan of a block with effective ``window`` and ``shift`` (see ``window.effective_window``) on
    ``batch`` clips of ``size = (D, H, W)``. Cached per arguments; treat as read-only.

    Args:
        split: group windows by mask pattern (and row range) into segments; else one segment, official order.
        skip_pads: per window, keep only the rows of real tokens when they are one contiguous range (needs
            ``split``); with ``half`` only a whole frame of the two.
        half: mutual windows (2 frames): also group by the mutual attention's mask (``N/2 x N/2`` slice).
    """
    if skip_pads and not split:
        raise ModelConfigError("window_plan: skip_pads=True needs split=True (padding rows are grouped into "
                               "segments); pass split=True or skip_pads=False")
    return _build(int(batch), tuple(size), tuple(window), tuple(shift), str(torch.device(device)), bool(split),
                  bool(skip_pads), bool(half))


def clear_window_caches() -> None:
    """Forget the cached plans and shifted-window masks (both hold device memory), e.g. between benchmark
    rows so that one row's caches do not count in the next row's peak memory."""
    _build.cache_clear()
    clear_mask_caches()


class _GatherWindows(torch.autograd.Function):
    """``(S, C)`` source tokens to ``(num_windows * N, C)`` window tokens (padding zero); backward: one gather."""

    @staticmethod
    def forward(ctx: FunctionCtx, src: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
        out = src.index_select(0, plan.gather)
        if plan.gather_pads.numel():
            out.index_fill_(0, plan.gather_pads, 0)
        ctx.plan = plan
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.index_select(0, ctx.plan.gather_back), None  # padding tokens had no source


class _ScatterWindows(torch.autograd.Function):
    """One output tensor per segment to ``(S, C)`` source order (padding rows dropped); backward: one gather."""

    @staticmethod
    def forward(ctx: FunctionCtx, plan: WindowPlan, *parts: torch.Tensor) -> torch.Tensor:
        c = parts[0].shape[-1]
        out = parts[0].new_empty(plan.num_sources + 1, c)  # the last row takes the padding rows, then is cut off
        for seg, part in zip(plan.segments, parts, strict=True):
            out.index_copy_(0, seg.targets, part.reshape(-1, c))
        ctx.plan = plan
        ctx.shapes = [p.shape for p in parts]
        return out[: plan.num_sources]

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grads: list[torch.Tensor | None] = [None]
        for seg, shape in zip(ctx.plan.segments, ctx.shapes, strict=True):
            g = grad.index_select(0, seg.targets_clamped)
            if seg.target_pads.numel():
                g.index_fill_(0, seg.target_pads, 0)
            grads.append(g.view(shape))
        return tuple(grads)


def gather_windows(x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
    """Window tokens of ``x`` ``(B, D, H, W, C)``: ``(num_windows, N, C)`` in plan order (padding tokens zero).

    Equals ``window_partition(roll(pad_to_windows(x), -shift))`` with the windows in plan order.
    """
    b, d, h, w, c = x.shape
    if (b, d, h, w) != (plan.batch, *plan.size):
        raise ModelInputError(f"gather_windows: input {tuple(x.shape)} does not match the plan's (B, D, H, W) = "
                         f"{(plan.batch, *plan.size)}; build the plan for this input's size")
    return _GatherWindows.apply(x.reshape(-1, c), plan).view(plan.num_windows, plan.tokens, c)


def scatter_windows(parts: list[torch.Tensor] | tuple[torch.Tensor, ...], plan: WindowPlan) -> torch.Tensor:
    """Attention outputs back to ``(B, D, H, W, C)``: the inverse of :func:`gather_windows` (rolled back,
    padding cut off).

    Args:
        parts: one tensor per segment, ``(segment windows, hi - lo, C)`` (its ``rows``), windows in plan order.
    """
    if len(parts) != len(plan.segments):
        raise ModelInputError(f"scatter_windows: got {len(parts)} parts for the plan's {len(plan.segments)} segments; "
                              "give one output tensor per segment")
    c = parts[0].shape[-1]
    for i, (seg, part) in enumerate(zip(plan.segments, parts, strict=True)):
        want = (seg.num_windows, seg.rows[1] - seg.rows[0], c)
        if tuple(part.shape) != want:
            raise ModelInputError(f"scatter_windows: part {i} has shape {tuple(part.shape)}, the segment needs {want} "
                                  "(its windows, its kept rows, the channels)")
    return _ScatterWindows.apply(plan, *parts).view(plan.batch, *plan.size, c)
