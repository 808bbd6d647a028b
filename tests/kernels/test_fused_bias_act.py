"""Fused bias + activation: a float64 NumPy reference vs the torch path vs the CUDA kernels (GPU, and the
CPU emulation), first and second derivatives (``gradcheck``, ``gradgradcheck``), dtypes, odd and empty
shapes, and the argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kernels.fused_bias_act import check_fused_bias_act_args, fused_bias_act
from kernels.fused_bias_act_cuda import fused_bias_act_cuda
from svrt_errors import BackendUnavailableError, SvrtValueError
from tests.kernels.emulation import EmulatedRuntime

needs_cuda = pytest.mark.needs_cuda

PATHS = [
    pytest.param("cpu", "torch", id="cpu-torch"),
    pytest.param("cpu", "emulated", id="cpu-emulated-kernel"),
    pytest.param("cuda", "torch", id="cuda-torch", marks=needs_cuda),
    pytest.param("cuda", "cuda", id="cuda-kernel", marks=needs_cuda),
]
ACTS = [("linear", None, 1.0), ("relu", None, 1.0), ("lrelu", 0.2, 2**0.5), ("lrelu", 1.5, 0.7)]
# max |got - want| / max |want| per dtype: three roundings (sum, slope, scale) in float32, one to the dtype
TOL = {torch.float64: 1e-15, torch.float32: 4e-7, torch.float16: 1e-3, torch.bfloat16: 8e-3}
# name: (shape, dim)
SHAPES = {
    "nchw": ((2, 5, 3, 7), 1),
    "channels-last-dim": ((3, 4, 6), -1),
    "odd-flat": ((37,), 0),
    "inner-below-8": ((2, 9, 3), 1),  # a chunk of 8 elements spans several channels
    "large": ((2, 16, 33, 31), 1),
}


def reference(x: torch.Tensor, bias: torch.Tensor | None, slope: float, scale: float, dim: int) -> np.ndarray:
    z = x.detach().cpu().double().numpy()
    if bias is not None:
        shape = [1] * z.ndim
        shape[dim] = -1
        z = z + bias.detach().cpu().double().numpy().reshape(shape)
    return np.where(z > 0, z, slope * z) * scale


def call(backend: str, x: torch.Tensor, bias: torch.Tensor | None, act: str, slope: float | None, scale: float,
         dim: int) -> torch.Tensor:
    if backend == "emulated":
        s, d = check_fused_bias_act_args(x, bias, act, slope, scale, dim)
        return fused_bias_act_cuda(x, bias, s, scale, d, act == "linear", runtime=EmulatedRuntime())
    return fused_bias_act(x, bias, act=act, negative_slope=slope, scale=scale, dim=dim, backend=backend)


def make(shape: tuple[int, ...], dim: int, device: str, dtype: torch.dtype, seed: int = 0, bias: bool = True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    x.view(-1)[::5] = 0.0  # exact zeros: the derivative there is the slope
    b = torch.randn(shape[dim], generator=gen, dtype=torch.float64) if bias else None
    bias_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    return x.to(device, dtype), None if b is None else b.to(device, bias_dtype)


def assert_close_rel(got: torch.Tensor, want, tol: float, what: str = "") -> None:
    got = got.detach().double().cpu()
    want = torch.as_tensor(want, dtype=torch.float64)
    assert got.shape == want.shape, what
    err = (got - want).abs().max().item() if got.numel() else 0.0
    scale = want.abs().max().item() if want.numel() else 0.0
    assert err <= tol * max(scale, 1e-30), f"{what}: max abs error {err:.3e} > {tol:.1e} * {scale:.3e}"


@pytest.mark.parametrize("device,backend", PATHS)
@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("act,slope,scale", ACTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_forward_matches_reference(device: str, backend: str, name: str, act: str, slope, scale: float,
                                   dtype: torch.dtype) -> None:
    shape, dim = SHAPES[name]
    x, b = make(shape, dim, device, dtype, seed=1)
    got = call(backend, x, b, act, slope, scale, dim)
    assert got.dtype == dtype and got.shape == x.shape
    s = 1.0 if act == "linear" else (0.0 if act == "relu" else slope)
    b_used = None if b is None else b.to(torch.float32 if dtype != torch.float64 else dtype)
    assert_close_rel(got, reference(x, b_used, s, scale, dim), TOL[dtype], f"{name} {act}")


@pytest.mark.parametrize("device,backend", PATHS)
def test_without_bias_relu_equals_torch_relu_exactly(device: str, backend: str) -> None:
    x, _ = make((2, 8, 5, 5), 1, device, torch.float32, seed=2, bias=False)
    assert torch.equal(call(backend, x, None, "relu", None, 1.0, 1), F.relu(x))
    assert torch.equal(call(backend, x, None, "lrelu", 0.1, 1.0, 1), F.leaky_relu(x, 0.1))


@pytest.mark.parametrize("device,backend", PATHS)
def test_empty_and_non_contiguous(device: str, backend: str) -> None:
    x, b = make((0, 4, 3), 1, device, torch.float32)
    x.requires_grad_()
    out = call(backend, x, b, "lrelu", 0.2, 1.0, 1)
    assert out.shape == (0, 4, 3)
    out.sum().backward()
    assert x.grad.shape == x.shape
    x, b = make((3, 4, 6), 1, device, torch.float64, seed=3)
    strided = x.transpose(0, 2).contiguous().transpose(0, 2)
    assert not strided.is_contiguous()
    assert torch.equal(call(backend, strided, b, "lrelu", 0.2, 1.5, 1), call(backend, x, b, "lrelu", 0.2, 1.5, 1))


@pytest.mark.parametrize("device,backend", PATHS)
@pytest.mark.parametrize("act,slope,scale", ACTS)
def test_gradients_match_reference(device: str, backend: str, act: str, slope, scale: float) -> None:
    x, b = make((2, 5, 3, 7), 1, device, torch.float64, seed=4)
    x.requires_grad_()
    b.requires_grad_()
    out = call(backend, x, b, act, slope, scale, 1)
    g = torch.randn_like(out)
    gx, gb = torch.autograd.grad(out, (x, b), g)
    s = 1.0 if act == "linear" else (0.0 if act == "relu" else slope)
    z = (x + b.view(1, -1, 1, 1)).detach()
    want = g * scale * torch.where(z > 0, torch.ones_like(z), torch.full_like(z, s))
    assert_close_rel(gx, want.cpu(), 1e-15, "grad x")
    assert_close_rel(gb, want.sum((0, 2, 3)).cpu(), 1e-14, "grad bias")


@pytest.mark.parametrize("device,backend", PATHS)
@pytest.mark.parametrize("act,slope,scale", ACTS)
def test_gradcheck_and_gradgradcheck(device: str, backend: str, act: str, slope, scale: float) -> None:
    x, b = make((2, 3, 4), 1, device, torch.float64, seed=5)
    x.view(-1)[::5] = 0.5  # away from the kink: finite differences need a neighbourhood without one
    x.requires_grad_()
    b.requires_grad_()

    def fn(x, b):
        return call(backend, x, b, act, slope, scale, 1)

    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_emulated_kernel_gradients_equal_torch_path(dtype: torch.dtype) -> None:
    """Both paths compute in float32 and round once: first and second derivatives agree to that rounding."""
    x, b = make((3, 6, 11), 1, "cpu", dtype, seed=6)
    results = []
    for backend in ("torch", "emulated"):
        xx, bb = x.clone().requires_grad_(), b.clone().requires_grad_()
        out = call(backend, xx, bb, "lrelu", 0.2, 2**0.5, 1)
        g = torch.linspace(-1, 1, out.numel()).view_as(out).to(dtype).requires_grad_()
        gx, gb = torch.autograd.grad(out, (xx, bb), g, create_graph=True)
        (ggx,) = torch.autograd.grad(gx, g, torch.ones_like(gx))
        results.append((out, gx, gb, ggx))
    for a, c, what in zip(*results, ("out", "grad x", "grad bias", "grad grad"), strict=True):
        assert a.dtype == c.dtype, what
        # the kernel's bias gradient sums grad x as rounded to x's dtype, the torch path's before rounding
        assert_close_rel(c, a.double(), TOL[dtype], what)


def test_half_input_with_float32_bias_under_autocast() -> None:
    x, b = make((2, 4, 3), 1, "cpu", torch.bfloat16, seed=7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused_bias_act(x, b, act="lrelu", scale=2**0.5)
    assert out.dtype == torch.bfloat16
    assert_close_rel(out, reference(x, b, 0.2, 2**0.5, 1), TOL[torch.bfloat16])


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"act": "gelu"}, r"unknown act 'gelu'; expected one of linear, relu, lrelu"),
        ({"act": "relu", "negative_slope": 0.2}, r"negative_slope=0.2 with act='relu'; a slope needs act='lrelu'"),
        ({"act": "lrelu", "negative_slope": float("nan")}, r"negative_slope must be a finite number >= 0"),
        ({"act": "lrelu", "negative_slope": -0.1}, r"negative_slope must be a finite number >= 0.*got -0.1"),
        ({"scale": 0.0}, r"scale must be a positive finite number.*got 0.0"),
        ({"scale": -1.0}, r"scale must be a positive finite number"),
        ({"dim": 3}, r"dim=3 is out of range for x of shape \(2, 4, 3\)"),
        ({"bias": torch.zeros(3)}, r"bias has shape \(3,\); expected \(4,\), the size of x's dimension 1"),
        ({"bias": torch.zeros(4, dtype=torch.float64)}, r"float64 mixed with other dtypes"),
        ({"bias": torch.zeros(4, dtype=torch.int64)}, r"bias must be a floating-point tensor or None"),
        ({"x": torch.zeros(2, 4, 3, dtype=torch.int32)}, r"x must be a float16/bfloat16/float32/float64 tensor"),
        ({"x": torch.zeros(())}, r"x must have at least one dimension"),
        ({"backend": "triton"}, r"unknown backend 'triton'; expected one of auto, torch, cuda"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    args = {"x": torch.zeros(2, 4, 3), "bias": torch.zeros(4), **kwargs}
    with pytest.raises(SvrtValueError, match=match):
        fused_bias_act(args.pop("x"), args.pop("bias"), **args)


def test_cuda_backend_without_a_gpu_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match=r"fused_bias_act: backend 'cuda' needs a CUDA device"):
        fused_bias_act(torch.zeros(2, 3), torch.zeros(3), backend="cuda")


@needs_cuda
def test_cuda_kernel_is_auto_on_cuda_and_writes_every_element() -> None:
    poison = torch.full((1 << 26,), float("nan"), device="cuda")
    del poison
    x, b = make((4, 64, 33, 47), 1, "cuda", torch.float32, seed=8)
    got = fused_bias_act(x, b, act="lrelu", scale=2**0.5)
    assert torch.equal(got, fused_bias_act(x, b, act="lrelu", scale=2**0.5, backend="cuda"))
    assert torch.isfinite(got).all()
    assert_close_rel(got, reference(x, b, 0.2, 2**0.5, 1), TOL[torch.float32])


@needs_cuda
def test_cuda_unaligned_views_take_the_element_path() -> None:
    x, _ = make((3, 1001), 0, "cuda", torch.float16, seed=9, bias=False)
    flat = x.view(-1)[1:]  # contiguous, not 16-byte aligned
    assert flat.is_contiguous() and flat.data_ptr() % 16
    assert torch.equal(fused_bias_act(flat, None, act="relu", dim=0, backend="cuda"), F.relu(flat))
