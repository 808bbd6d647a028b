"""interval_rate against a per-pixel loop over spike times."""

from __future__ import annotations

import numpy as np
import pytest

from svrt_data.reconstruct import interval_rate
from svrt_errors import SvrtValueError


def _loop_reference(frames: np.ndarray, centre: int, k: int) -> np.ndarray:
    s, h, w = frames.shape
    out = np.zeros((h, w), np.float64)
    for y in range(h):
        for x in range(w):
            times = np.flatnonzero(frames[:, y, x])
            before, after = times[times <= centre][::-1], times[times > centre]
            if len(before) >= k and len(after) >= k:
                out[y, x] = (2 * k - 1) / (after[k - 1] - before[k - 1])
            else:
                out[y, x] = len(times) / s
    return out


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("centre", [0, 17, 39])
def test_interval_rate_matches_loop(k: int, centre: int) -> None:
    rng = np.random.default_rng(k * 100 + centre)
    rate = rng.uniform(0.0, 0.6, size=(7, 9))  # per-pixel firing probability, dark pixels included
    frames = (rng.random((40, 7, 9)) < rate).astype(np.uint8)
    frames[:, 0, 0] = 0  # never fires
    frames[:, 0, 1] = 0
    frames[centre, 0, 1] = 1  # one spike, exactly at the centre
    got = interval_rate(frames, centre, k)
    assert got.dtype == np.float32 and got.shape == (7, 9)
    np.testing.assert_allclose(got, _loop_reference(frames, centre, k), rtol=1e-6)


def test_interval_rate_recovers_a_regular_rate() -> None:
    frames = np.zeros((60, 1, 2), bool)
    frames[2::4, 0, 0] = True  # every 4th frame
    frames[::3, 0, 1] = True  # every 3rd frame
    np.testing.assert_allclose(interval_rate(frames, 30, 2)[0], [0.25, 1 / 3], rtol=1e-6)


@pytest.mark.parametrize(("shape", "centre", "k"), [((5, 2), 0, 1), ((4, 2, 2), 4, 1), ((4, 2, 2), 1, 0)])
def test_interval_rate_refuses_bad_arguments(shape, centre: int, k: int) -> None:
    with pytest.raises(SvrtValueError, match="interval_rate"):
        interval_rate(np.zeros(shape, np.uint8), centre, k)
