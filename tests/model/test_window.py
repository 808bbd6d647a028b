"""Windows, padding and shifted-window masks against straightforward per-window references."""

from __future__ import annotations

import itertools

import pytest
import torch

from svrt_model.layers.tmsa import TMSA
from svrt_model.layers.window import (
    effective_window,
    masked_windows,
    shifted_window_mask,
    window_partition,
    window_reverse,
)


def test_effective_window_shrinks_and_unshifts_covering_dimensions() -> None:
    assert effective_window((6, 64, 64), (6, 8, 8), (3, 4, 4)) == ((6, 8, 8), (0, 4, 4))
    assert effective_window((4, 8, 9), (6, 8, 8), (3, 4, 4)) == ((4, 8, 8), (0, 0, 4))
    assert effective_window((8, 16, 16), (6, 8, 8), (3, 4, 4)) == ((6, 8, 8), (3, 4, 4))


def test_partition_and_reverse_round_trip() -> None:
    x = torch.arange(2 * 4 * 16 * 24 * 3, dtype=torch.float32).view(2, 4, 16, 24, 3)
    win = (2, 8, 8)
    windows = window_partition(x, win)
    assert windows.shape == (2 * 2 * 2 * 3, 128, 3)
    # window 1 of clip 0 is (d 0-1, h 0-7, w 8-15); its token 9 is (d 0, h 1, w 1) -> x[0, 0, 1, 9]
    assert torch.equal(windows[1, 9], x[0, 0, 1, 9])
    assert torch.equal(window_reverse(windows, win, 2, (4, 16, 24)), x)


def _official_regions(size, window, shift) -> torch.Tensor:
    """Region id per padded position, assigned through the three slices per axis as the official code does."""
    regions = torch.zeros(size, dtype=torch.int64)
    cnt = 0
    axes = [(slice(-w), slice(-w, -s), slice(-s, None)) for w, s in zip(window, shift, strict=True)]
    for d, h, w in itertools.product(*axes):
        regions[d, h, w] = cnt
        cnt += 1
    return regions


@pytest.mark.parametrize(
    ("size", "window", "shift"),
    [((6, 16, 24), (2, 8, 8), (1, 4, 4)), ((6, 24, 16), (6, 8, 8), (0, 4, 4)), ((3, 16, 16), (1, 8, 8), (0, 4, 4))],
)
def test_shifted_window_mask_matches_official_region_rule(size, window, shift) -> None:
    regions = _official_regions(size, window, shift)
    per_window = window_partition(regions.view(1, *size, 1), window).squeeze(-1)  # nW N
    expected = torch.where(per_window[:, None, :] != per_window[:, :, None], -100.0, 0.0)
    mask = shifted_window_mask(size, window, shift, "cpu")
    assert torch.equal(mask, expected)
    nonzero = torch.nonzero(mask.ne(0).flatten(1).any(1)).flatten()
    assert torch.equal(masked_windows(size, window, shift, "cpu"), nonzero)


def naive_attention_part(block: TMSA, x: torch.Tensor) -> torch.Tensor:
    """The attention branch of a self-attention TMSA block, one window and head at a time, from coordinates."""
    b, d, h, w, c = x.shape
    win, shift = effective_window((d, h, w), block.window, block.shift)
    pads = [(-n) % k for n, k in zip((d, h, w), win, strict=True)]
    dp, hp, wp = d + pads[0], h + pads[1], w + pads[2]
    y = torch.nn.functional.pad(block.norm1(x), (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
    y = torch.roll(y, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
    regions = _official_regions((dp, hp, wp), win, shift)
    attn = block.attn
    heads, hd = attn.num_heads, c // attn.num_heads
    table = attn.relative_position_bias_table
    out = torch.zeros_like(y)
    for bi, d0, h0, w0 in itertools.product(range(b), range(0, dp, win[0]), range(0, hp, win[1]), range(0, wp, win[2])):
        coords = list(itertools.product(range(d0, d0 + win[0]), range(h0, h0 + win[1]), range(w0, w0 + win[2])))
        tokens = torch.stack([y[bi, i, j, k] for i, j, k in coords])  # N C
        qkv = attn.qkv_self(tokens).view(len(coords), 3, heads, hd)
        # table rows follow the FULL window's layout even when the window shrank (the official slice)
        fd, fh, fw = block.window
        rel = torch.tensor([[
            (ci[0] - cj[0] + fd - 1) * (2 * fh - 1) * (2 * fw - 1)
            + (ci[1] - cj[1] + fh - 1) * (2 * fw - 1) + (ci[2] - cj[2] + fw - 1)
            for cj in coords] for ci in coords])
        same = torch.tensor([[regions[ci] == regions[cj] for cj in coords] for ci in coords])
        mixed = any(s > 0 for s in shift)
        heads_out = []
        for hh in range(heads):
            q, k, v = qkv[:, 0, hh], qkv[:, 1, hh], qkv[:, 2, hh]
            logits = attn.scale * q @ k.T + table[rel, hh]
            if mixed:
                logits = logits + torch.where(same, 0.0, -100.0).to(logits.dtype)
            heads_out.append(torch.softmax(logits, dim=-1) @ v)
        res = attn.proj(torch.cat(heads_out, dim=1))
        for n, (i, j, k) in enumerate(coords):
            out[bi, i, j, k] = res[n]
    out = torch.roll(out, shifts=shift, dims=(1, 2, 3))
    return out[:, :d, :h, :w]


@pytest.mark.parametrize(
    ("size", "window", "shift"),
    [
        ((5, 12, 20), (3, 8, 8), (1, 4, 4)),  # every axis padded (T=5 with a window of 3, odd multiples of 4)
        ((4, 16, 16), (6, 8, 8), (3, 4, 4)),  # temporal window shrinks to 4 frames, its shift to 0
        ((5, 9, 11), (3, 8, 8), (0, 0, 0)),  # unshifted, padded H and W (stage 4 of a 72x88 frame)
    ],
)
@pytest.mark.parametrize("impl", ["fused", "plain"])
def test_block_attention_with_padding_matches_per_window_reference(size, window, shift, impl: str) -> None:
    torch.manual_seed(0)
    block = TMSA(8, 2, window, shift, mutual=False).double().eval()
    block.attn.impl = impl
    x = torch.randn(2, *size, 8, dtype=torch.float64)
    with torch.no_grad():
        got = block.attention_part(x)
        expected = naive_attention_part(block, x)
    torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-11)
