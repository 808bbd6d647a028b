"""PSNR / SSIM against scikit-image (the reference), on random, structured and edge-case images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from svrt_errors import SvrtValueError
from svrt_model.metrics import gaussian_window, psnr, ssim, to_uint8

metrics = pytest.importorskip("skimage.metrics")
skdata = pytest.importorskip("skimage.data")


def sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """scikit-image on (C, H, W) images, configured as the field (and our module docstring) says."""
    return metrics.structural_similarity(np.moveaxis(a, 0, -1), np.moveaxis(b, 0, -1), channel_axis=-1,
                                         gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=255)


def sk_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return metrics.peak_signal_noise_ratio(b, a, data_range=255)


def pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    a = rng.integers(0, 256, (3, 37, 53), dtype=np.uint8)
    out.append(("random", a, rng.integers(0, 256, a.shape, dtype=np.uint8)))
    noisy = np.clip(a.astype(np.int16) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
    out.append(("random+noise", a, noisy))
    photo = np.moveaxis(skdata.astronaut()[100:164, 150:246], -1, 0).copy()  # a real photograph, 64x96
    shifted = np.moveaxis(skdata.astronaut()[101:165, 152:248], -1, 0).copy()
    out.append(("photo vs shifted photo", photo, shifted))
    blurred = photo.astype(np.float64)
    blurred = ((blurred + np.roll(blurred, 1, -1) + np.roll(blurred, -1, -1)) / 3).round().astype(np.uint8)
    out.append(("photo vs blurred", photo, blurred))
    y, x = np.mgrid[:40, :41]
    ramp = np.stack([(y * 6) % 256, (x * 6) % 256, ((x + y) * 3) % 256]).astype(np.uint8)
    checker = np.where(((y // 4 + x // 4) % 2)[None].repeat(3, 0) == 1, 230, 20).astype(np.uint8)
    out.append(("ramp vs checkerboard", ramp, checker))
    out.append(("smallest (11x11)", a[:, :11, :11], noisy[:, :11, :11]))
    return out


@pytest.mark.parametrize(("name", "a", "b"), pairs(), ids=[p[0] for p in pairs()])
def test_matches_scikit_image(name, a, b):
    got_s = ssim(torch.from_numpy(a), torch.from_numpy(b)).item()
    got_p = psnr(torch.from_numpy(a), torch.from_numpy(b)).item()
    assert got_s == pytest.approx(sk_ssim(a, b), abs=1e-6)
    assert got_p == pytest.approx(sk_psnr(a, b), abs=1e-9)
    # float inputs on the 0-255 scale give the same numbers; float32 math agrees to ~1e-5
    af, bf = torch.from_numpy(a).double(), torch.from_numpy(b).double()
    assert ssim(af, bf).item() == pytest.approx(got_s, abs=1e-12)
    assert ssim(af, bf, dtype=torch.float32).item() == pytest.approx(got_s, abs=1e-4)


def test_float_images_that_are_not_whole_numbers():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 255, (2, 3, 24, 30))
    assert ssim(torch.from_numpy(a), torch.from_numpy(b)).item() == pytest.approx(sk_ssim(a, b), abs=1e-6)
    assert psnr(torch.from_numpy(a), torch.from_numpy(b)).item() == pytest.approx(sk_psnr(a, b), abs=1e-9)


def test_batched_equals_one_by_one():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (2, 4, 3, 20, 24), dtype=np.uint8)
    b = rng.integers(0, 256, a.shape, dtype=np.uint8)
    s, p = ssim(torch.from_numpy(a), torch.from_numpy(b)), psnr(torch.from_numpy(a), torch.from_numpy(b))
    assert s.shape == p.shape == (2, 4)
    for i in range(2):
        for j in range(4):
            assert s[i, j].item() == pytest.approx(sk_ssim(a[i, j], b[i, j]), abs=1e-6)
            assert p[i, j].item() == pytest.approx(sk_psnr(a[i, j], b[i, j]), abs=1e-9)


def test_identical_and_constant_images():
    rng = np.random.default_rng(3)
    a = torch.from_numpy(rng.integers(0, 256, (3, 16, 16), dtype=np.uint8))
    assert psnr(a, a).item() == float("inf")  # documented: MSE 0 -> +inf, as BasicSR returns
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-12)
    grey, white = torch.full((3, 16, 16), 128, dtype=torch.uint8), torch.full((3, 16, 16), 255, dtype=torch.uint8)
    assert ssim(grey, grey).item() == pytest.approx(1.0, abs=1e-12)
    assert psnr(grey, white).item() == pytest.approx(10 * np.log10(255**2 / 127**2), abs=1e-12)
    g, w = grey.numpy(), white.numpy()
    assert ssim(grey, white).item() == pytest.approx(sk_ssim(g, w), abs=1e-6)
    c1 = (0.01 * 255) ** 2  # constant images: only the luminance term differs from 1
    assert ssim(grey, white).item() == pytest.approx((2 * 128 * 255 + c1) / (128**2 + 255**2 + c1), abs=1e-12)
    # a constant frame against a textured one: the structure term is c2-limited, scikit-image agrees
    t = a.numpy()
    assert ssim(grey, a).item() == pytest.approx(sk_ssim(g, t), abs=1e-6)


def test_one_bad_frame_in_a_batch_stays_in_its_row():
    a = torch.zeros(3, 3, 12, 12, dtype=torch.uint8)
    b = a.clone()
    b[1] = 10
    p = psnr(b, a)
    assert p[0].item() == p[2].item() == float("inf")
    assert p[1].item() == pytest.approx(10 * np.log10(255**2 / 100), abs=1e-12)


def test_gaussian_window_is_the_scipy_filter():
    from scipy import ndimage

    impulse = np.zeros(11)
    impulse[5] = 1.0
    expect = ndimage.gaussian_filter1d(impulse, 1.5, truncate=3.5, mode="constant")
    np.testing.assert_allclose(gaussian_window().numpy(), expect[::-1], rtol=0, atol=1e-15)
    assert gaussian_window().sum().item() == pytest.approx(1.0, abs=1e-15)


def test_to_uint8_rounds_and_clamps():
    x = torch.tensor([-0.5, 0.0, 0.5 / 255, 1.5 / 255, 100.4 / 255, 1.0, 2.0])
    assert to_uint8(x).tolist() == [0, 0, 0, 2, 100, 255, 255]  # half to even, as numpy.round
    with pytest.raises(SvrtValueError, match="expected float frames"):
        to_uint8(torch.zeros(3, dtype=torch.uint8))


def test_errors():
    a = torch.zeros(3, 16, 16)
    with pytest.raises(SvrtValueError, match=r"ssim: output \(3, 16, 16\) and target \(3, 16, 15\) differ"):
        ssim(a, torch.zeros(3, 16, 15))
    with pytest.raises(SvrtValueError, match="smaller than the 11x11 window"):
        ssim(torch.zeros(3, 10, 16), torch.zeros(3, 10, 16))
    with pytest.raises(SvrtValueError, match=r"psnr: output must be \(\.\.\., C, H, W\) images"):
        psnr(torch.zeros(16, 16), torch.zeros(16, 16))
    with pytest.raises(SvrtValueError, match="must be a torch tensor"):
        psnr(np.zeros((3, 16, 16)), a)
    with pytest.raises(SvrtValueError, match="dtype must be torch.float32 or torch.float64"):
        psnr(a, a, dtype=torch.float16)
    with pytest.raises(SvrtValueError, match="positive odd number"):
        gaussian_window(4)


@pytest.mark.needs_cuda
def test_gpu_matches_cpu():
    rng = np.random.default_rng(4)
    a = torch.from_numpy(rng.integers(0, 256, (4, 3, 64, 80), dtype=np.uint8))
    b = torch.from_numpy(rng.integers(0, 256, a.shape, dtype=np.uint8))
    for fn in (psnr, ssim):
        torch.testing.assert_close(fn(a.cuda(), b.cuda()).cpu(), fn(a, b), rtol=0, atol=1e-10)
