"""voxelize: every backend against a float64 expected_fn written from the documented semantics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from svrt_data.spike_io import pack_frames, read_dat
from svrt_data.voxelize import voxelize

BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("numba", id="numba"),
    pytest.param("cupy", id="cupy", marks=pytest.mark.needs_cuda),
    pytest.param("torch", id="torch-cuda", marks=pytest.mark.needs_cuda),
]
KS = [1, 2, 7, 32, 64]
RTOL = {"linear": 1e-6}


def expected_fn(packed: np.ndarray, windows: np.ndarray, k: int, mode: str, width: int | None = None) -> np.ndarray:
    """Float64 voxels straight from the definition, frame by frame (slow; small inputs only)."""
    bits = np.unpackbits(packed, axis=-1, bitorder="little").astype(np.float64)
    bits = bits[..., : width or bits.shape[-1]]
    out = np.zeros((len(windows), k) + bits.shape[1:], np.float64)
    for n, (t0, t1) in enumerate(np.asarray(windows, np.float64).reshape(-1, 2)):
        edges = [t0 + (j * (t1 - t0)) / k for j in range(k)] + [t1]
        centres = [t0 + (j + 0.5) * (t1 - t0) / k for j in range(k)]
        for t in range(len(bits)):
            if not t0 <= t < t1:
                continue
            if mode == "count":
                for j in range(k):
                    if edges[j] <= t < edges[j + 1]:
                        out[n, j] += bits[t]
            elif t <= centres[0]:
                out[n, 0] += bits[t]
            elif t >= centres[-1]:
                out[n, -1] += bits[t]
            else:
                j = max(i for i in range(k) if centres[i] <= t)
                share = (t - centres[j]) / (centres[j + 1] - centres[j])
                out[n, j] += (1 - share) * bits[t]
                out[n, j + 1] += share * bits[t]
    return out


def run(backend: str, packed: np.ndarray, windows, **kwargs) -> np.ndarray:
    """voxelize on ``backend``; device results are checked to stay on the device, then brought back."""
    if backend == "cupy":
        import cupy as cp

        result = voxelize(cp.asarray(packed), windows, **kwargs)
        assert isinstance(result, cp.ndarray)
        return result.get()
    if backend == "torch":
        import torch

        result = voxelize(torch.from_numpy(np.ascontiguousarray(packed)).cuda(), windows, **kwargs)
        assert isinstance(result, torch.Tensor) and result.is_cuda
        return result.cpu().numpy()
    return voxelize(packed, windows, backend=backend, **kwargs)


def check(result: np.ndarray, expected: np.ndarray, mode: str) -> None:
    assert result.dtype == (np.uint8 if mode == "count" else np.float32)
    assert result.shape == expected.shape
    if mode == "count":
        np.testing.assert_array_equal(result, expected.astype(np.uint8))
    else:
        np.testing.assert_allclose(result, expected, rtol=RTOL[mode], atol=1e-7)


def random_packed(rng: np.random.Generator, s: int, h: int, wb: int, rate: float = 0.5) -> np.ndarray:
    return pack_frames((rng.random((s, h, 8 * wb)) < rate).astype(np.uint8))


# windows that start/end mid-frame, touch both stream edges, hold no frame, or a single frame
S = 150
WINDOWS = np.array([[0, S], [2.5, 97.3], [10, 10.5], [3.2, 3.7], [S - 1.5, S], [0, 0.25], [41.0, 124.0], [7.9, 9.1]])


@pytest.mark.parametrize("mode", ["count", "linear"])
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_expected(backend: str, k: int, mode: str) -> None:
    rng = np.random.default_rng(k)
    packed = random_packed(rng, S, 5, 3)  # W/8 = 3: odd
    check(run(backend, packed, WINDOWS, bins=k, mode=mode), expected_fn(packed, WINDOWS, k, mode), mode)


@pytest.mark.parametrize("mode", ["count", "linear"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_width_drops_padding_bits(backend: str, mode: str) -> None:
    rng = np.random.default_rng(3)
    packed = rng.integers(0, 256, (40, 4, 5), dtype=np.uint8)  # padding bits set too: they must be ignored
    windows = np.array([[0.5, 39.5], [12, 13]])
    result = run(backend, packed, windows, bins=3, mode=mode, width=37)
    check(result, expected_fn(packed, windows, 3, mode, width=37), mode)


@pytest.mark.parametrize("mode", ["count", "linear"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_no_windows(backend: str, mode: str) -> None:
    packed = np.ones((10, 3, 2), np.uint8)
    for windows in (np.zeros((0, 2)), []):
        result = run(backend, packed, windows, bins=4, mode=mode)
        assert result.shape == (0, 4, 3, 16)
        assert result.dtype == (np.uint8 if mode == "count" else np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend: str) -> None:
    rng = np.random.default_rng(4)
    base = random_packed(rng, 80, 6, 4)
    windows = np.array([[1.5, 30.2], [20, 39.9]])
    for view in (base[::2], base[:, ::-1], base[:, :, 1:]):
        assert not view.flags.c_contiguous
        dense = np.ascontiguousarray(view)
        for mode in ("count", "linear"):
            check(run(backend, view, windows, bins=5, mode=mode), expected_fn(dense, windows, 5, mode), mode)


@pytest.mark.parametrize("backend", BACKENDS)
def test_count_identical_across_backends_at_camera_size(backend: str) -> None:
    rng = np.random.default_rng(5)
    packed = random_packed(rng, 200, 250, 50, rate=0.2)  # 250x400: frames of 12,500 bytes
    windows = np.stack([np.arange(2) * 83.333, (np.arange(2) + 1) * 83.333], axis=1)
    reference = voxelize(packed, windows, bins=32, backend="numpy")
    np.testing.assert_array_equal(run(backend, packed, windows, bins=32), reference)
    linear = run(backend, packed, windows, bins=32, mode="linear")
    np.testing.assert_allclose(linear, voxelize(packed, windows, bins=32, mode="linear", backend="numpy"),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(linear.sum(axis=(1, 2, 3)), reference.sum(axis=(1, 2, 3), dtype=np.int64),
                               rtol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_out_is_filled_and_returned(backend: str) -> None:
    rng = np.random.default_rng(6)
    packed = random_packed(rng, 30, 3, 2)
    windows = np.array([[0, 30], [5.5, 6.5]])
    out = np.full((2, 7, 3, 16), 99, np.uint8)
    assert voxelize(packed, windows, bins=7, backend=backend, out=out) is out
    check(out, expected_fn(packed, windows, 7, "count"), "count")
    out_w = np.full((2, 7, 3, 13), 99, np.uint8)
    voxelize(packed, windows, bins=7, backend=backend, out=out_w, width=13)
    check(out_w, expected_fn(packed, windows, 7, "count", width=13), "count")


# -- properties ----------------------------------------------------------------------------------
@st.composite
def window_cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    s = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    packed = np.random.default_rng(seed).integers(0, 256, (s, 2, 3), dtype=np.uint8)
    a = draw(st.floats(0, s, allow_nan=False, allow_subnormal=False))
    b = draw(st.floats(0, s, allow_nan=False, allow_subnormal=False))
    assume(a != b)
    k = draw(st.integers(1, 64))
    return packed, np.array([[min(a, b), max(a, b)]]), k


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window_cases())
def test_bins_sum_to_the_spikes_inside_the_window(case: tuple[np.ndarray, np.ndarray, int]) -> None:
    packed, windows, k = case
    t0, t1 = windows[0]
    inside = packed[int(np.ceil(t0)) : int(np.ceil(t1))]  # integer frames t with t0 <= t < t1
    spikes = int(np.bitwise_count(inside).sum())
    assume(int(np.ceil(t1)) - int(np.ceil(t0)) <= 255 * k)
    counts = voxelize(packed, windows, bins=k)
    assert counts.sum(dtype=np.int64) == spikes
    linear = voxelize(packed, windows, bins=k, mode="linear")
    assert linear.sum(dtype=np.float64) == pytest.approx(spikes, rel=1e-6, abs=1e-6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window_cases())
def test_split_at_bin_edges_is_consistent(case: tuple[np.ndarray, np.ndarray, int]) -> None:
    """A window voxelized with K bins equals its K bins voxelized as K windows of one bin each."""
    packed, windows, k = case
    t0, t1 = windows[0]
    edges = [t0 + (j * (t1 - t0)) / k for j in range(k)] + [t1]
    assume(all(a < b for a, b in zip(edges[:-1], edges[1:], strict=True)))
    assume(int(np.ceil(t1)) - int(np.ceil(t0)) <= 255)
    whole = voxelize(packed, windows, bins=k)
    pieces = voxelize(packed, np.array([edges[:-1], edges[1:]]).T, bins=1)
    np.testing.assert_array_equal(whole[0], pieces[:, 0])


def test_split_in_two_halves_matches_k2() -> None:
    rng = np.random.default_rng(7)
    packed = random_packed(rng, 100, 4, 3)
    for t0, t1 in [(0.0, 100.0), (2.5, 97.3), (1 / 3, 200 / 3), (10.0, 11.0), (17.2, 18.4)]:
        e1 = t0 + (1 * (t1 - t0)) / 2
        whole = voxelize(packed, [[t0, t1]], bins=2)
        halves = voxelize(packed, [[t0, e1], [e1, t1]], bins=1)
        np.testing.assert_array_equal(whole[0], halves[:, 0])


# -- spike streams and the shared fixtures -------------------------------------------------------
def test_stream_reads_only_needed_frames(tmp_path: Path) -> None:
    from svrt_data.spike_io import write_dat

    rng = np.random.default_rng(8)
    frames = (rng.random((300, 4, 16)) < 0.3).astype(np.uint8)
    stream = read_dat(write_dat(tmp_path / "s.dat", frames), height=4, width=16)
    reads: list[tuple[int, int]] = []
    real = stream.packed

    def spy(a: int, b: int):
        reads.append((a, b))
        return real(a, b)

    stream.packed = spy  # instance attribute: records what voxelize asks the stream for
    windows = np.array([[200.5, 210.2], [10, 20], [19.5, 30], [3.2, 3.7]])  # [3.2, 3.7) holds no frame
    result = voxelize(stream, windows, bins=3)
    assert sorted(reads) == [(10, 30), (201, 211)]  # overlapping windows share one read
    packed = pack_frames(frames)
    np.testing.assert_array_equal(result, voxelize(packed, windows, bins=3, backend="numpy"))
    check(result, expected_fn(packed, windows, 3, "count"), "count")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name, geometry",
    [("sreds_200_part1_301x250x400.dat", (250, 400)), ("spk_gopro_000226_88x360x640.dat", (360, 640))],
)
def test_fixture_streams(fixtures_dir: Path, name: str, geometry: tuple[int, int], backend: str) -> None:
    stream = read_dat(fixtures_dir / name, height=geometry[0], width=geometry[1])
    n = len(stream)
    windows = np.array([[0, n / 3], [n / 3, 2 * n / 3], [n / 2 + 0.25, n]])
    packed = stream.packed()
    expected = expected_fn(packed, windows, 7, "count")
    if backend in ("numpy", "numba"):
        check(voxelize(stream, windows, bins=7, backend=backend), expected, "count")
    check(run(backend, packed, windows, bins=7), expected, "count")
    linear = run(backend, packed, windows, bins=7, mode="linear")
    np.testing.assert_allclose(linear.sum(axis=(1, 2, 3)), expected.sum(axis=(1, 2, 3)), rtol=1e-6)
    # the time average over the whole stream is the stream's firing rate
    whole = run(backend, packed, [[0, n]], bins=2)
    assert whole.sum(dtype=np.int64) / (n * geometry[0] * geometry[1]) == pytest.approx(stream.firing_rate())


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_capture_with_width_not_multiple_of_8(fixtures_dir: Path, backend: str) -> None:
    spk = np.load(fixtures_dir / "uhsr_real_helicopter_200x250x250.npz")["spk"]  # upright (200, 250, 250)
    packed = pack_frames(spk)  # (200, 250, 32): 6 padding bits per row
    windows = np.array([[0, 200], [12.5, 99.9]])
    result = run(backend, packed, windows, bins=4, width=250)
    for n, (t0, t1) in enumerate(windows):
        for k in range(4):
            lo = int(np.ceil(t0 + (k * (t1 - t0)) / 4))
            hi = int(np.ceil(t1 if k == 3 else t0 + ((k + 1) * (t1 - t0)) / 4))
            np.testing.assert_array_equal(result[n, k], spk[lo:hi].sum(axis=0))
