"""The synthetic dataset generator: simulator, warp, camera geometry, flow and the built dataset."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from svrt_data import read_dat
from svrt_data.align import read_align_log, validate_align_log
from svrt_data.synth import (
    SUBFRAMES,
    CameraTrajectory,
    IntegrateAndFire,
    View,
    bilinear_sample,
    integrate_and_fire,
    luminance,
    pixel_centres,
    random_trajectory,
    render_exposure,
    render_frames,
    static_trajectory,
    synthesize,
    true_flow,
    view_for,
)
from svrt_data.synth import builder as builder_mod
from svrt_data.synth.photos import dead_leaves
from svrt_errors import BackendUnavailableError, SvrtValueError

TINY = dict(sequences=2, test_sequences=1, frames=3, size=(16, 32), source_frames=2, progress=False)


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


# -- simulator ------------------------------------------------------------------------------------


def _integrate_reference(charge: np.ndarray, intensity: np.ndarray, threshold: float) -> np.ndarray:
    """One pixel and one frame at a time, exactly as the model is written down."""
    spikes = np.zeros(intensity.shape, np.uint8)
    for i in range(charge.shape[0]):
        for j in range(charge.shape[1]):
            acc = float(charge[i, j])
            for t in range(intensity.shape[0]):
                acc += float(intensity[t, i, j])
                if acc >= threshold:
                    spikes[t, i, j] = 1
                    acc -= threshold
            charge[i, j] = acc
    return spikes


@pytest.mark.parametrize("threshold", [1.0, 2.0, 3.7])
def test_integrate_and_fire_matches_the_reference(threshold: float) -> None:
    rng = np.random.default_rng(1)
    intensity = rng.random((40, 5, 7))
    intensity[:, 0, 0] = 0.0  # never fires
    intensity[:, 0, 1] = 1.0  # fires every frame when the threshold is 1
    charge = rng.uniform(0, threshold, (5, 7))
    charge_ref = charge.copy()
    spikes = integrate_and_fire(charge, intensity, threshold)
    expected = _integrate_reference(charge_ref, intensity, threshold)
    np.testing.assert_array_equal(spikes, expected)
    np.testing.assert_array_equal(charge, charge_ref)
    assert spikes[:, 0, 0].sum() == 0
    if threshold == 1.0:
        assert spikes[:, 0, 1].all()


@pytest.mark.parametrize(("level", "threshold"), [(0.05, 2.0), (0.3, 1.0), (0.5, 2.0), (0.93, 2.0), (1.0, 4.5)])
def test_firing_rate_is_intensity_over_threshold(level: float, threshold: float) -> None:
    n_pixels, n_frames = 64 * 64, 200
    sensor = IntegrateAndFire(64, 64, threshold=threshold, rng=np.random.default_rng(7))
    spikes = sensor.run(np.full((n_frames, 64, 64), level, np.float32))
    rate = spikes.mean(dtype=np.float64)
    # With the charge starting uniform in [0, theta), a pixel's count over T frames is
    # floor(U + T I / theta): its mean is exactly T I / theta and it takes one of two neighbouring values,
    # so its variance is at most 1/4. The mean rate over n pixels then has a standard deviation of at
    # most 0.5 / (T sqrt(n)); six of them make a false failure a one-in-10^9 event.
    tol = 6 * 0.5 / (n_frames * math.sqrt(n_pixels))
    assert abs(rate - level / threshold) <= tol
    assert spikes.max() <= 1


def test_intensity_noise_keeps_the_mean_rate() -> None:
    n_side, n_frames, level, threshold, sigma = 64, 200, 0.5, 2.0, 0.1
    sensor = IntegrateAndFire(n_side, n_side, threshold=threshold, noise_std=sigma, rng=np.random.default_rng(3))
    spikes = sensor.run(np.full((n_frames, n_side, n_side), level, np.float32))
    counts = spikes.sum(axis=0, dtype=np.int64)
    # Clipping at [0, 1] is 5 sigma away, so the noise has mean zero: the expected count is still T I / theta.
    # Per pixel the count varies by the rounding (variance <= 1/4) plus the summed noise (T sigma^2 / theta^2).
    sd_mean = math.sqrt((0.25 + n_frames * sigma**2 / threshold**2) / n_side**2)
    assert abs(counts.mean() - n_frames * level / threshold) <= 6 * sd_mean
    # ... and the noise is really there: counts now spread wider than rounding alone allows (2 values).
    assert counts.max() - counts.min() >= 3


@pytest.mark.parametrize("level", [0.0, 0.6])
def test_dark_spikes_add_at_their_rate(level: float) -> None:
    n_side, n_frames, threshold, dark = 64, 100, 2.0, 0.05
    sensor = IntegrateAndFire(n_side, n_side, threshold=threshold, dark_rate=dark, rng=np.random.default_rng(5))
    rate = sensor.run(np.full((n_frames, n_side, n_side), level, np.float32)).mean(dtype=np.float64)
    # A dark spike is independent of the charge, so a frame spikes with probability r + d (1 - r),
    # r = I / theta. Each frame and pixel is at most a Bernoulli(1/2) in spread: sd <= 0.5 / sqrt(n T).
    r = level / threshold
    assert abs(rate - (r + dark * (1 - r))) <= 6 * 0.5 / math.sqrt(n_side**2 * n_frames)


def test_charge_carries_over_between_calls() -> None:
    intensity = np.random.default_rng(0).random((90, 8, 16)).astype(np.float32)
    whole = IntegrateAndFire(8, 16, rng=np.random.default_rng(11)).run(intensity)
    sensor = IntegrateAndFire(8, 16, rng=np.random.default_rng(11))
    parts = np.concatenate([sensor.run(intensity[:33]), sensor.run(intensity[33:34]), sensor.run(intensity[34:])])
    np.testing.assert_array_equal(parts, whole)


def test_simulator_rejects_bad_input() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(SvrtValueError, match=r"threshold must be >= 1 \(the brightest intensity\), got 0.5"):
        IntegrateAndFire(4, 8, threshold=0.5, rng=rng)
    with pytest.raises(SvrtValueError, match=r"dark_rate is a probability .* got 1.5"):
        IntegrateAndFire(4, 8, dark_rate=1.5, rng=rng)
    with pytest.raises(SvrtValueError, match="noise_std must be a finite number >= 0"):
        IntegrateAndFire(4, 8, noise_std=-1, rng=rng)
    sensor = IntegrateAndFire(4, 8, rng=rng)
    with pytest.raises(SvrtValueError, match=r"must lie in \[0, 1\], got \[255.0, 255.0\]; scale gray levels by 1/255"):
        sensor.run(np.full((2, 4, 8), 255.0))
    with pytest.raises(SvrtValueError, match=r"intensity must be \(S, 4, 8\), got \(2, 8, 4\)"):
        sensor.run(np.zeros((2, 8, 4)))


# -- warp and camera ------------------------------------------------------------------------------


def _sample_reference(image: np.ndarray, x: np.ndarray, y: np.ndarray, border: str) -> np.ndarray:
    """Bilinear sampling one point at a time in float64, borders by explicit index rules."""
    img = image.astype(np.float64)
    if img.ndim == 2:
        img = img[..., None]
    h, w, _ = img.shape

    def index(i: int, n: int) -> int:
        if border == "clamp":
            return min(max(i, 0), n - 1)
        while not 0 <= i < n:  # mirror about the edges, edge pixels repeated
            i = -1 - i if i < 0 else 2 * n - 1 - i
        return i

    out = np.zeros((*x.shape, img.shape[2]))
    for pos in np.ndindex(x.shape):
        u, v = x[pos] - 0.5, y[pos] - 0.5
        c, r = math.floor(u), math.floor(v)
        fu, fv = u - c, v - r
        for dr, wr in ((0, 1 - fv), (1, fv)):
            for dc, wc in ((0, 1 - fu), (1, fu)):
                out[pos] += wr * wc * img[index(r + dr, h), index(c + dc, w)]
    return out if image.ndim == 3 else out[..., 0]


@pytest.mark.parametrize("border", ["reflect", "clamp"])
@pytest.mark.parametrize("channels", [None, 1, 3])
def test_bilinear_sample_matches_the_reference(border: str, channels: int | None) -> None:
    rng = np.random.default_rng(2)
    shape = (7, 9) if channels is None else (7, 9, channels)
    image = rng.integers(0, 256, shape).astype(np.uint8)
    # points inside, on the edges and far outside (several reflections)
    x = rng.uniform(-20, 30, (6, 11))
    y = rng.uniform(-15, 25, (6, 11))
    x[0, :3], y[0, :3] = [0.5, 9.0, 8.5], [0.5, 7.0, 6.5]
    got = bilinear_sample(image, x, y, border=border)
    assert got.dtype == np.float32 and got.shape == x.shape + (() if channels is None else (channels,))
    np.testing.assert_allclose(got, _sample_reference(image, x, y, border), atol=2e-3, rtol=0)


def test_bilinear_sample_reproduces_pixel_centres_and_checks_its_input() -> None:
    image = np.random.default_rng(0).random((5, 6, 3)).astype(np.float32)
    x, y = pixel_centres(5, 6)
    np.testing.assert_array_equal(bilinear_sample(image, x, y), image)
    with pytest.raises(SvrtValueError, match="border must be one of reflect, clamp, got 'wrap'"):
        bilinear_sample(image, x, y, border="wrap")
    with pytest.raises(SvrtValueError, match=r"expects an \(H, W\) or \(H, W, C\) image, got shape \(6,\)"):
        bilinear_sample(np.zeros(6), x, y)


def test_exposure_is_the_mean_of_its_frames_and_exact_when_static() -> None:
    rng = np.random.default_rng(12)
    canvas = rng.uniform(0, 255, (60, 90, 3)).astype(np.float32)
    traj = random_trajectory(rng, height=20, motion=2.0)
    view = view_for(traj, 20, 48)
    times = 3 * 7 + (np.arange(56) + 0.5) / 8
    frames = render_frames(canvas, traj, view, times)
    assert frames.shape == (56, 20, 48, 3)
    np.testing.assert_allclose(render_exposure(canvas, traj, view, times), frames.astype(np.float64).mean(0),
                               rtol=0, atol=1e-9)
    still = static_trajectory()
    still_view = View(20, 48, 60, 90)
    frame = render_frames(canvas, still, still_view, np.array([0.0]))[0]
    np.testing.assert_array_equal(render_exposure(canvas, still, still_view, times), frame.astype(np.float64))
    gray = render_frames(canvas[..., 0], traj, view, times[:3], scale=0.5)
    assert gray.shape == (3, 10, 24)


def test_to_frame_inverts_to_canvas() -> None:
    traj = random_trajectory(np.random.default_rng(4), height=40, motion=3.0)
    view = view_for(traj, 40, 64)
    x, y = pixel_centres(40, 64)
    pose = traj.pose(np.array([0.0, 3.3, 17.9]))
    px, py = view.to_canvas(pose, x, y)
    assert px.shape == (3, 40, 64)
    bx, by = view.to_frame(pose, px, py)
    np.testing.assert_allclose(bx, np.broadcast_to(x, bx.shape), atol=1e-9)
    np.testing.assert_allclose(by, np.broadcast_to(y, by.shape), atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_view_for_keeps_every_bilinear_neighbour_on_the_canvas(seed: int) -> None:
    traj = random_trajectory(np.random.default_rng(seed), height=24, motion=4.0)
    view = view_for(traj, 24, 40)
    x, y = pixel_centres(24, 40)
    px, py = view.to_canvas(traj.pose(np.linspace(0, 300, 1201)), x, y)
    # sample at u = p - 0.5 reads columns floor(u) and floor(u) + 1: both inside [0, Wc)
    assert (px - 0.5).min() >= 0 and (px - 0.5).max() < view.canvas_width - 1
    assert (py - 0.5).min() >= 0 and (py - 0.5).max() < view.canvas_height - 1


def test_trajectories_are_seeded_smooth_and_bounded() -> None:
    a = random_trajectory(np.random.default_rng(9), height=100)
    assert a == random_trajectory(np.random.default_rng(9), height=100)
    assert a != random_trajectory(np.random.default_rng(10), height=100)
    t = np.linspace(0, 500, 50001)  # steps of 0.01 source frames
    for i in range(4):
        c = a.component(i, t)
        assert np.abs(c).max() <= a.bound(i) + 1e-12
        assert a.bound(i) > 0
        # continuous: the largest step between close instants is bounded by speed * dt
        speed = sum(2 * math.pi * abs(amp) / p for amp, p in zip(a.amplitude[i], a.period[i], strict=True))
        assert np.abs(np.diff(c)).max() <= speed * 0.01 + 1e-12
    still = static_trajectory().pose(np.array([0.0, 5.0]))
    np.testing.assert_array_equal(still.shift_x, 0)
    np.testing.assert_array_equal(still.zoom, 1)
    with pytest.raises(SvrtValueError, match="periods must be > 0"):
        CameraTrajectory(((1.0,), (), (), ()), ((0.0,), (), (), ()), ((0.0,), (), (), ()))


def test_true_flow_maps_each_frame_onto_the_next() -> None:
    """Rendered frames (before rounding) of a smooth canvas: frame_0(x) = frame_1(x + flow(x))."""
    h, w = 24, 40
    traj = random_trajectory(np.random.default_rng(21), height=h, motion=3.0)
    view = view_for(traj, h, w)
    amp, k = 100.0, 2 * math.pi / 64  # canvas f = 120 + A sin(k x + k y)
    cx, cy = pixel_centres(view.canvas_height, view.canvas_width)
    canvas = (120 + amp * np.sin(k * cx + k * cy)).astype(np.float32)
    t0, t1 = 10.0, 30.0
    f0, f1 = render_frames(canvas, traj, view, np.array([t0, t1]))
    flow = true_flow(traj, view, t0, t1)
    assert flow.shape == (h, w, 2) and flow.dtype == np.float32
    x, y = pixel_centres(h, w)
    wx, wy = x + flow[..., 0], y + flow[..., 1]
    inside = (wx >= 0.5) & (wx <= w - 0.5) & (wy >= 0.5) & (wy <= h - 0.5)  # no border rule involved
    assert inside.mean() > 0.5
    err = np.abs(bilinear_sample(f1, wx, wy) - f0)[inside]
    # Bilinear interpolation of g on a unit grid errs by at most (max|g_xx| + max|g_yy|) / 8. The canvas
    # f has |f_xx| + |f_yy| <= A |k|^2 (|k|^2 = 2 k^2); a frame sees f through a similarity of scale
    # 1/zoom, so its own second derivatives are at most A |k|^2 / zoom^2. frame_0 and frame_1 each carry
    # one canvas interpolation error; warping frame_1 adds one interpolation of the frame (its canvas
    # error passes through a convex combination unchanged in bound).
    zoom_min = math.exp(-traj.bound(3))
    bound_canvas = amp * 2 * k**2 / 8
    tol = 2 * bound_canvas + bound_canvas / zoom_min**2 + 1e-3
    assert err.max() <= tol
    # ... and the check can fail: a flow off by a quarter pixel is caught.
    off = np.abs(bilinear_sample(f1, wx + 0.25, wy) - f0)[inside]
    assert off.max() > 2 * tol


# -- the dataset ----------------------------------------------------------------------------------


def test_layout_manifest_and_align_log(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    result = synthesize(out, seed=5, **TINY)
    assert result.sequences == (("train", "SYN0000_02_00"), ("train", "SYN0001_02_00"), ("test", "SYN0002_02_00"))
    assert result.spike_size == (8, 16) and result.spike_frames == 3 * 3 * 2 * SUBFRAMES
    assert sorted(p.name for p in out.iterdir()) == ["align.csv", "synth.json", "test", "train"]
    for split, seq in result.sequences:
        d = out / split / seq
        assert sorted(p.name for p in d.iterdir()) == ["blur", "flow", "sharp", "spike"]
        names = [f"{j:06d}" for j in range(3)]
        assert sorted(p.stem for p in (d / "blur").iterdir()) == names
        assert sorted(p.stem for p in (d / "sharp").iterdir()) == names
        assert sorted(p.stem for p in (d / "spike").iterdir()) == names
        assert sorted(p.stem for p in (d / "flow").iterdir()) == names[:-1]
        for j in range(3):
            for kind in ("blur", "sharp"):
                img = _png(d / kind / f"{j:06d}.png")
                assert img.shape == (16, 32, 3) and img.dtype == np.uint8
            stream = read_dat(d / "spike" / f"{j:06d}.dat", height=8, width=16, flip=True)
            assert len(stream) == 2 * SUBFRAMES
        flow = np.load(d / "flow" / "000000.npy")
        assert flow.shape == (16, 32, 2) and flow.dtype == np.float32
    manifest = json.loads((out / "synth.json").read_text())
    assert manifest["complete"] is True
    assert manifest["parameters"]["seed"] == 5 and manifest["parameters"]["size"] == [16, 32]
    assert manifest["parameters"]["threshold"] == 2.0 and manifest["parameters"]["source_frames"] == 2
    assert [s["name"] for s in manifest["sequences"]] == [s for _, s in result.sequences]
    assert all(s["photo"] in manifest["photos"] for s in manifest["sequences"])
    assert manifest["photo_source"].startswith("scikit-image ")
    assert manifest["layout"]["rgb_size"] == [16, 32] and manifest["layout"]["spike_size"] == [8, 16]
    assert manifest["layout"]["spike_frames_per_blur"] == 16 and manifest["layout"]["spike_flip"] is True
    log = read_align_log(out / "align.csv")
    validate_align_log(log, out)
    assert (log.header.height, log.header.width, log.header.flip) == (8, 16, True)
    assert len(log.entries) == 9
    assert all((e.t0, e.t1) == (0.0, 16.0) for e in log.entries)
    assert not (out / ".partial").exists()


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    a = _all_bytes(synthesize(tmp_path / "a", seed=3, **TINY).out_dir)
    b = _all_bytes(synthesize(tmp_path / "b", seed=3, **TINY).out_dir)
    c = _all_bytes(synthesize(tmp_path / "c", seed=4, **TINY).out_dir)
    assert a.keys() == b.keys() == c.keys()
    assert a == b
    data = [k for k in a if k.endswith((".png", ".dat", ".npy"))]
    assert all(a[k] != c[k] for k in data if "/blur/" in k or "/spike/" in k)


def test_worker_processes_write_the_same_bytes(tmp_path: Path) -> None:
    serial = _all_bytes(synthesize(tmp_path / "serial", seed=3, **TINY).out_dir)
    parallel = synthesize(tmp_path / "parallel", seed=3, workers=2, **TINY)
    assert _all_bytes(parallel.out_dir) == serial
    assert not (parallel.out_dir / ".partial").exists()
    with pytest.raises(SvrtValueError, match="workers must be >= 1, got 0"):
        synthesize(tmp_path / "none", workers=0, **TINY)


def test_a_sequence_depends_only_on_the_seed_and_its_number(tmp_path: Path) -> None:
    one = synthesize(tmp_path / "one", seed=8, **{**TINY, "sequences": 1, "test_sequences": 0})
    three = synthesize(tmp_path / "three", seed=8, **TINY)
    seq = one.sequences[0][1]
    assert _all_bytes(one.out_dir / "train" / seq) == _all_bytes(three.out_dir / "train" / seq)


def test_static_scene_blurs_to_its_sharp_frame(tmp_path: Path) -> None:
    out = synthesize(tmp_path / "s", seed=2, motion=0.0, **{**TINY, "source_frames": 7}).out_dir
    for d in sorted(out.glob("*/SYN*")):
        for j in range(3):
            np.testing.assert_array_equal(_png(d / "blur" / f"{j:06d}.png"), _png(d / "sharp" / f"{j:06d}.png"))
        np.testing.assert_array_equal(np.load(d / "flow" / "000000.npy"), 0)


def test_moving_scene_blurs(tmp_path: Path) -> None:
    out = synthesize(tmp_path / "m", seed=2, motion=2.0, **{**TINY, "size": (32, 64), "source_frames": 7}).out_dir
    d = out / "train" / "SYN0000_07_00"
    blur, sharp = _png(d / "blur" / "000001.png"), _png(d / "sharp" / "000001.png")
    assert np.abs(blur.astype(int) - sharp).mean() > 0.5
    # blur smooths: less pixel-to-pixel variation than the sharp frame
    assert np.abs(np.diff(blur.astype(int), axis=1)).mean() < np.abs(np.diff(sharp.astype(int), axis=1)).mean()


def test_recorded_flow_warps_the_next_sharp_frame_onto_this_one(tmp_path: Path) -> None:
    out = synthesize(tmp_path / "f", seed=6, sequences=1, test_sequences=0, frames=3, size=(48, 96),
                     motion=1.5, progress=False).out_dir
    d = out / "train" / "SYN0000_07_00"
    x, y = pixel_centres(48, 96)
    interior = (slice(8, -8), slice(8, -8))
    for i in range(2):
        s0 = _png(d / "sharp" / f"{i:06d}.png").astype(np.float32)
        s1 = _png(d / "sharp" / f"{i + 1:06d}.png").astype(np.float32)
        flow = np.load(d / "flow" / f"{i:06d}.npy")
        assert 0.5 < np.abs(flow).max() < 8  # the camera moved, and by less than the interior margin
        warped = bilinear_sample(s1, x + flow[..., 0], y + flow[..., 1], border="clamp")
        err = np.abs(warped - s0)[interior].mean()
        still = np.abs(s1 - s0)[interior].mean()
        # Photographs have sharp edges, where re-interpolating a frame that was itself interpolated from
        # the canvas (and rounded to uint8, +-0.5 each) errs by several gray levels; flat regions err by
        # about 1. So the mean error is bounded, and it must be far below the error of assuming no motion.
        # (test_true_flow_maps_each_frame_onto_the_next checks the flow itself to a derived bound.)
        assert err < 4.0
        assert err < 0.25 * still


def test_spikes_track_the_image(tmp_path: Path) -> None:
    result = synthesize(tmp_path / "t", seed=1, sequences=2, test_sequences=0, frames=2, size=(32, 64),
                        progress=False)
    hs, ws = result.spike_size
    for split, seq in result.sequences:
        d = result.out_dir / split / seq
        for j in range(2):
            luma = luminance(_png(d / "sharp" / f"{j:06d}.png"))
            luma_small = luma.reshape(hs, 2, ws, 2).mean(axis=(1, 3))  # box 2x2 = spike resolution
            mean_spikes = read_dat(d / "spike" / f"{j:06d}.dat", height=hs, width=ws).mean_image()
            assert np.corrcoef(mean_spikes.ravel(), luma_small.ravel())[0, 1] > 0.9
            # rate = I / theta (theta = 2): over 56 frames and 512 pixels, and under mild motion,
            # the mean matches to a few thousandths; 0.02 leaves room for the motion.
            assert abs(2.0 * mean_spikes.mean() - luma.mean()) < 0.02


def test_bad_sizes_are_explained(tmp_path: Path) -> None:
    with pytest.raises(SvrtValueError, match=r"spike width must be a multiple of 8 .* gives a spike width of 10"):
        synthesize(tmp_path / "x", **{**TINY, "size": (16, 20)})
    with pytest.raises(SvrtValueError, match=r"gives 7.5x16 spike pixels; both must be whole numbers"):
        synthesize(tmp_path / "x", **{**TINY, "size": (15, 32)})
    with pytest.raises(SvrtValueError, match="need at least one sequence"):
        synthesize(tmp_path / "x", **{**TINY, "sequences": 0, "test_sequences": 0})
    with pytest.raises(SvrtValueError, match="threshold must be >= 1"):
        synthesize(tmp_path / "x", threshold=0.5, **TINY)
    assert not (tmp_path / "x").exists()  # nothing is created for a bad request


def test_refuses_non_empty_folders_and_overwrites_only_its_own(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SvrtValueError, match=r"folder is not empty \(1 entries: notes.txt\)"):
        synthesize(foreign, **TINY)
    with pytest.raises(SvrtValueError, match="holds no synth.json, so it is not a synthetic dataset"):
        synthesize(foreign, overwrite=True, **TINY)
    assert (foreign / "notes.txt").read_text() == "mine"

    out = tmp_path / "out"
    synthesize(out, **TINY)
    (out / "preview.png").write_bytes(b"kept")
    with pytest.raises(SvrtValueError, match="folder is not empty"):
        synthesize(out, **TINY)
    synthesize(out, overwrite=True, **{**TINY, "sequences": 1, "test_sequences": 0})
    assert sorted(p.name for p in (out / "train").iterdir()) == ["SYN0000_02_00"]
    assert not (out / "test").exists()
    assert (out / "preview.png").read_bytes() == b"kept"
    validate_align_log(read_align_log(out / "align.csv"), out)


def test_an_interrupted_run_leaves_nothing_that_looks_complete(tmp_path: Path, monkeypatch) -> None:
    real_write_dat = builder_mod.write_dat
    calls = []

    def failing_write_dat(path, frames, *, flip=True):
        calls.append(path)
        if len(calls) == 5:  # second frame of the second sequence
            raise KeyboardInterrupt
        return real_write_dat(path, frames, flip=flip)

    monkeypatch.setattr(builder_mod, "write_dat", failing_write_dat)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        synthesize(out, **TINY)
    assert json.loads((out / "synth.json").read_text())["complete"] is False
    assert not (out / "align.csv").exists()
    assert [p.name for p in (out / "train").iterdir()] == ["SYN0000_02_00"]  # the finished one only
    assert not any(p.name.endswith(".part") for p in out.rglob("*"))
    monkeypatch.setattr(builder_mod, "write_dat", real_write_dat)
    synthesize(out, overwrite=True, **TINY)  # a re-run replaces the broken dataset
    assert json.loads((out / "synth.json").read_text())["complete"] is True


def test_own_photographs_and_missing_scikit_image(tmp_path: Path, monkeypatch) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.jpg"):
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(photos / name)
    (photos / "readme.txt").write_text("not a photo")
    monkeypatch.setitem(sys.modules, "skimage", None)  # scikit-image unavailable
    with pytest.raises(BackendUnavailableError, match=r'pip install "svrt\[synth\]"'):
        synthesize(tmp_path / "none", **TINY)
    out = synthesize(tmp_path / "own", images=photos, **TINY).out_dir
    manifest = json.loads((out / "synth.json").read_text())
    assert manifest["photos"] == ["a.jpg", "b.png"]
    assert {s["photo"] for s in manifest["sequences"]} <= {"a.jpg", "b.png"}
    with pytest.raises(SvrtValueError, match="no photographs found"):
        synthesize(tmp_path / "e", images=tmp_path / "own" / "train", **TINY)



def _dead_leaves_reference(size: int, seed: int, palette: np.ndarray, radii: tuple[float, float], leaves: int
                           ) -> np.ndarray:
    """Back to front, every disk painted whole over the ones behind it: the same RNG draws as
    ``dead_leaves`` (radius, centre, colour per disk; then the background), none of its bookkeeping."""
    rng = np.random.default_rng(seed)
    lo, hi = radii[0] ** -2.0, radii[1] ** -2.0
    disks = []
    for _ in range(leaves):
        r = (lo - rng.random() * (lo - hi)) ** -0.5
        cy, cx = rng.uniform(-r, size + r, 2)
        disks.append((r, cy, cx, palette[rng.integers(len(palette))]))
    image = np.empty((size, size, 3), np.uint8)
    image[:] = palette[rng.integers(len(palette))]
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    for r, cy, cx, colour in reversed(disks):  # the first disk drawn is the front one
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = colour
    return image


def test_dead_leaves_match_the_back_to_front_reference() -> None:
    palette = np.random.default_rng(5).integers(0, 256, (7, 3), dtype=np.uint8)
    # 60 small disks leave background: the reference sees every disk the fast path drew
    (fast,) = dead_leaves(1, size=48, seed=3, palette=palette, radii=(1.0, 4.0), max_leaves=60)
    ref = _dead_leaves_reference(48, 3, palette, (1.0, 4.0), 60)
    np.testing.assert_array_equal(fast.pixels, ref)
    assert fast.name == "dead_leaves_000"
    assert 2 < len(np.unique(ref.reshape(-1, 3), axis=0)) <= 7


def test_dead_leaves_cover_the_image_from_the_palette_and_follow_the_seed() -> None:
    palette = np.array([[10, 20, 30], [200, 100, 0], [0, 255, 90]], np.uint8)
    a = dead_leaves(2, size=96, seed=1, palette=palette, radii=(2.0, 40.0))
    b = dead_leaves(2, size=96, seed=1, palette=palette, radii=(2.0, 40.0))
    c = dead_leaves(1, size=96, seed=2, palette=palette, radii=(2.0, 40.0))
    assert [p.name for p in a] == ["dead_leaves_000", "dead_leaves_001"]
    assert all(np.array_equal(x.pixels, y.pixels) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].pixels, a[1].pixels) and not np.array_equal(a[0].pixels, c[0].pixels)
    colours = {tuple(c) for c in a[0].pixels.reshape(-1, 3)}
    assert colours == {tuple(c) for c in palette}  # every pixel painted from the palette, all colours used
    free = dead_leaves(1, size=64, seed=0)[0].pixels  # no palette: uniform colours, many of them
    assert free.shape == (64, 64, 3) and free.dtype == np.uint8 and len(np.unique(free.reshape(-1, 3), axis=0)) > 20


@pytest.mark.parametrize("kwargs", [dict(count=-1), dict(count=1, size=4), dict(count=1, radii=(5.0, 2.0)),
                                    dict(count=1, radii=(0.0, 2.0)), dict(count=1, palette=np.zeros((0, 3)))])
def test_dead_leaves_reject_bad_arguments(kwargs) -> None:
    with pytest.raises(SvrtValueError, match="dead_leaves"):
        dead_leaves(**kwargs)
