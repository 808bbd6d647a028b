"""Window attention: fused (SDPA), flex (FlexAttention; forward only on the CPU) and plain vs a per-window loop;
the module's mutual attention; flex gradients on the GPU."""

from __future__ import annotations

import pytest
import torch

from svrt_model.errors import ModelConfigError
from svrt_model.layers.attention import WindowAttention, raise_recompile_limits, window_attention
from svrt_model.layers.position import relative_position_bias, relative_position_index


def loop_reference(q, k, v, scale, rel_bias, mask):
    """One window and head at a time, straight from the formula."""
    bw, heads, n, _ = q.shape
    out = torch.empty_like(q)
    nw = 1 if mask is None else mask.shape[0]
    for i in range(bw):
        for h in range(heads):
            logits = scale * q[i, h] @ k[i, h].T
            if rel_bias is not None:
                logits = logits + rel_bias[h]
            if mask is not None:
                logits = logits + mask[i % nw]
            out[i, h] = torch.softmax(logits, dim=-1) @ v[i, h]
    return out


def _inputs(batch, nw, heads, n, hd, with_bias, with_mask, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch * nw, heads, n, hd, generator=g, dtype=dtype) for _ in range(3))
    rel = torch.randn(heads, n, n, generator=g, dtype=dtype) if with_bias else None
    mask = None
    if with_mask:  # -100 between random regions, like a shifted-window mask
        labels = torch.randint(0, 3, (nw, n), generator=g)
        mask = (labels[:, :, None] != labels[:, None, :]).to(dtype) * -100.0
    return q, k, v, rel, mask


CASES = [
    (1, 3, 2, 16, 8, False, False),
    (1, 3, 2, 16, 8, True, False),
    (1, 4, 2, 16, 8, True, True),
    (2, 4, 3, 32, 4, True, True),  # several clips: the fused path folds windows into heads
    (2, 4, 2, 16, 8, False, True),  # mutual attention: mask only
    (1, 2, 3, 16, 5, True, True),  # head dim 5: the fused path zero-pads it to 8
]


@pytest.mark.parametrize("case", CASES)
def test_paths_match_loop_reference_float64(case) -> None:
    batch, nw, heads, n, hd, with_bias, with_mask = case
    q, k, v, rel, mask = _inputs(batch, nw, heads, n, hd, with_bias, with_mask)
    expected = loop_reference(q, k, v, 0.3, rel, mask)
    for impl in ("plain", "fused", "flex"):
        got = window_attention(q, k, v, scale=0.3, rel_bias=rel, mask=mask, impl=impl)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12, msg=impl)


@pytest.mark.parametrize("case", CASES[1:4])
def test_fused_and_plain_gradients_agree(case) -> None:
    batch, nw, heads, n, hd, with_bias, with_mask = case
    q, k, v, rel, mask = _inputs(batch, nw, heads, n, hd, with_bias, with_mask)
    leaves = [t.requires_grad_() for t in (q, k, v, rel) if t is not None]
    grads = {}
    for impl in ("plain", "fused"):
        out = window_attention(q, k, v, scale=0.25, rel_bias=rel, mask=mask, impl=impl)
        grads[impl] = torch.autograd.grad((out * out.detach().sin()).sum(), leaves)
    for a, b in zip(grads["fused"], grads["plain"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_low_precision_paths_agree() -> None:
    q, k, v, rel, mask = _inputs(1, 4, 2, 64, 16, True, True, dtype=torch.float32, seed=3)
    ref = loop_reference(*(t.double() for t in (q, k, v)), 0.25, rel.double(), mask.double())
    for impl in ("plain", "fused"):
        got = window_attention(*(t.bfloat16() for t in (q, k, v)), scale=0.25, rel_bias=rel, mask=mask, impl=impl)
        assert got.dtype == torch.bfloat16
        assert ((got.double() - ref).norm() / ref.norm()).item() < 2e-2


def test_recompile_limits_are_raised_never_lowered() -> None:
    # Past the per-function limit dynamo runs compiled flex eagerly (its unfused path, which breaks inside
    # activation checkpointing): two VRTs in one process passed 64 on the H200.
    import torch._dynamo.config as dynamo_config

    with dynamo_config.patch(recompile_limit=8, accumulated_recompile_limit=2048):
        raise_recompile_limits()
        assert dynamo_config.recompile_limit == 256
        assert dynamo_config.accumulated_recompile_limit == 2048  # a user's higher limit stays


def test_unknown_impl_is_refused() -> None:
    q, k, v, *_ = _inputs(1, 1, 1, 4, 4, False, False)
    with pytest.raises(ModelConfigError, match="unknown impl 'flash'"):
        window_attention(q, k, v, scale=1.0, impl="flash")


@pytest.mark.parametrize("mutual", [False, True])
def test_module_paths_agree_and_mutual_attention_is_official(mutual: bool) -> None:
    torch.manual_seed(0)
    window = (2, 4, 4) if mutual else (3, 4, 4)
    attn = WindowAttention(16, window, 2, mutual=mutual).double()
    n = window[0] * window[1] * window[2]
    x = torch.randn(6, n, 16, dtype=torch.float64)
    mask = torch.zeros(3, n, n, dtype=torch.float64)
    mask[1, : n // 2, n // 2 :] = -100.0
    outs = {}
    with torch.no_grad():
        for impl in ("plain", "fused", "flex"):
            attn.impl = impl
            outs[impl] = attn(x, mask)
    torch.testing.assert_close(outs["fused"], outs["plain"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outs["flex"], outs["plain"], rtol=1e-12, atol=1e-12)
    if mutual:
        # Rebuild the output from the formula: frame-1 slots get attention(q2, k1, v1), then proj(cat[mut, self]).
        hd, half = 8, n // 2
        qkv = attn.qkv_mut(x + attn.position_bias.repeat(1, 2, 1)).view(6, n, 3, 2, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        m = mask[:, :half, :half]
        a1 = loop_reference(q[:, :, half:], k[:, :, :half], v[:, :, :half], attn.scale, None, m)
        a2 = loop_reference(q[:, :, :half], k[:, :, half:], v[:, :, half:], attn.scale, None, m)
        mut = torch.cat([a1, a2], dim=2).transpose(1, 2).reshape(6, n, 16)
        qkv = attn.qkv_self(x).view(6, n, 3, 2, hd).permute(2, 0, 3, 1, 4)
        rel = relative_position_bias(attn.relative_position_bias_table, relative_position_index(window), n)
        own = loop_reference(qkv[0], qkv[1], qkv[2], attn.scale, rel, mask).transpose(1, 2).reshape(6, n, 16)
        expected = attn.proj(torch.cat([mut, own], dim=2))
        torch.testing.assert_close(outs["plain"], expected, rtol=1e-12, atol=1e-12)


def test_mutual_attention_needs_two_frames() -> None:
    with pytest.raises(ModelConfigError, match="window depth of 2"):
        WindowAttention(16, (3, 4, 4), 2, mutual=True)


@pytest.mark.parametrize("batch", [1, 3])
def test_fused_path_masks_only_the_listed_windows(batch: int) -> None:
    """With ``mask_windows`` the fused path redoes only those windows; the result must not change."""
    from svrt_model.layers.window import masked_windows, shifted_window_mask

    size, win, shift = (4, 16, 24), (2, 8, 8), (1, 4, 4)
    mask = shifted_window_mask(size, win, shift, "cpu").double()
    listed = masked_windows(size, win, shift, "cpu")
    nw, n = mask.shape[0], mask.shape[1]
    unlisted = torch.ones(nw, dtype=torch.bool)
    unlisted[listed] = False
    assert 0 < listed.numel() < nw and not mask[unlisted].any()  # the others really have zero masks
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(batch * nw, 2, n, 8, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    rel = torch.randn(2, n, n, generator=g, dtype=torch.float64, requires_grad=True)
    expected = loop_reference(q, k, v, 0.35, rel, mask)
    got = window_attention(q, k, v, scale=0.35, rel_bias=rel, mask=mask, mask_windows=listed)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    g1 = torch.autograd.grad(got.square().sum(), (q, k, v, rel))
    g2 = torch.autograd.grad(expected.square().sum(), (q, k, v, rel))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_geglu_matches_autograd_and_gradcheck() -> None:
    from svrt_model.layers.mlp import geglu

    g = torch.Generator().manual_seed(7)
    a, b = (torch.randn(3, 5, 6, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(geglu, (a, b))
    out = geglu(a, b)
    ref = torch.nn.functional.gelu(a) * b
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    w = torch.randn(out.shape, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad((out * w).sum(), (a, b))
    torch.testing.assert_close(ours, torch.autograd.grad((ref * w).sum(), (a, b)))


@pytest.mark.needs_cuda
@pytest.mark.parametrize("case", CASES[1:4] + CASES[5:])
def test_flex_gradients_match_plain_on_the_gpu(case) -> None:
    """FlexAttention's backward (GPU only), relative-bias gradient included, against the plain path."""
    batch, nw, heads, n, hd, with_bias, with_mask = case
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        q, k, v, rel, mask = (None if t is None else t.float().cuda() for t in _inputs(batch, nw, heads, n, hd,
                                                                                       with_bias, with_mask))
        leaves = [t.requires_grad_() for t in (q, k, v, rel) if t is not None]
        grads = {}
        for impl in ("plain", "flex"):
            out = window_attention(q, k, v, scale=0.25, rel_bias=rel, mask=mask, impl=impl)
            grads[impl] = (out.detach(), *torch.autograd.grad((out * out.detach().sin()).sum(), leaves))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    for a, b in zip(grads["flex"], grads["plain"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
