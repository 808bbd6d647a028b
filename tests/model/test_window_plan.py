"""Window plans (``svrt_model.layers.window_plan``) and the segment attention: the gather equals the official
pad + roll + partition with the windows permuted, the scatter is its exact inverse, segment patterns are the
official per-window masks, kept rows cover every real token, and a block attends to the same numbers
(float64, 1e-12) with the plan path (grouped by mask, padding rows skipped) as with the official path."""

from __future__ import annotations

import pytest
import torch

from svrt_model.errors import ModelConfigError, ModelInputError
from svrt_model.layers.tmsa import TMSA
from svrt_model.layers.window import pad_to_windows, padded_size, shifted_window_mask, window_partition
from svrt_model.layers.window_plan import gather_windows, scatter_windows, window_plan

# (batch, (D, H, W), window, shift, mutual): T odd in 2-frame windows (padding frame, rolled or not), a window
# covering T, H/W padding (pads inside windows), a padding frame in the middle of a rolled window.
CASES = [
    (2, (5, 16, 24), (2, 8, 8), (1, 4, 4), True),
    (1, (5, 16, 16), (2, 8, 8), (0, 0, 0), True),
    (2, (5, 16, 16), (5, 8, 8), (0, 4, 4), False),
    (1, (3, 12, 20), (2, 8, 8), (1, 4, 4), True),
    (1, (7, 12, 20), (4, 8, 8), (2, 4, 4), False),
]


def _official_ids(batch: int, size, window, shift) -> torch.Tensor:
    """Source token id + 1 of every official window token ``(B*nW, N)`` (0 for padding)."""
    ids = torch.arange(1, batch * size[0] * size[1] * size[2] + 1, dtype=torch.float64)
    x = pad_to_windows(ids.view(batch, *size, 1), window)
    x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
    return window_partition(x, window).squeeze(-1).long()


@pytest.mark.parametrize(("batch", "size", "window", "shift", "mutual"), CASES)
@pytest.mark.parametrize(("split", "skip"), [(False, False), (True, False), (True, True)])
def test_plan_gathers_the_official_windows_and_scatters_back(batch, size, window, shift, mutual, split, skip) -> None:
    plan = window_plan(batch, size, window, shift, "cpu", split=split, skip_pads=skip, half=mutual)
    official = _official_ids(batch, size, window, shift)
    ids = torch.arange(1, plan.num_sources + 1, dtype=torch.float64).view(batch, *size, 1)
    got = gather_windows(ids, plan).squeeze(-1).long()
    assert got.shape == official.shape
    if split:  # the same windows, grouped: a permutation of the official ones
        assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, official.tolist()))
    else:
        assert torch.equal(got, official)
    n = plan.tokens
    mask = shifted_window_mask(padded_size(size, window), window, shift, "cpu") if any(shift) else None
    where = {tuple(row): i for i, row in enumerate(official.tolist())}
    nwin = official.shape[0] // batch
    kept = []
    for seg in plan.segments:
        lo, hi = seg.rows
        assert 0 <= lo < hi <= n and seg.targets.numel() == seg.num_windows * (hi - lo)
        for k in range(seg.start, seg.stop):
            tokens = got[k]
            real = tokens > 0
            assert real[lo:hi].sum() == real.sum()  # every real token of the window is kept
            if not skip or not bool(real[lo:hi].all()):
                assert (lo, hi) == (0, n)  # padding kept only when not skipped or the real slots are not one range
            if split and mask is not None:
                official_mask = mask[where[tuple(tokens.tolist())] % nwin]
                expected = seg.pattern if seg.pattern is not None else torch.zeros(n, n)
                assert torch.equal(official_mask, expected)
                if mutual:
                    half = seg.half_pattern if seg.half_pattern is not None else torch.zeros(n // 2, n // 2)
                    assert torch.equal(official_mask[: n // 2, : n // 2], half)
        kept.append(got[seg.start : seg.stop, lo:hi])
    back = scatter_windows([k.unsqueeze(-1).double() for k in kept], plan)
    assert torch.equal(back, ids)  # the exact inverse: rolled back, padding dropped, every token once


def test_gather_and_scatter_gradients() -> None:
    plan = window_plan(2, (3, 6, 10), (2, 4, 4), (1, 2, 2), "cpu", split=True, skip_pads=True, half=True)
    x = torch.randn(2, 3, 6, 10, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gather_windows(t, plan), (x,))
    parts = [torch.randn(s.num_windows, s.rows[1] - s.rows[0], 2, dtype=torch.float64, requires_grad=True)
             for s in plan.segments]
    assert torch.autograd.gradcheck(lambda *p: scatter_windows(list(p), plan), tuple(parts))


def test_plan_errors_name_the_fix() -> None:
    with pytest.raises(ModelConfigError, match="skip_pads=True needs split=True"):
        window_plan(1, (5, 16, 16), (2, 8, 8), (0, 0, 0), "cpu", split=False, skip_pads=True)
    plan = window_plan(1, (5, 16, 16), (2, 8, 8), (0, 0, 0), "cpu", skip_pads=True, half=True)
    with pytest.raises(ModelInputError, match=r"does not match the plan's \(B, D, H, W\) = \(1, 5, 16, 16\)"):
        gather_windows(torch.zeros(1, 5, 16, 24, 4), plan)
    with pytest.raises(ModelInputError, match="got 1 parts for the plan's 2 segments"):
        scatter_windows([torch.zeros(4, 64, 4)], plan)
    with pytest.raises(ModelInputError, match=r"part 1 has shape \(8, 64, 4\), the segment needs \(8, 128, 4\)"):
        scatter_windows([torch.zeros(4, 64, 4), torch.zeros(8, 64, 4)], plan)


def _block_run(block: TMSA, x: torch.Tensor, gather: bool, split: bool, skip: bool, fast_bias: bool):
    block.window_gather, block.mask_split, block.pad_skip = gather, split, skip
    block.attn.fast_bias = fast_bias
    block.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    torch.manual_seed(5)  # the same stochastic-depth draw
    out = block(x)
    (out * out.detach().sin()).sum().backward()
    return out.detach(), x.grad, [p.grad for p in block.parameters()]


@pytest.mark.parametrize("impl", ["fused", "plain"])
@pytest.mark.parametrize(("batch", "size", "window", "shift", "mutual"), [  # CASES with 4x4 windows: fast
    (2, (5, 8, 12), (2, 4, 4), (1, 2, 2), True),
    (1, (5, 8, 8), (2, 4, 4), (0, 0, 0), True),
    (2, (5, 8, 8), (5, 4, 4), (0, 2, 2), False),
    (1, (7, 6, 10), (4, 4, 4), (2, 2, 2), False),
])
def test_block_numbers_do_not_change_on_the_plan_path(impl, batch, size, window, shift, mutual) -> None:
    torch.manual_seed(0)
    block = TMSA(16, 2, window, shift, mutual=mutual, drop_path=0.3).double().train()
    block.attn.impl = impl
    with torch.no_grad():  # a bias of the size a trained table has (the init's 0.02 hides index errors)
        block.attn.relative_position_bias_table.normal_()
    x = torch.randn(batch, *size, 16, dtype=torch.float64)
    ref = _block_run(block, x, False, False, False, False)
    for flags in [(True, False, False, True), (True, True, False, True), (True, True, True, True),
                  (True, True, True, False)]:
        out, gx, grads = _block_run(block, x, *flags)
        torch.testing.assert_close(out, ref[0], rtol=1e-12, atol=1e-12, msg=f"output, flags {flags}")
        torch.testing.assert_close(gx, ref[1], rtol=1e-12, atol=1e-12, msg=f"input gradient, flags {flags}")
        for (name, _), a, b in zip(block.named_parameters(), grads, ref[2], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=f"{name}, flags {flags}")


def test_padding_rows_are_not_computed() -> None:
    """T=5 in 2-frame windows: the windows with the padding frame keep one frame of rows."""
    plan = window_plan(1, (5, 16, 16), (2, 8, 8), (1, 4, 4), "cpu", split=True, skip_pads=True, half=True)
    rows = sum(s.num_windows * (s.rows[1] - s.rows[0]) for s in plan.segments)
    assert plan.num_windows == 12 and rows == 5 * 16 * 16  # one output row per real token: 2/12 of 12*128 saved
    full = window_plan(1, (5, 16, 16), (2, 8, 8), (1, 4, 4), "cpu", split=True, skip_pads=False, half=True)
    assert sum(s.num_windows * (s.rows[1] - s.rows[0]) for s in full.segments) == 12 * 128
