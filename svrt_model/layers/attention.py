"""Window attention: a pure function with a fused (SDPA), a flex (FlexAttention) and a plain
(matmul-softmax) path, and the ``WindowAttention`` module of VRT's TMSA blocks (self attention, plus mutual
attention in the first group of each stage; Liang et al., "VRT: A Video Restoration Transformer", 2022).

The module only owns parameters and buffers (official names); the arithmetic lives in
:func:`window_attention`, which tests compare across paths.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import flex_attention

from svrt_model.errors import ModelConfigError
from svrt_model.layers.position import relative_position_bias, relative_position_index, sine_position_encoding
from svrt_model.layers.window import MaskGroups

__all__ = ["ATTENTION_IMPLS", "WindowAttention", "raise_recompile_limits", "sdpa_padded", "window_attention"]

ATTENTION_IMPLS = ("fused", "flex", "plain")
"""``"fused"``: ``F.scaled_dot_product_attention`` with one additive mask; ``"flex"``: FlexAttention with the
bias and mask read inside the kernel; ``"plain"``: the reference."""

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_HEAD_DIM_ALIGN = 8
# cuDNN's fused attention, which SDPA prefers for unmasked bf16/fp16 inputs, hits an illegal memory
# access on VRT's mutual-attention windows with small heads (tiny config: 64 tokens, head dim 8; torch
# 2.11, benchmarks/RESULTS.md "After the cuDNN-attention fix"): keep SDPA on the flash,
# memory-efficient and math kernels. Windows of up to _SHORT_WINDOW tokens try the memory-efficient
# kernel first, longer ones flash: the faster order for each (SDPA timings: benchmarks/RESULTS.md).
_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
_SDPA_BACKENDS_SHORT = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]
_SHORT_WINDOW = 64


def _plain_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, rel_bias: torch.Tensor | None,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    bw, heads, n, _ = q.shape
    attn = (q * scale) @ k.transpose(-2, -1)  # B*nW nH N N
    if rel_bias is not None:
        attn = attn + rel_bias.unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        attn = attn.view(bw // nw, nw, heads, n, n) + mask[None, :, None].to(attn.dtype)
        attn = attn.view(bw, heads, n, n)
    if v.dtype in _LOW_PRECISION:  # softmax in float32: logits hold -100 masks and small biases
        attn = attn.float().softmax(dim=-1).to(v.dtype)
    else:
        attn = attn.softmax(dim=-1)
    return attn @ v


_flex_compiled = None
_RECOMPILE_LIMIT = 256
_ACCUMULATED_RECOMPILE_LIMIT = 1024


def raise_recompile_limits() -> None:
    """Raise torch dynamo's process-wide recompile limits to at least 256 per function and 1024 in all.

    A compiled function meets one shape per window size, segment and grad mode: ~20 for one VRT's
    blocks, and more when one process also runs validation on other frame sizes or a second model. Past
    the limit (default 8) dynamo runs the function eagerly: for FlexAttention that is its unfused path,
    which materialises the scores and, under activation checkpointing, fails (64 was hit on the H200 by
    two VRTs in one test process, session 10). Global and not restored.
    """
    import torch._dynamo.config as dynamo_config

    for name, limit in (("recompile_limit", _RECOMPILE_LIMIT), ("cache_size_limit", _RECOMPILE_LIMIT),
                        ("accumulated_recompile_limit", _ACCUMULATED_RECOMPILE_LIMIT),
                        ("accumulated_cache_size_limit", _ACCUMULATED_RECOMPILE_LIMIT)):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), limit))


def _flex_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, rel_bias: torch.Tensor | None,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """FlexAttention with the relative bias and the window's mask added to each logit inside the kernel.

    The fused path hands SDPA a bias that the memory-efficient kernel reads for every window, and for a
    learned bias its backward produces the gradient at the expanded (per-window) size before the broadcast
    is summed; here the kernel reads ``rel_bias[h, i, j]`` and ``mask[window, i, j]`` per logit and
    accumulates the bias gradient itself, and no masked-window regrouping is needed. Whether that is
    faster on a given GPU is what ``benchmarks/bench_ops.py --ops window_attn`` and the ``attn=flex`` rows
    of ``benchmarks/bench_svrt.py`` measure.

    The bias is added in float32 (the kernel's logit dtype). On the GPU the call is compiled (Triton
    kernels, forward and backward; the head dim zero-padded to a power of two >= 16, e.g. 20 -> 32, as the
    kernels' tiles need); on the CPU FlexAttention runs its unfused reference, forward only.
    """
    nw = 1 if mask is None else mask.shape[0]

    def score_mod(score: torch.Tensor, b: torch.Tensor, h: torch.Tensor, i: torch.Tensor, j: torch.Tensor
                  ) -> torch.Tensor:
        if rel_bias is not None:
            score = score + rel_bias[h, i, j]
        if mask is not None:
            score = score + mask[b % nw, i, j]
        return score

    if q.device.type == "cuda":
        if torch.compiler.is_compiling():  # a compiled block: traced into its graph
            return _flex_in_graph(q, k, v, scale, score_mod)
        return _flex_cuda(q, k, v, scale, score_mod)
    with warnings.catch_warnings():  # the unfused reference is what the CPU path is meant to be
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile", category=UserWarning)
        return flex_attention(q, k, v, score_mod=score_mod, scale=scale)


def _padded(flex, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, score_mod) -> torch.Tensor:
    """``flex(q, k, v)`` with the head dim zero-padded to what the Triton tiles need, a power of two >= 16
    (exact: zero features add zeros to q.k, and the padded output columns are cut off)."""
    hd = q.shape[-1]
    pad = max(16, 1 << (hd - 1).bit_length()) - hd
    if pad:
        q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))
    out = flex(q, k, v, score_mod=score_mod, scale=scale)
    return out[..., :hd] if pad else out


def _flex_in_graph(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, score_mod) -> torch.Tensor:
    """FlexAttention traced into the graph of the compiled block that calls it, on contiguous q, k, v.

    The copies are what makes it exact: on the H200 (torch 2.11) flex traced into a compiled attention
    core on q, k, v that are views of one projection (heads split out by a permute) gave a float32 output
    3e-3 off the reference and gradients 8% off, with or without head-dim padding; on contiguous copies it
    agrees to 3e-7 (``benchmarks/diag_flex_graph.py``, ``benchmarks/RESULTS.md``, session 10).
    """
    return _padded(flex_attention, q.contiguous(), k.contiguous(), v.contiguous(), scale, score_mod)


def _flex_cuda(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, score_mod) -> torch.Tensor:
    """FlexAttention from eager code on the GPU: one compiled function (its Triton kernels, one per window
    shape, ~20 for VRT; the recompile limits are raised for it)."""
    global _flex_compiled
    if _flex_compiled is None:
        raise_recompile_limits()
        _flex_compiled = torch.compile(flex_attention, dynamic=False)
    return _padded(_flex_compiled, q, k, v, scale, score_mod)


@torch.compiler.disable
def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    """SDPA with the head dim zero-padded to a multiple of 8 (the fused GPU kernels need it; e.g. 120
    channels / 6 heads = 20). Zero features add exact zeros to q.k, and the padded output is cut off.

    Kept out of ``torch.compile`` graphs as a whole (see :func:`_sdpa_call`): with only the kernel call
    outside, dynamo traced this function as a frame of its own and compiled it once per window count
    (the grouped masks' groups differ in size) until its recompile limit (H200, ``svrt_base``: 64 variants
    within a 200 s first call), for nothing to fuse but a padding copy."""
    hd = q.shape[-1]
    pad = -hd % _HEAD_DIM_ALIGN
    if pad:
        q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))
    if bias is not None:
        bias = bias.contiguous()
    out = _sdpa_call(q, k, v, bias, scale)
    return out[..., :hd] if pad else out


def sdpa_padded(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None, scale: float | None = None
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` on the backends VRT uses (no cuDNN attention), with the head dim
    zero-padded to a multiple of 8 for the fused GPU kernels. q, k, v ``(N, nH, L, hd)`` (any strides with
    a unit last stride); ``scale`` defaults to ``hd ** -0.5`` of the unpadded head dim."""
    return _sdpa(q, k, v, bias, q.shape[-1] ** -0.5 if scale is None else scale)


def _sdpa_call(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """The SDPA kernel call, kept out of ``torch.compile`` graphs (through :func:`_sdpa`): compiling the
    attention core with this call inside failed in inductor on CUDA (torch 2.11, an AssertionError).
    Compiled attention cores graph-break here instead, so the data movement around attention (norm, roll,
    window partition, output projection) still fuses."""
    if q.device.type == "meta":  # shape / memory tracing: keep for backward what the CUDA fused kernel keeps
        lse = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        if bias is not None:
            bias = bias.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, bias, lse, scale=scale)[0]
    short = max(q.shape[-2], k.shape[-2]) <= _SHORT_WINDOW
    with sdpa_kernel(_SDPA_BACKENDS_SHORT if short else _SDPA_BACKENDS, set_priority=True):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)


def _grouped_mask_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, shared: torch.Tensor | None, nw: int,
    groups: MaskGroups,
) -> torch.Tensor:
    """Attend everywhere with the shared bias, then redo the masked windows group by group, each group with
    ONE broadcast bias (its mask pattern + the shared bias): no per-window bias is materialised or kept."""
    out = _sdpa(q, k, v, shared, scale)
    if not groups:
        return out
    batch = q.shape[0] // nw
    offsets = torch.arange(batch, device=q.device).unsqueeze(1) * nw
    indices, fixed = [], []
    for pattern, windows in groups:
        idx = (offsets + windows).flatten()  # (B m)
        bias = pattern.to(q.dtype).expand(1, 1, *pattern.shape)
        if shared is not None:
            bias = bias + shared  # 1 nH N N
        fixed.append(_sdpa(q.index_select(0, idx), k.index_select(0, idx), v.index_select(0, idx), bias, scale))
        indices.append(idx)
    if len(fixed) == 1:
        return out.index_copy(0, indices[0], fixed[0])
    return out.index_copy(0, torch.cat(indices), torch.cat(fixed))


def _fused_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, rel_bias: torch.Tensor | None,
    mask: torch.Tensor | None, mask_windows: torch.Tensor | None, mask_groups: MaskGroups | None = None,
) -> torch.Tensor:
    bw, heads, n, hd = q.shape
    shared = None if rel_bias is None else rel_bias.unsqueeze(0).to(q.dtype)  # 1 nH N N, broadcast over windows
    if mask is None:
        return _sdpa(q, k, v, shared, scale)
    nw = mask.shape[0]
    batch = bw // nw
    if mask_groups is not None:
        return _grouped_mask_attention(q, k, v, scale, shared, nw, mask_groups)
    if mask_windows is not None:
        # Most windows have an all-zero mask: attend everywhere with the shared bias, then redo only the
        # windows that mix shifted regions with the full mask, so the per-window bias (and its gradient)
        # is materialised for those windows alone.
        out = _sdpa(q, k, v, shared, scale)
        if mask_windows.numel() == 0:
            return out
        idx = (torch.arange(batch, device=q.device).unsqueeze(1) * nw + mask_windows).flatten()  # (B nM)
        bias = mask.index_select(0, mask_windows).unsqueeze(1).to(q.dtype)  # nM 1 N N
        if shared is not None:
            bias = bias + shared
        if batch > 1:
            bias = bias.repeat(batch, 1, 1, 1)
        fixed = _sdpa(q.index_select(0, idx), k.index_select(0, idx), v.index_select(0, idx), bias, scale)
        return out.index_copy(0, idx, fixed)
    bias = mask.unsqueeze(1).to(q.dtype)  # nW 1 N N
    if shared is not None:
        bias = bias + shared  # nW nH N N: one additive mask
    if batch == 1:
        return _sdpa(q, k, v, bias, scale)
    # Several clips: fold windows into the head axis so the per-window mask broadcasts over clips
    # instead of being copied once per clip.
    bias = bias.expand(nw, heads, n, n).reshape(1, nw * heads, n, n)
    q, k, v = (t.reshape(batch, nw * heads, n, hd) for t in (q, k, v))  # B (nW nH) N hd
    return _sdpa(q, k, v, bias, scale).reshape(bw, heads, n, hd)


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    rel_bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    mask_windows: torch.Tensor | None = None,
    mask_groups: MaskGroups | None = None,
    impl: str = "fused",
) -> torch.Tensor:
    """Multi-head attention inside windows, with an optional per-head bias and per-window mask.

    ``softmax(scale * q k^T + rel_bias + mask) v`` for every window and head.

    Args:
        q, k, v: ``(B*nW, nH, N, hd)``; windows ordered clip-major (``B`` clips of ``nW`` windows).
        scale: logit scale (``hd ** -0.5`` unless configured).
        rel_bias: ``(nH, N, N)`` relative position bias, shared by all windows, or None.
        mask: ``(nW, N, N)`` additive shifted-window mask, shared by all clips, or None.
        mask_windows: optional indices of the windows whose mask is not all zero (see
            :func:`~svrt_model.layers.window.masked_windows`); the fused path then builds the per-window
            mask for those windows only. Ignored by the plain path; never changes the result.
        mask_groups: optional masked windows grouped by mask pattern (see
            :func:`~svrt_model.layers.window.mask_groups`); the fused path then redoes each group with one
            broadcast bias instead of a bias per window (preferred over ``mask_windows``; same result).
        impl: ``"fused"`` (``F.scaled_dot_product_attention``, bias and mask as one additive mask in
            q's dtype), ``"flex"`` (FlexAttention, bias and mask added per logit in float32 inside the kernel;
            ``mask_windows`` and ``mask_groups`` unused; training needs a GPU) or ``"plain"``
            (matmul-softmax-matmul as the official code, softmax in float32 for half-precision inputs).

    Returns:
        ``(B*nW, nH, N, hd)``.
    """
    if impl == "fused":
        return _fused_attention(q, k, v, scale, rel_bias, mask, mask_windows, mask_groups)
    elif impl == "flex":
        return _flex_attention(q, k, v, scale, rel_bias, mask)
    elif impl == "plain":
        return _plain_attention(q, k, v, scale, rel_bias, mask)
    else:
        raise ModelConfigError(f"window_attention: unknown impl {impl!r}; expected one of {ATTENTION_IMPLS}")


class WindowAttention(nn.Module):
    """Self attention with relative position bias, optionally plus mutual attention between 2 frames.

    Mutual attention (window depth 2) splits each window's tokens into frame 1 and frame 2: frame-1
    slots get ``attention(q2, k1, v1)`` (frame 2 aligned to frame 1) and frame-2 slots ``attention(q1,
    k2, v2)``, from a separate projection of ``x + sine position encoding``, without relative bias.
    The output is ``proj(cat[mutual, self])``.

    Args:
        dim: channels C.
        window: full window ``(Wd, Wh, Ww)`` (buffers are sized from it).
        num_heads: heads nH.
        qkv_bias: bias in the projections.
        qk_scale: logit scale, None for ``(C/nH) ** -0.5``.
        mutual: add mutual attention (needs ``Wd == 2``).
    """

    def __init__(
        self,
        dim: int,
        window: tuple[int, int, int],
        num_heads: int,
        *,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        mutual: bool = False,
    ) -> None:
        super().__init__()
        if mutual and window[0] != 2:
            raise ModelConfigError(f"WindowAttention: mutual attention needs a window depth of 2, got {window}")
        self.dim = dim
        self.window = tuple(window)
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.mutual = mutual
        self.impl = "fused"
        # bandwidth savers (VRT.set_bandwidth_savers): the same numbers with fewer bytes moved
        self.split_proj = True  # mutual projection without concatenations
        self.fast_bias = True  # relative position bias as one gather in its final layout
        wd, wh, ww = window
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1), num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(self.window))
        if mutual:
            self.register_buffer("position_bias", sine_position_encoding(wh, ww, dim // 2))
        self.qkv_self = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(2 * dim if mutual else dim, dim)
        if mutual:
            self.qkv_mut = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_bias(self, n: int) -> torch.Tensor:
        """Relative position bias ``(nH, n, n)`` of the first ``n`` window tokens, in the table's dtype.

        With ``fast_bias`` the table is gathered straight into the ``(nH, n, n)`` layout (``index_select`` on
        the transposed table: no permuted copy; its backward is one ``index_add`` instead of the sorting
        ``index_put`` that advanced indexing runs); the values are the same.
        """
        if not self.fast_bias:
            return relative_position_bias(self.relative_position_bias_table, self.relative_position_index, n)
        index = self.relative_position_index
        flat = index.view(-1) if n == index.shape[0] else index[:n, :n].reshape(-1)
        return self.relative_position_bias_table.t().index_select(1, flat).view(-1, n, n)

    def split_heads(self, qkv: torch.Tensor) -> torch.Tensor:
        """``(B*nW, N, 3C)`` projections to q, k, v views ``(3, B*nW, nH, N, hd)`` (no copy)."""
        bw, n, _ = qkv.shape
        return qkv.view(bw, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # 3 B*nW nH N hd

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        mask_windows: torch.Tensor | None = None,
        mask_groups: tuple[MaskGroups, MaskGroups] | None = None,
    ) -> torch.Tensor:
        """Attend within windows.

        Args:
            x: ``(B*nW, N, C)`` window tokens in (d, h, w) order.
            mask: ``(nW, N, N)`` shifted-window mask or None.
            mask_windows: indices of the windows whose mask is not all zero, or None (see
                :func:`window_attention`).
            mask_groups: ``(groups of the full mask, groups of the mutual slice)`` (see
                :func:`~svrt_model.layers.window.mask_groups`), used by the fused path instead of
                ``mask_windows``; or None.

        Returns:
            ``(B*nW, N, C)``.
        """
        bw, n, c = x.shape
        groups, half_groups = mask_groups if mask_groups is not None else (None, None)
        q, k, v = self.split_heads(self.qkv_self(x))
        rel_bias = self.relative_bias(n)
        out = window_attention(
            q, k, v, scale=self.scale, rel_bias=rel_bias, mask=mask, mask_windows=mask_windows, mask_groups=groups,
            impl=self.impl,
        )
        out = out.transpose(1, 2).reshape(bw, n, c)  # a view of the fused kernels' (B*nW, N, nH, hd) output
        if not self.mutual:
            return self.proj(out)
        half = n // 2
        pos = self.position_bias.to(x.dtype).repeat(1, 2, 1)  # 1 N C: same encoding for both frames
        q, k, v = self.split_heads(self.qkv_mut(x + pos))
        q1, q2 = q[:, :, :half], q[:, :, half:]
        k1, k2 = k[:, :, :half], k[:, :, half:]
        v1, v2 = v[:, :, :half], v[:, :, half:]
        m = None if mask is None else mask[:, :half, :half]  # the official slice
        a1 = window_attention(q2, k1, v1, scale=self.scale, mask=m, mask_windows=mask_windows, mask_groups=half_groups,
                              impl=self.impl)
        a2 = window_attention(q1, k2, v2, scale=self.scale, mask=m, mask_windows=mask_windows, mask_groups=half_groups,
                              impl=self.impl)
        if self.split_proj:
            # proj(cat[mutual, self]) as two products with the weight's halves, read straight from the
            # attention outputs (views the attention keeps anyway): no concatenated copies are made or kept.
            w = self.proj.weight
            mut = torch.cat([F.linear(a.transpose(1, 2).reshape(bw, half, c), w[:, :c]) for a in (a1, a2)], dim=1)
            return F.linear(out, w[:, c:], self.proj.bias) + mut
        mut = torch.cat([a1, a2], dim=2).transpose(1, 2).reshape(bw, n, c)
        return self.proj(torch.cat([mut, out], dim=2))
