"""upfirdn2d: a float64 reference built step by step (zero insertion, padding/cropping, convolution,
decimation) vs the torch path vs the CUDA kernel (GPU, and the CPU emulation); the backward as an
upfirdn2d with the flipped filter and swapped factors; gradients of first and second order; the
anti-aliased resize built on it; the argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kernels.resample import resize, resize_plan
from kernels.upfirdn2d import check_upfirdn2d_args, grad_pad, upfirdn2d
from kernels.upfirdn2d_cuda import upfirdn2d_cuda
from svrt_errors import BackendUnavailableError, SvrtValueError
from tests.kernels.emulation import EmulatedRuntime

needs_cuda = pytest.mark.needs_cuda

PATHS = [
    pytest.param("cpu", "torch", id="cpu-torch"),
    pytest.param("cpu", "emulated", id="cpu-emulated-kernel"),
    pytest.param("cuda", "torch", id="cuda-torch", marks=needs_cuda),
    pytest.param("cuda", "cuda", id="cuda-kernel", marks=needs_cuda),
]
TOL = {torch.float64: 1e-14, torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}

# name: (B, C, H, W, (kh, kw), up, down, pad)
CONFIGS = {
    "identity-1x1": (2, 3, 5, 7, (1, 1), 1, 1, 0),
    "up2-4x4": (1, 2, 5, 6, (4, 4), 2, 1, (2, 1)),
    "down2-4x4": (2, 2, 9, 8, (4, 4), 1, 2, (1, 1)),
    "up3-down2-odd-filter": (1, 3, 4, 5, (3, 5), 3, 2, (2, 3, 1, 0)),
    "per-axis-factors": (2, 1, 6, 5, (2, 3), (2, 1), (1, 3), (1, 2, 0, 1)),
    "negative-pads-crop": (1, 2, 8, 9, (3, 3), 1, 1, (-1, 2, 1, -2)),
    "big-down-tiny-out": (1, 1, 7, 7, (2, 2), 1, 4, 0),
}


def expected_fn(x: torch.Tensor, f: torch.Tensor, up, down, pad) -> np.ndarray:
    """The four steps as written (float64 NumPy): zero insertion, pad/crop, convolution, decimation."""
    (uy, ux), (dy, dx), (px0, px1, py0, py1) = (check_upfirdn2d_args(x, f, up, down, pad))
    a = x.detach().cpu().double().numpy()
    k = f.detach().cpu().double().numpy()
    B, C, H, W = a.shape
    u = np.zeros((B, C, H * uy, W * ux))
    u[:, :, ::uy, ::ux] = a
    q = np.pad(u, ((0, 0), (0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))))
    q = q[:, :, max(-py0, 0) : q.shape[2] - max(-py1, 0), max(-px0, 0) : q.shape[3] - max(-px1, 0)]
    kh, kw = k.shape
    ch, cw = q.shape[2] - kh + 1, q.shape[3] - kw + 1
    conv = np.zeros((B, C, ch, cw))
    for i in range(ch):
        for j in range(cw):
            for ty in range(kh):
                for tx in range(kw):
                    conv[:, :, i, j] += k[kh - 1 - ty, kw - 1 - tx] * q[:, :, i + ty, j + tx]
    return conv[:, :, ::dy, ::dx]


def make(name: str, device: str = "cpu", dtype: torch.dtype = torch.float64, seed: int = 0):
    B, C, H, W, (kh, kw), up, down, pad = CONFIGS[name]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64).to(device, dtype)
    f = torch.randn(kh, kw, generator=gen, dtype=torch.float64).to(device)  # asymmetric: flips would show
    return x, f, up, down, pad


def call(backend: str, x: torch.Tensor, f: torch.Tensor, up, down, pad) -> torch.Tensor:
    if backend == "emulated":
        up2, down2, pads = check_upfirdn2d_args(x, f, up, down, pad)
        return upfirdn2d_cuda(x, f, up2, down2, pads, runtime=EmulatedRuntime())
    return upfirdn2d(x, f, up=up, down=down, pad=pad, backend=backend)


def assert_close_rel(got: torch.Tensor, want, tol: float, what: str = "") -> None:
    got = got.detach().double().cpu()
    want = torch.as_tensor(want, dtype=torch.float64)
    assert got.shape == want.shape, f"{what}: {tuple(got.shape)} != {tuple(want.shape)}"
    err = (got - want).abs().max().item() if got.numel() else 0.0
    scale = want.abs().max().item() if want.numel() else 0.0
    assert err <= tol * max(scale, 1e-30), f"{what}: max abs error {err:.3e} > {tol:.1e} * {scale:.3e}"


def test_reference_on_a_hand_computed_case() -> None:
    # 1-D: x = [1, 2], up 2 -> [1, 0, 2, 0], pad (1, 0) -> [0, 1, 0, 2, 0], f = [1, 10] (convolution:
    # c[m] = 10 * q[m] + 1 * q[m + 1]) -> [1, 10, 2, 20], down 1
    x = torch.tensor([[[[1.0, 2.0]]]], dtype=torch.float64)
    f = torch.tensor([[1.0, 10.0]], dtype=torch.float64)
    np.testing.assert_array_equal(expected_fn(x, f, (1, 2), 1, (1, 0, 0, 0)), [[[[1, 10, 2, 20]]]])


@pytest.mark.parametrize("device,backend", PATHS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_reference(device: str, backend: str, name: str) -> None:
    x, f, up, down, pad = make(name, device, seed=1)
    assert_close_rel(call(backend, x, f, up, down, pad), expected_fn(x, f, up, down, pad), TOL[torch.float64], name)


@pytest.mark.parametrize("device,backend", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_dtypes(device: str, backend: str, dtype: torch.dtype) -> None:
    x, f, up, down, pad = make("up3-down2-odd-filter", device, dtype, seed=2)
    got = call(backend, x, f.float(), up, down, pad)
    assert got.dtype == dtype
    assert_close_rel(got, expected_fn(x, f.float(), up, down, pad), TOL[dtype], str(dtype))


@pytest.mark.parametrize("device,backend", PATHS)
def test_empty_batch_and_non_contiguous(device: str, backend: str) -> None:
    x, f, up, down, pad = make("up2-4x4", device)
    empty = x[:0].requires_grad_()
    out = call(backend, empty, f, up, down, pad)
    assert out.shape == (0, 2, 10, 12)
    out.sum().backward()
    assert empty.grad.shape == empty.shape
    strided = x.transpose(2, 3).contiguous().transpose(2, 3)
    assert torch.equal(call(backend, strided, f, up, down, pad), call(backend, x, f, up, down, pad))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_backward_is_upfirdn2d_with_flipped_filter_and_swapped_factors(name: str) -> None:
    x, f, up, down, pad = make(name, seed=3)
    (uy, ux), (dy, dx), (px0, px1, py0, py1) = check_upfirdn2d_args(x, f, up, down, pad)
    x.requires_grad_()
    out = upfirdn2d(x, f, up=up, down=down, pad=pad, backend="torch")
    g = torch.randn_like(out)
    (autograd,) = torch.autograd.grad(out, x, g)
    (H, W), (OH, OW), (kh, kw) = x.shape[2:], out.shape[2:], f.shape
    gy0, gy1 = grad_pad(H, OH, uy, dy, py0, kh)
    gx0, gx1 = grad_pad(W, OW, ux, dx, px0, kw)
    derived = upfirdn2d(g, torch.flip(f, [0, 1]), up=(dy, dx), down=(uy, ux), pad=(gx0, gx1, gy0, gy1))
    assert_close_rel(derived, autograd, 1e-14, name)


@pytest.mark.parametrize("device,backend", PATHS)
@pytest.mark.parametrize("name", ["up2-4x4", "up3-down2-odd-filter", "negative-pads-crop"])
def test_gradcheck_and_gradgradcheck(device: str, backend: str, name: str) -> None:
    x, f, up, down, pad = make(name, device, seed=4)
    x.requires_grad_()

    def fn(x):
        return call(backend, x, f, up, down, pad)

    # the torch path's second derivative runs conv2d's double backward, slow on a CPU: random projections
    fast = backend == "torch" and device == "cpu"
    assert torch.autograd.gradcheck(fn, (x,), fast_mode=fast)
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=fast)


# ---------------------------------------------------------------- resize


@pytest.mark.parametrize(
    "size,target,steps",
    [
        ((64, 64), (64, 64), []),
        ((64, 64), (16, 16), [(-1, -1), (-1, -1)]),
        ((64, 64), (20, 40), [(-1, 0)]),  # 64 -> 32, then bilinear (32 is < 2x from 20)
        ((90, 160), (180, 320), [(1, 1)]),
        ((45, 80), (180, 40), [(1, -1), (1, 0)]),
        ((7, 7), (3, 3), [(-1, -1)]),
    ],
)
def test_resize_plan(size, target, steps) -> None:
    assert resize_plan(size, target) == steps


@pytest.mark.parametrize("backend", ["torch", "emulated"])
@pytest.mark.parametrize("target", [(16, 16), (32, 48), (24, 20), (130, 70)])
def test_resize_shapes_and_constant_interior(backend: str, target: tuple[int, int], monkeypatch) -> None:
    if backend == "emulated":
        import kernels.resample as resample

        def emulated(x, f, *, up, down, pad, backend):
            return call("emulated", x, f, up, down, pad)

        monkeypatch.setattr(resample, "upfirdn2d", emulated)
    x = torch.full((1, 2, 64, 64), 3.0)
    y = resize(x, target, backend="torch")
    assert y.shape == (1, 2, *target)
    interior = y[:, :, 3:-3, 3:-3]  # zero padding only darkens a border of a few pixels
    assert_close_rel(interior, torch.full_like(interior, 3.0), 1e-6)


def test_resize_downsampling_is_antialiased() -> None:
    """A cosine of 0.45 cycles per pixel is far above the Nyquist frequency after 4x down (0.125): the
    binomial prefilter removes it (to < 1% of its amplitude); bilinear interpolation, which averages two
    neighbours whatever the factor, aliases it into a visible low-frequency pattern (~16%)."""
    x = torch.cos(2 * torch.pi * 0.45 * torch.arange(128, dtype=torch.float64)).expand(1, 1, 32, 128)
    ours = resize(x, (8, 32))[..., 2:-2]
    plain = F.interpolate(x, size=(8, 32), mode="bilinear", align_corners=False)
    assert ours.abs().max() < 0.01
    assert plain.abs().max() > 0.1


def test_resize_is_differentiable_and_keeps_dtype() -> None:
    x = torch.randn(1, 1, 32, 24, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: resize(x, (12, 50)), (x,), fast_mode=True)
    assert resize(x.detach().to(torch.bfloat16), (8, 6)).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"size": (0, 4)}, r"size=\(0, 4\) is invalid; expected \(H, W\) with positive ints"),
        ({"taps": (1.0, 2.0, 1.0)}, r"taps=\(1.0, 2.0, 1.0\) must be an even number"),
        ({"taps": (1.0, -1.0)}, r"with a positive sum"),
    ],
)
def test_resize_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"size": (4, 4), **kwargs}
    with pytest.raises(SvrtValueError, match=match):
        resize(torch.zeros(1, 1, 8, 8), **args)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"up": 0}, r"up=0 is invalid; expected an int >= 1 or a \(y, x\) pair of them"),
        ({"down": (2, 0)}, r"down=\(2, 0\) is invalid"),
        ({"pad": (1, 2, 3)}, r"pad=\(1, 2, 3\) is invalid; expected an int, \(p0, p1\) for both axes"),
        ({"pad": -3}, r"an input of 5x6 upsampled by \(1, 1\) and padded by \(-3, -3, -3, -3\) is smaller than the "
                      r"4x4 filter"),
        ({"f": torch.zeros(4)}, r"the filter must be a non-empty \(kh, kw\) floating-point tensor"),
        ({"f": torch.zeros(0, 3)}, r"the filter must be a non-empty"),
        ({"x": torch.zeros(2, 5, 6)}, r"x must be a \(B, C, H, W\) float16/bfloat16/float32/float64 tensor"),
        ({"x": torch.zeros(1, 1, 5, 6, dtype=torch.int64)}, r"got torch.int64 of shape \(1, 1, 5, 6\)"),
        ({"backend": "triton"}, r"unknown backend 'triton'; expected one of auto, torch, cuda"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    args = {"x": torch.zeros(1, 1, 5, 6), "f": torch.ones(4, 4), **kwargs}
    with pytest.raises(SvrtValueError, match=match):
        upfirdn2d(args.pop("x"), args.pop("f"), **args)


def test_cuda_backend_without_a_gpu_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match=r"upfirdn2d: backend 'cuda' needs a CUDA device"):
        upfirdn2d(torch.zeros(1, 1, 4, 4), torch.ones(2, 2), backend="cuda")


@needs_cuda
def test_cuda_is_auto_and_writes_every_element() -> None:
    poison = torch.full((1 << 26,), float("nan"), device="cuda")
    del poison
    x = torch.randn(2, 32, 90, 160, device="cuda")
    f = torch.outer(*(torch.tensor([1.0, 3.0, 3.0, 1.0], device="cuda") / 8,) * 2)
    got = upfirdn2d(x, f * 4, up=2, pad=(2, 1))
    assert torch.equal(got, upfirdn2d(x, f * 4, up=2, pad=(2, 1), backend="cuda"))
    assert torch.isfinite(got).all() and got.shape == (2, 32, 180, 320)
    assert_close_rel(got, upfirdn2d(x.double(), f.double() * 4, up=2, pad=(2, 1), backend="torch"), TOL[torch.float32])
