"""Per-pixel multi-head attention over T, with the parameters of an ``nn.MultiheadAttention``.

S-VRT's temporal attentions (Vaswani et al., "Attention Is All You Need", 2017, applied along time at
every pixel) are hundreds of thousands of length-T sequences: memory-bound work. Two paths compute the
same function from the same parameters (``in_proj_weight``/``in_proj_bias``/``out_proj``):

- ``"fused"``: tokens stay channels-last ``(B, T, S, C)`` (S = pixels, the backbone's memory order);
  q/k/v come from ``F.linear`` and every pixel is one sequence of ONE ``F.scaled_dot_product_attention``
  call whose batch is the pixels (a strided view, no layout copy). Inside a ``torch.compile`` region the
  attention is written as broadcast products and reductions instead, which inductor fuses into a
  couple of kernels with the surrounding projections' epilogues.
- ``"reference"``: the original formulation: pixel-major tokens ``(B*S, T, C)`` through the
  ``nn.MultiheadAttention`` module itself.

:func:`map_pixel_chunks` runs a per-pixel function over ranges of pixels (bounded transient memory);
since every pixel is independent the result equals the unchunked one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from svrt_model.errors import ModelConfigError
from svrt_model.layers.attention import sdpa_padded

__all__ = [
    "ATTENTION_IMPLS",
    "PixelAttentionBlock",
    "fused_attention",
    "map_pixel_chunks",
    "math_attention",
    "reference_attention",
    "sdpa_attention",
    "temporal_attention",
]

ATTENTION_IMPLS = ("fused", "reference")

# The fused CUDA attention kernels put the batch on a grid axis limited to 65535 blocks: larger pixel
# batches are split into pieces of at most this many sequences (2 calls for a 256x256 frame).
_MAX_CUDA_BATCH = 65535


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(T, S, C)`` to ``(S, nH, T, hd)``: a strided view (pixels become the SDPA batch)."""
    return x.unflatten(-1, (heads, -1)).permute(1, 2, 0, 3)  # T S nH hd -> S nH T hd


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Attention over T per pixel through SDPA: q, k, v ``(B, T, S, C)`` to ``(B, S, T, C)`` (pixel-major).

    Each clip of the batch is one call (pixels of different clips are not one uniform stride apart in
    channels-last memory); on CUDA a call is split where the pixel count exceeds the kernels' grid limit.
    """
    b, t, s, c = q.shape
    limit = _MAX_CUDA_BATCH if q.is_cuda else s
    outs = []
    for i in range(b):
        qi, ki, vi = (_split_heads(x[i], heads) for x in (q, k, v))  # S nH T hd
        pieces = [
            sdpa_padded(qi[p:p + limit], ki[p:p + limit], vi[p:p + limit]).transpose(1, 2)  # s T nH hd
            for p in range(0, s, limit)
        ]
        out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        outs.append(out.reshape(s, t, c))  # S T C
    return outs[0].unsqueeze(0) if b == 1 else torch.stack(outs)


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """The same attention as broadcast products and sums: q, k, v ``(B, T, S, C)`` to ``(B, T, S, C)``.

    Eagerly this materialises ``T`` times q's size; inside ``torch.compile`` inductor fuses each product
    with its reduction, so logits, softmax and the weighted sum read q, k and v about once.
    """
    qh, kh, vh = (x.unflatten(-1, (heads, -1)) for x in (q, k, v))  # B T S nH hd
    scale = qh.shape[-1] ** -0.5
    logits = (qh.unsqueeze(2) * kh.unsqueeze(1)).sum(-1) * scale  # B Tq Tk S nH
    weights = logits.softmax(dim=2)
    return (weights.unsqueeze(-1) * vh.unsqueeze(1)).sum(2).flatten(-2)  # B T S C


def fused_attention(query: torch.Tensor, context: torch.Tensor | None, mha: nn.MultiheadAttention) -> torch.Tensor:
    """``out_proj(attention(q(query), k(context), v(context)))`` per pixel, tokens channels-last.

    Args:
        query: ``(B, T, S, C)`` (already normalised).
        context: ``(B, T, S, C)`` keys/values source, or None for self-attention (one q/k/v GEMM).
        mha: the parameter holder (``batch_first`` ``nn.MultiheadAttention`` with packed in-projection).

    Returns:
        ``(B, T, S, C)``, possibly a strided view (pixel-major memory in eager mode).
    """
    c = query.shape[-1]
    w, bias = mha.in_proj_weight, mha.in_proj_bias
    if context is None:
        q, k, v = F.linear(query, w, bias).chunk(3, dim=-1)
    else:
        q = F.linear(query, w[:c], None if bias is None else bias[:c])
        k, v = F.linear(context, w[c:], None if bias is None else bias[c:]).chunk(2, dim=-1)
    if torch.compiler.is_compiling():
        out = math_attention(q, k, v, mha.num_heads)  # B T S C
        return F.linear(out, mha.out_proj.weight, mha.out_proj.bias)
    out = sdpa_attention(q, k, v, mha.num_heads)  # B S T C
    return F.linear(out, mha.out_proj.weight, mha.out_proj.bias).transpose(1, 2)  # B T S C view


def reference_attention(query: torch.Tensor, context: torch.Tensor | None, mha: nn.MultiheadAttention) -> torch.Tensor:
    """The original formulation: ``mha(q, k, v)`` on pixel-major ``(B*S, T, C)`` tokens; same in/out as
    :func:`fused_attention`."""
    b, t, s, c = query.shape
    q = query.permute(0, 2, 1, 3).reshape(b * s, t, c)  # (B S) T C
    kv = q if context is None else context.permute(0, 2, 1, 3).reshape(b * s, t, c)
    out, _ = mha(q, kv, kv, need_weights=False)
    return out.view(b, s, t, c).transpose(1, 2)  # B T S C view


def temporal_attention(
    query: torch.Tensor, context: torch.Tensor | None, mha: nn.MultiheadAttention, impl: str = "fused"
) -> torch.Tensor:
    """Dispatch to :func:`fused_attention` or :func:`reference_attention` (see the module docstring)."""
    if impl == "fused":
        return fused_attention(query, context, mha)
    elif impl == "reference":
        return reference_attention(query, context, mha)
    else:
        raise ModelConfigError(f"temporal_attention: unknown impl {impl!r}; expected one of {ATTENTION_IMPLS}")


def map_pixel_chunks(
    fn: Callable[..., torch.Tensor], tensors: tuple[torch.Tensor, ...], chunk_tokens: int | None
) -> torch.Tensor:
    """``fn(*tensors)`` over ranges of pixels: tensors ``(B, T, S, C)`` sliced along S so each call sees at
    most ``chunk_tokens`` pixel sequences (B x pixels); outputs ``(B, T, S, C)`` concatenated along S.

    None (or a chunk covering everything) is one call. Per-pixel functions give the unchunked result.
    """
    b, _, s, _ = tensors[0].shape
    if chunk_tokens is None or b * s <= chunk_tokens:
        return fn(*tensors)
    step = max(1, chunk_tokens // b)
    outs = [fn(*(x[:, :, p:p + step] for x in tensors)) for p in range(0, s, step)]
    return torch.cat(outs, dim=2)


class PixelAttentionBlock(nn.Module):
    """Base of the per-pixel temporal blocks: their run-time switches and how :meth:`compute` is run.

    Switches (set through ``VRTSpike``'s methods): ``impl`` (``"fused"`` / ``"reference"``),
    ``chunk_tokens`` (None or pixel sequences per call), ``checkpoint`` (recompute each chunk in backward
    instead of keeping its activations) and :meth:`set_compiled` (``torch.compile`` of the fused path).
    """

    def __init__(self) -> None:
        super().__init__()
        self.impl = "fused"
        self.chunk_tokens: int | None = None
        self.checkpoint = False
        self._compiled: Callable[..., torch.Tensor] | None = None

    def compute(self, *tokens: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def set_compiled(self, enabled: bool) -> None:
        """Run the fused path's :meth:`compute` through ``torch.compile`` (one region per block)."""
        self._compiled = torch.compile(self.compute, dynamic=False) if enabled else None

    def run(self, *tokens: torch.Tensor) -> torch.Tensor:
        """:meth:`compute` over ``(B, T, S, C)`` tokens, chunked / checkpointed / compiled as switched."""
        fn = self._compiled if self._compiled is not None and self.impl == "fused" else self.compute
        if self.checkpoint and torch.is_grad_enabled():
            inner = fn

            def fn(*xs: torch.Tensor) -> torch.Tensor:  # per chunk: the recompute is chunked too
                return checkpoint(inner, *xs, use_reentrant=False)

        return map_pixel_chunks(fn, tokens, self.chunk_tokens)
