"""voxelize's host-side plan (bin frame ranges, linear weights) and its error messages."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svrt_data.voxelize import bin_frame_ranges, linear_bin_weights, voxelize
from svrt_errors import BackendUnavailableError, SpikeFormatError, SvrtValueError, WindowError

PACKED = np.zeros((100, 2, 3), np.uint8)


def test_bin_frame_ranges_worked_example() -> None:
    # [2.5, 9.5) in K=3 bins: edges 2.5, 4.8333, 7.1667, 9.5 -> frames {3, 4}, {5, 6, 7}, {8, 9}
    np.testing.assert_array_equal(bin_frame_ranges([[2.5, 9.5]], 3, 10), [[[3, 5], [5, 8], [8, 10]]])
    # a window holding no integer frame gives empty bins
    np.testing.assert_array_equal(bin_frame_ranges([[3.2, 3.7]], 2, 10), [[[4, 4], [4, 4]]])
    assert bin_frame_ranges(np.zeros((0, 2)), 5, 10).shape == (0, 5, 2)


@settings(max_examples=80, deadline=None)
@given(st.floats(0, 50), st.floats(0, 50), st.integers(1, 40))
def test_bin_frame_ranges_follow_the_definition(a: float, b: float, k: int) -> None:
    t0, t1 = min(a, b), max(a, b)
    if t0 == t1:
        return
    ranges = bin_frame_ranges([[t0, t1]], k, 50)[0]
    edges = [t0 + (j * (t1 - t0)) / k for j in range(k)] + [t1]
    for t in range(51):
        member = [j for j in range(k) if edges[j] <= t < edges[j + 1]]
        holders = [j for j in range(k) if ranges[j, 0] <= t < ranges[j, 1]]
        assert holders == member, (t, ranges, edges)


def test_linear_weights_worked_example() -> None:
    # [0, 4) in K=2: centres 1 and 3; frames 0, 1 -> bin 0; frame 2 -> half each; frame 3 -> bin 1
    ranges, offsets, weights = linear_bin_weights([[0, 4]], 2, 10)
    shares = np.zeros((4, 2))
    for k in range(2):
        first, stop = ranges[0, k]
        shares[first:stop, k] = weights[offsets[k] : offsets[k + 1]]
    np.testing.assert_array_equal(shares, [[1, 0], [1, 0], [0.5, 0.5], [0, 1]])


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 80), st.floats(0, 80), st.integers(1, 40))
def test_linear_weights_share_each_frame_once(a: float, b: float, k: int) -> None:
    t0, t1 = min(a, b), max(a, b)
    if t0 == t1:
        return
    ranges, offsets, weights = linear_bin_weights([[t0, t1]], k, 80)
    total = np.zeros(81)
    for j in range(k):
        first, stop = ranges[0, j]
        assert stop - first == offsets[j + 1] - offsets[j]
        total[first:stop] += weights[offsets[j] : offsets[j + 1]]
    inside = (np.arange(81) >= t0) & (np.arange(81) < t1)
    np.testing.assert_allclose(total, inside.astype(float), atol=1e-12)
    assert (weights >= 0).all() and (weights <= 1).all()


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "windows, match",
    [
        ([[0, 10], [5, 5]], r"window row 1: \[t0, t1\) = \[5.0, 5.0\) is empty or reversed .*0 <= t0 < t1 <= 100"),
        ([[0, 10], [8, 3]], r"window row 1: .* is empty or reversed"),
        ([[-0.5, 10]], r"window row 0: \[t0, t1\) = \[-0.5, 10.0\) lies outside the stream; .*has 100 frames"),
        ([[90, 100.5], [95, 101]], r"window row 0: .*lies outside the stream.*\(1 more rows are bad too\)"),
        ([[0, np.nan]], r"window row 0: .*is not finite"),
        ([[1, 2, 3]], r"windows must be an \(N, 2\) array .*got shape \(1, 3\)"),
    ],
)
def test_bad_windows_name_the_row(windows, match: str) -> None:
    with pytest.raises(WindowError, match=match):
        voxelize(PACKED, windows, bins=2)
    with pytest.raises(WindowError, match=match):
        bin_frame_ranges(windows, 2, 100)


def test_count_bins_that_could_overflow_are_refused() -> None:
    packed = np.full((600, 1, 1), 255, np.uint8)
    match = (r"window row 1: \[t0, t1\) = \[10.0, 600.0\) spans 590 frames in 2 bins, so a bin holds up to 295 "
             r"frames, more than the 255 .*use at least 3 bins, or mode='linear'")
    with pytest.raises(WindowError, match=match):
        voxelize(packed, [[0, 10], [10, 600]], bins=2)
    np.testing.assert_array_equal(voxelize(packed, [[0, 255]], bins=1), 255)  # 255 frames still fit
    assert voxelize(packed, [[10, 600]], bins=2, mode="linear").sum() == 590 * 8


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"bins": 0}, SvrtValueError, r"bins must be a positive integer \(K\), got 0"),
        ({"bins": 2.0}, SvrtValueError, r"bins must be a positive integer"),
        ({"bins": 2, "mode": "sum"}, SvrtValueError, r"unknown mode 'sum'; expected 'count' or 'linear'"),
        ({"bins": 2, "backend": "cuda"}, SvrtValueError, r"unknown backend 'cuda'; expected one of auto, numpy"),
        ({"bins": 2, "width": 16}, SvrtValueError, r"width=16 does not fit packed rows of 3 bytes; expected 17 to 24"),
        ({"bins": 2, "out": np.zeros((1, 2, 2, 24), np.float32)}, SvrtValueError,
         r"out= must be uint8 \(1, 2, 2, 24\), got float32"),
        ({"bins": 2, "out": np.zeros((1, 2, 2, 48), np.uint8)[..., ::2]}, SvrtValueError, r"C-contiguous"),
        ({"bins": 2, "out": [0]}, SvrtValueError, r"out= must be a numpy array here, got list"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        voxelize(PACKED, [[0, 10]], **kwargs)


@pytest.mark.parametrize(
    "spikes, match",
    [
        (np.zeros((10, 2, 3), np.int16),
         r"packed spikes must be uint8 \(S, H, W/8\) .*got int16 of shape \(10, 2, 3\)"),
        (np.zeros((10, 24), np.uint8), r"got uint8 of shape \(10, 24\)"),
        ([[0]], r"spikes must be a SpikeStream, or packed rows .*got list"),
    ],
)
def test_bad_spikes(spikes, match: str) -> None:
    with pytest.raises(SpikeFormatError, match=match):
        voxelize(spikes, [[0, 1]], bins=1)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_cupy_backend_without_cupy_says_how_to_install() -> None:
    with pytest.raises(BackendUnavailableError, match=r"backend 'cupy' needs CuPy .*pip install \"svrt\[cuda\]\""):
        voxelize(PACKED, [[0, 10]], bins=2, backend="cupy")


@pytest.mark.needs_cuda
def test_host_backend_refuses_gpu_arrays() -> None:
    import cupy as cp

    with pytest.raises(SvrtValueError, match=r"backend='numba' runs on host arrays, but the spikes are a cupy"):
        voxelize(cp.asarray(PACKED), [[0, 10]], bins=2, backend="numba")
    with pytest.raises(SvrtValueError, match=r"out= must be a cupy array here, got numpy"):
        voxelize(cp.asarray(PACKED), [[0, 10]], bins=2, out=np.zeros((1, 2, 2, 24), np.uint8))
