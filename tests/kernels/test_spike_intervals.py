"""spike_intervals and interval_rates (torch, vectorized) against svrt_data.reconstruct.interval_rate (NumPy, per
centre)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels.spike_intervals import interval_rates, spike_intervals
from svrt_data.reconstruct import interval_rate
from svrt_errors import SvrtValueError

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.needs_cuda)]


def make_case(seed: int, *, B: int = 2, S: int = 60, H: int = 3, W: int = 13, T: int = 3, K: int = 4) -> dict:
    """Random bits at a random rate per pixel (padding bits of the odd width set too, so they must be
    dropped), and per clip adjacent bins of 0-6 frames from a random start: the frames before the first
    bin and after the last one hold spikes the op must not read."""
    rng = np.random.default_rng(seed)
    wb = -(-W // 8)
    rate = rng.uniform(0.02, 0.7, size=(1, 1, H, 8 * wb))
    bits = np.packbits(rng.random((B, S, H, 8 * wb)) < rate, axis=-1, bitorder="little")
    lengths = rng.integers(0, 7, size=(B, T * K))
    lengths[0, 1] = 0  # an empty bin
    starts = rng.integers(0, S - lengths.sum(1).max(), size=(B, 1))
    stops = starts + np.cumsum(lengths, axis=1)
    firsts = np.concatenate([starts, stops[:, :-1]], axis=1)
    ranges = np.stack([firsts, stops], axis=-1).reshape(B, T, K, 2).astype(np.int64)
    return {"bits": bits, "ranges": ranges, "width": W}


def reference(case: dict, m: int) -> np.ndarray:
    bits, ranges, w = case["bits"], case["ranges"], case["width"]
    frames = np.unpackbits(bits, axis=-1, bitorder="little")[..., :w]
    B, T, K, _ = ranges.shape
    out = np.zeros((B, T, K) + frames.shape[2:], np.float64)
    for b in range(B):
        lo, hi = ranges[b, ..., 0].min(), ranges[b, ..., 1].max()
        for t in range(T):
            for k in range(K):
                r0, r1 = ranges[b, t, k]
                if r1 > r0:
                    centre = (r0 + r1 - 1) // 2
                    out[b, t, k] = (r1 - r0) * interval_rate(frames[b, lo:hi], centre - lo, m)
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("seed", "m"), [(0, 1), (1, 2), (2, 3)])
def test_matches_the_numpy_reference(device: str, seed: int, m: int) -> None:
    case = make_case(seed)
    got = spike_intervals(torch.from_numpy(case["bits"]).to(device), torch.from_numpy(case["ranges"]).to(device),
                          spikes_each_side=m, width=case["width"])
    assert got.dtype == torch.float32 and got.shape == (2, 3, 4, 3, 13)
    np.testing.assert_allclose(got.cpu().double().numpy(), reference(case, m), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
def test_several_m_in_one_pass_match_the_reference(device: str) -> None:
    case = make_case(3)
    ms = (4, 1, 2)
    got = interval_rates(torch.from_numpy(case["bits"]).to(device), torch.from_numpy(case["ranges"]).to(device), ms,
                         width=case["width"], dtype=torch.float64)
    assert got.dtype == torch.float64 and got.shape == (2, 3, 4, 3, 3, 13)
    length = (case["ranges"][..., 1] - case["ranges"][..., 0]).astype(np.float64)[..., None, None]
    for i, m in enumerate(ms):  # the reference is a count over the bin: divided by its length, a rate
        want = np.divide(reference(case, m), length, out=np.zeros_like(reference(case, m)), where=length > 0)
        np.testing.assert_allclose(got[:, :, :, i].cpu().numpy(), want, rtol=1e-6, atol=1e-7)  # interval_rate: float32
    assert not got[0, 0, 1].any()  # the empty bin
    with pytest.raises(SvrtValueError, match=r"spikes_each_side must be an int >= 1 \(or a non-empty tuple"):
        interval_rates(torch.from_numpy(case["bits"]), torch.from_numpy(case["ranges"]), (2, 0))


def test_a_regular_pixel_gives_its_rate_times_the_bin_length() -> None:
    frames = np.zeros((40, 1, 8), np.uint8)
    frames[1::4, 0, 0] = 1  # rate 1/4
    bits = torch.from_numpy(np.packbits(frames, axis=-1, bitorder="little"))[None]  # 1 S 1 1
    ranges = torch.tensor([[[[8, 12], [12, 20]], [[20, 23], [23, 32]]]])  # B=1 T=2 K=2
    got = spike_intervals(bits, ranges, spikes_each_side=2, width=1)
    np.testing.assert_allclose(got[0, :, :, 0, 0].numpy(), [[1.0, 2.0], [0.75, 2.25]], rtol=1e-6)


def test_bad_arguments_raise() -> None:
    bits, ranges = torch.zeros(1, 4, 2, 1, dtype=torch.uint8), torch.zeros(1, 1, 2, 2, dtype=torch.int64)
    for call, match in (
        (lambda: spike_intervals(bits.float(), ranges), "bits must be uint8"),
        (lambda: spike_intervals(bits, ranges.int()), "ranges must be int64"),
        (lambda: spike_intervals(bits, ranges[..., :1]), "ranges must be int64"),
        (lambda: spike_intervals(bits, ranges, spikes_each_side=0), "spikes_each_side"),
        (lambda: spike_intervals(bits, ranges + 5), r"ranges\[0, 0, 0\] = \[5, 5\) is outside the 4 spike frames"),
        (lambda: spike_intervals(bits, ranges, width=9), "width=9 does not fit packed rows of 1 bytes"),
    ):
        with pytest.raises(SvrtValueError, match=match):
            call()
