"""Window attention over the segments of a :class:`~svrt_model.layers.window_plan.WindowPlan`.

The windows of a segment share one shifted-window mask pattern, so they attend in ONE call with one
broadcast bias (relative position bias + pattern): no window is computed twice (the grouped-mask path
attends everywhere, then again where the mask is not zero: 37% of the windows of a shifted mutual block at
T=5), and no per-window bias or gathered copy of q/k/v is made. A segment may keep only some token rows
(the real frame of a window whose other frame is zero padding): then only those query rows, the one
mutual-attention direction that writes them and their projections are computed. Every kept row is
computed by :class:`~svrt_model.layers.attention.WindowAttention`'s arithmetic (the same operations on a
subset of rows and windows), so the numbers do not change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from svrt_model.errors import ModelConfigError
from svrt_model.layers.attention import WindowAttention, sdpa_padded, window_attention
from svrt_model.layers.window_plan import WindowPlan, WindowSegment

__all__ = ["attend", "segment_attention"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    rel_bias: torch.Tensor | None = None,
    pattern: torch.Tensor | None = None,
    impl: str = "fused",
) -> torch.Tensor:
    """``softmax(scale * q k^T + rel_bias + pattern) v`` with one bias shared by all windows.

    Args:
        q: ``(W, nH, Lq, hd)``; k, v: ``(W, nH, Lk, hd)``.
        rel_bias: ``(nH, Lq, Lk)`` or None.
        pattern: ``(Lq, Lk)`` additive shifted-window mask or None.
        impl: ``"fused"`` (SDPA, one additive bias in q's dtype, as ``window_attention``), ``"flex"``
            (``window_attention``'s FlexAttention path, the pattern as a one-window mask) or ``"plain"``
            (matmul-softmax-matmul, biases added to the logits in the official order, softmax in float32
            for half-precision inputs).

    Returns:
        ``(W, nH, Lq, hd)``.
    """
    if impl == "fused":
        bias = None if pattern is None else pattern.to(q.dtype)
        if rel_bias is not None:
            rel = rel_bias.to(q.dtype)
            bias = rel if bias is None else bias + rel
        return sdpa_padded(q, k, v, None if bias is None else bias.unsqueeze(0), scale)
    elif impl == "flex":
        return window_attention(q, k, v, scale=scale, rel_bias=rel_bias,
                                mask=None if pattern is None else pattern.unsqueeze(0), impl="flex")
    elif impl == "plain":
        attn = (q * scale) @ k.transpose(-2, -1)  # W nH Lq Lk
        if rel_bias is not None:
            attn = attn + rel_bias.unsqueeze(0)
        if pattern is not None:
            attn = attn + pattern.to(attn.dtype)
        if v.dtype in _LOW_PRECISION:  # as window_attention: logits hold -100 masks and small biases
            attn = attn.float().softmax(dim=-1).to(v.dtype)
        else:
            attn = attn.softmax(dim=-1)
        return attn @ v
    else:
        raise ModelConfigError(f"attend: unknown impl {impl!r}; expected 'fused', 'flex' or 'plain'")


def _tokens(out: torch.Tensor) -> torch.Tensor:
    """``(W, nH, L, hd)`` attention output to ``(W, L, C)`` tokens (a view of the fused kernels' output)."""
    w, heads, length, hd = out.shape
    return out.transpose(1, 2).reshape(w, length, heads * hd)


def _project(attn: WindowAttention, own: torch.Tensor, mutual: list[torch.Tensor]) -> torch.Tensor:
    """``proj(cat[mutual, self])`` of one segment's kept rows, as ``WindowAttention.forward`` computes it."""
    c = own.shape[-1]
    if attn.split_proj:
        weight = attn.proj.weight
        parts = [F.linear(a, weight[:, :c]) for a in mutual]
        mut = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return F.linear(own, weight[:, c:], attn.proj.bias) + mut
    mut = mutual[0] if len(mutual) == 1 else torch.cat(mutual, dim=1)
    return attn.proj(torch.cat([mut, own], dim=2))


def _mutual(attn: WindowAttention, qkv: torch.Tensor, seg: WindowSegment) -> list[torch.Tensor]:
    """The mutual attention outputs of a segment's kept rows: frame-1 slots (frame 2 attends to frame 1)
    and/or frame-2 slots, each ``(W, N/2, C)``."""
    q, k, v = qkv
    half = q.shape[2] // 2
    lo, hi = seg.rows
    w = slice(seg.start, seg.stop)
    first, second = slice(0, half), slice(half, 2 * half)
    outs = []
    for rows, other in ((first, second), (second, first)):
        if lo < rows.stop and hi > rows.start:
            outs.append(_tokens(attend(q[w, :, other], k[w, :, rows], v[w, :, rows], scale=attn.scale,
                                       pattern=seg.half_pattern, impl=attn.impl)))
    return outs


@torch.compiler.disable
def segment_attention(attn: WindowAttention, x: torch.Tensor, plan: WindowPlan) -> list[torch.Tensor]:
    """``attn`` (self, and mutual if it has it) on the windows of ``plan``, segment by segment.

    Kept out of ``torch.compile`` graphs (a compiled attention core graph-breaks here, its norm, gather and
    scatter still compile): the SDPA calls inside already graph-break (``attention._sdpa``), and a
    graph break inside the loop over segments makes dynamo compile ``attend`` once per segment shape until
    its recompile limit, for no fused work.

    Args:
        attn: the block's attention module (parameters, ``impl``, ``split_proj``, ``fast_bias``).
        x: ``(num_windows, N, C)`` window tokens in plan order (:func:`~svrt_model.layers.window_plan.gather_windows`).
        plan: a plan with ``split=True``.

    Returns:
        one ``(segment windows, hi - lo, C)`` tensor per segment: the projected outputs of its kept rows, for
        :func:`~svrt_model.layers.window_plan.scatter_windows`.
    """
    if not plan.split:
        raise ModelConfigError("segment_attention: the plan must group windows by mask (window_plan(split=True))")
    n = x.shape[1]
    q, k, v = attn.split_heads(attn.qkv_self(x))
    rel = attn.relative_bias(n)
    if attn.impl == "fused":
        rel = rel.to(q.dtype)  # once for all segments
    own = []
    for seg in plan.segments:
        lo, hi = seg.rows
        w = slice(seg.start, seg.stop)
        pattern = None if seg.pattern is None else seg.pattern[lo:hi]
        out = attend(q[w, :, lo:hi], k[w], v[w], scale=attn.scale, rel_bias=rel[:, lo:hi], pattern=pattern,
                     impl=attn.impl)
        own.append(_tokens(out))
    if not attn.mutual:
        return [attn.proj(o) for o in own]
    pos = attn.position_bias.to(x.dtype).repeat(1, 2, 1)  # 1 N C: the same encoding for both frames
    qkv = attn.split_heads(attn.qkv_mut(x + pos))
    return [_project(attn, o, _mutual(attn, qkv, seg)) for seg, o in zip(plan.segments, own, strict=True)]
