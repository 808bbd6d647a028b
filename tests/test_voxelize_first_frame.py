"""voxelize(..., first_frame=f): a cut of a stream with windows in the stream's units equals the whole."""

from __future__ import annotations

import numpy as np
import pytest

from svrt_data import SvrtValueError, WindowError
from svrt_data.spike_io import pack_frames
from svrt_data.voxelize import voxelize


@pytest.mark.parametrize("backend", ["numpy", "numba", pytest.param("cupy", marks=pytest.mark.needs_cuda)])
@pytest.mark.parametrize("mode", ["count", "linear"])
def test_cut_equals_whole(backend, mode):
    rng = np.random.default_rng(7)
    packed = pack_frames((rng.random((400, 6, 24)) < 0.3).astype(np.uint8))
    # Ends that are not dyadic: shifting them by an integer would round them differently.
    windows = np.array([[100.1, 183.43333333333334], [150.7, 231.9], [183.43333333333334, 266.76666666666665]])
    whole = voxelize(packed, windows, bins=7, mode=mode, backend=backend)
    lo, hi = 100, 267
    cut = voxelize(packed[lo:hi], windows, bins=7, mode=mode, backend=backend, first_frame=lo)
    if backend == "cupy":
        whole, cut = whole.get(), cut.get()
    np.testing.assert_array_equal(cut, whole)


def test_first_frame_errors():
    packed = np.zeros((10, 2, 1), np.uint8)
    with pytest.raises(WindowError, match=r"windows need 5 <= t0 < t1 <= 15 \(the stream has frames \[5, 15\)\)"):
        voxelize(packed, [[4.0, 8.0]], bins=2, backend="numpy", first_frame=5)
    with pytest.raises(WindowError, match="lies outside the stream"):
        voxelize(packed, [[6.0, 15.5]], bins=2, backend="numpy", first_frame=5)
    with pytest.raises(SvrtValueError, match="first_frame must be a non-negative integer"):
        voxelize(packed, [[6.0, 8.0]], bins=2, backend="numpy", first_frame=-1)
