"""Deformable convolution: the torch reference against a slow direct loop, the CUDA kernels against the
reference and torchvision, gradients by ``gradcheck``, and the argument errors."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kernels import deform_conv_cuda
from kernels.deform_conv import deform_conv2d
from kernels.deform_conv_ref import conv_out_size, deform_conv2d_reference
from svrt_errors import BackendUnavailableError, SvrtValueError

needs_cuda = pytest.mark.needs_cuda

# (device, backend) pairs that one test body runs over
PATHS = [
    pytest.param("cpu", "reference", id="cpu-reference"),
    pytest.param("cuda", "reference", id="cuda-reference", marks=needs_cuda),
    pytest.param("cuda", "cuda", id="cuda-kernel", marks=needs_cuda),
]

# max |got - want| / max |want| allowed per compute dtype (inputs cast from float64)
TOL = {torch.float64: 1e-11, torch.float32: 5e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}

# name: (B, C_in, C_out, H, W, kh, kw, groups, offset_groups, stride, padding, dilation)
CONFIGS = {
    "plain": (2, 4, 3, 6, 7, 3, 3, 1, 1, 1, 1, 1),
    "offset-groups": (2, 4, 4, 5, 6, 3, 3, 1, 2, 1, 1, 1),
    "weight-groups": (1, 6, 4, 5, 5, 3, 3, 2, 3, 1, 0, 1),
    "stride-dilation": (2, 3, 2, 9, 8, 3, 2, 1, 1, (2, 1), (2, 1), (1, 2)),
    "odd-1x1": (3, 2, 5, 3, 1, 1, 1, 1, 2, 1, 0, 1),
    "vrt-like": (2, 32, 8, 11, 13, 3, 3, 1, 16, 1, 1, 1),
}


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else v


def make_case(
    config: tuple,
    *,
    mask: bool = True,
    bias: bool = True,
    offset_scale: float = 3.0,
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> dict:
    """Random float64 arguments; offsets uniform in +-offset_scale pixels, so border taps sample outside."""
    B, C, Cout, H, W, kh, kw, groups, G, stride, padding, dilation = config
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    Ho, Wo = conv_out_size(H, kh, sh, ph, dh), conv_out_size(W, kw, sw, pw, dw)
    gen = torch.Generator().manual_seed(seed)
    K = kh * kw
    args = {
        "input": torch.randn(B, C, H, W, generator=gen, dtype=torch.float64),
        "offset": (torch.rand(B, 2 * G * K, Ho, Wo, generator=gen, dtype=torch.float64) * 2 - 1) * offset_scale,
        "weight": torch.randn(Cout, C // groups, kh, kw, generator=gen, dtype=torch.float64),
        "bias": torch.randn(Cout, generator=gen, dtype=torch.float64) if bias else None,
        "mask": torch.rand(B, G * K, Ho, Wo, generator=gen, dtype=torch.float64) if mask else None,
    }
    args = {k: None if v is None else v.to(device=device, dtype=dtype) for k, v in args.items()}
    return {**args, "stride": stride, "padding": padding, "dilation": dilation}


def expected_fn(input, offset, weight, bias, stride, padding, dilation, mask) -> np.ndarray:
    """Direct float64 loop over every output element, written from the definition (no columns, no torch)."""
    x = input.detach().cpu().double().numpy()
    off = offset.detach().cpu().double().numpy()
    w = weight.detach().cpu().double().numpy()
    m = None if mask is None else mask.detach().cpu().double().numpy()
    b = None if bias is None else bias.detach().cpu().double().numpy()
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    B, C, H, W = x.shape
    Cout, Cg, kh, kw = w.shape
    K = kh * kw
    G = off.shape[1] // (2 * K)
    per_group_out = Cout // (C // Cg)
    Ho, Wo = off.shape[2:]

    def sample(bi: int, c: int, y: float, xx: float) -> float:
        y0, x0 = math.floor(y), math.floor(xx)
        total = 0.0
        for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            for xi, wx in ((x0, 1 - (xx - x0)), (x0 + 1, xx - x0)):
                if 0 <= yi < H and 0 <= xi < W:
                    total += wy * wx * x[bi, c, yi, xi]
        return total

    out = np.zeros((B, Cout, Ho, Wo))
    for bi in range(B):
        for o in range(Cout):
            for i in range(Ho):
                for j in range(Wo):
                    acc = 0.0 if b is None else b[o]
                    for cl in range(Cg):
                        c = (o // per_group_out) * Cg + cl
                        g = c // (C // G)
                        for ki in range(kh):
                            for kj in range(kw):
                                k = ki * kw + kj
                                y = i * sh - ph + ki * dh + off[bi, 2 * (g * K + k), i, j]
                                xx = j * sw - pw + kj * dw + off[bi, 2 * (g * K + k) + 1, i, j]
                                scale = 1.0 if m is None else m[bi, g * K + k, i, j]
                                acc += w[o, cl, ki, kj] * scale * sample(bi, c, y, xx)
                    out[bi, o, i, j] = acc
    return out


def assert_close_rel(got: torch.Tensor, want: torch.Tensor, tol: float, what: str = "") -> None:
    """max |got - want| <= tol * max |want| (and no NaN)."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    assert got.shape == want.shape, what
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    err = (got - want).abs().max().item() if got.numel() else 0.0
    scale = want.abs().max().item() if want.numel() else 0.0
    assert err <= tol * max(scale, 1e-30), f"{what}: max abs error {err:.3e} > {tol:.1e} * {scale:.3e}"


def _call(case: dict, backend: str) -> torch.Tensor:
    return deform_conv2d(**case, backend=backend)


# ---------------------------------------------------------------- reference vs direct loop (CPU)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("mask,bias", [(True, True), (False, False)])
def test_reference_matches_direct_loop(name: str, mask: bool, bias: bool) -> None:
    case = make_case(CONFIGS[name], mask=mask, bias=bias, seed=1)
    got = deform_conv2d_reference(**case)
    np.testing.assert_allclose(got.numpy(), expected_fn(**case), rtol=1e-12, atol=1e-12)


def test_far_offsets_give_bias_only() -> None:
    case = make_case(CONFIGS["plain"], seed=2)
    case["offset"] = case["offset"] + 1e3  # every sample far outside the image
    out = deform_conv2d(**case, backend="reference")
    torch.testing.assert_close(out, case["bias"].view(1, -1, 1, 1).expand_as(out), rtol=0, atol=0)


def test_reference_gradcheck() -> None:
    case = make_case((1, 2, 2, 3, 4, 3, 3, 1, 2, 1, 1, 1), offset_scale=1.5, seed=3)
    tensors = {k: case[k].requires_grad_() for k in ("input", "offset", "weight", "bias", "mask")}

    def fn(input, offset, weight, bias, mask):
        return deform_conv2d_reference(input, offset, weight, bias, 1, 1, 1, mask)

    # fast mode (random projections of the Jacobian) keeps this CPU test short; the CUDA op gets the full one
    assert torch.autograd.gradcheck(fn, tuple(tensors.values()), eps=1e-6, atol=1e-8, fast_mode=True)


# ---------------------------------------------------------------- every path (CPU reference, CUDA)


@pytest.mark.parametrize("device,backend", PATHS)
@pytest.mark.parametrize("with_mask", [False, True])
def test_zero_offsets_equal_conv2d(device: str, backend: str, with_mask: bool) -> None:
    config = (2, 6, 4, 7, 9, 3, 3, 2, 3, (1, 2), 1, (2, 1))
    case = make_case(config, mask=with_mask, device=device, seed=4)
    case["offset"] = torch.zeros_like(case["offset"])
    if with_mask:
        case["mask"] = torch.ones_like(case["mask"])
    want = F.conv2d(case["input"], case["weight"], case["bias"], (1, 2), 1, (2, 1), groups=2)
    assert_close_rel(_call(case, backend), want, 1e-12)


@pytest.mark.parametrize("device,backend", PATHS)
def test_empty_batch(device: str, backend: str) -> None:
    case = make_case(CONFIGS["offset-groups"], device=device)
    for key in ("input", "offset", "mask"):
        case[key] = case[key][:0].requires_grad_()
    out = _call(case, backend)
    assert out.shape == (0, 4, 5, 6)
    out.sum().backward()
    assert case["input"].grad.shape == case["input"].shape


@pytest.mark.parametrize("device,backend", PATHS)
def test_non_contiguous_inputs(device: str, backend: str) -> None:
    case = make_case(CONFIGS["plain"], device=device, seed=5)
    want = _call(case, backend)
    strided = dict(case)
    for key in ("input", "offset", "mask", "weight"):
        t = case[key]
        strided[key] = t.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, column-major
        assert not strided[key].is_contiguous()
    strided["bias"] = torch.stack([case["bias"], case["bias"]], 1)[:, 0]
    assert_close_rel(_call(strided, backend), want, 1e-14)


def test_auto_is_reference_on_cpu() -> None:
    case = make_case(CONFIGS["plain"], seed=6)
    assert torch.equal(deform_conv2d(**case), deform_conv2d_reference(**case))


# ---------------------------------------------------------------- errors


def _bad(key: str, value) -> dict:
    case = make_case(CONFIGS["offset-groups"])  # B=2, C=4, Cout=4, 5x6, 3x3, G=2, Ho x Wo = 5x6
    case[key] = value
    return case


@pytest.mark.parametrize(
    "case,match",
    [
        (_bad("offset", torch.zeros(2, 17, 5, 6, dtype=torch.float64)), r"offset has shape \(2, 17, 5, 6\)"),
        (_bad("offset", torch.zeros(2, 36, 5, 5, dtype=torch.float64)), r"expected \(B, 2\*G\*kh\*kw, Ho, Wo\)"),
        (_bad("offset", torch.zeros(2, 54, 5, 6, dtype=torch.float64)), r"G \(offset groups\) >= 1 dividing C_in=4"),
        (_bad("offset", torch.zeros(1, 36, 5, 6, dtype=torch.float64)), r"= \(2, 2\*G\*9, 5, 6\)"),
        (_bad("mask", torch.zeros(2, 9, 5, 6, dtype=torch.float64)), r"mask has shape \(2, 9, 5, 6\);.*18, 5, 6\)"),
        (_bad("mask", torch.zeros(2, 18, 6, 5, dtype=torch.float64)), r"mask has shape"),
        (_bad("bias", torch.zeros(3, dtype=torch.float64)), r"bias has shape \(3,\); expected \(4,\)"),
        (_bad("weight", torch.zeros(4, 3, 3, 3, dtype=torch.float64)), r"weight of shape \(4, 3, 3, 3\) does not fit"),
        (_bad("input", torch.zeros(2, 4, 5, dtype=torch.float64)), r"input must be a 4-D tensor; got \(2, 4, 5\)"),
        (_bad("mask", torch.zeros(2, 18, 5, 6, dtype=torch.int64)), r"mask must be a floating-point tensor"),
        (_bad("stride", 0), r"stride=0 is invalid"),
        (_bad("padding", (1, -1)), r"padding=\(1, -1\) is invalid"),
        ({**_bad("input", torch.zeros(2, 4, 2, 2, dtype=torch.float64)), "padding": 0}, r"too small for a 3x3 kernel"),
    ],
)
def test_bad_arguments_raise(case: dict, match: str) -> None:
    with pytest.raises(SvrtValueError, match=match):
        deform_conv2d(**case, backend="reference")


def test_unknown_backend_raises() -> None:
    with pytest.raises(SvrtValueError, match=r"unknown backend 'triton'; expected one of auto, reference, cuda"):
        deform_conv2d(**make_case(CONFIGS["plain"]), backend="triton")


def test_cuda_backend_rejects_cpu_tensors() -> None:
    with pytest.raises(SvrtValueError, match=r"backend 'cuda' needs CUDA tensors; got input on cpu"):
        deform_conv2d(**make_case(CONFIGS["plain"]), backend="cuda")


@pytest.fixture
def without_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    monkeypatch.setattr(deform_conv_cuda, "cp", None)
    monkeypatch.setattr(deform_conv_cuda, "_cupy_missing", None)


def test_missing_cupy_is_reported_with_install_hint(without_cupy: None) -> None:
    assert not deform_conv_cuda.cupy_available()
    with pytest.raises(BackendUnavailableError, match=r'needs CuPy.*pip install "svrt\[cuda\]"'):
        deform_conv_cuda._import_cupy()


# ---------------------------------------------------------------- CUDA kernel


def _grads(case: dict, backend: str, grad_out: torch.Tensor) -> dict[str, torch.Tensor]:
    leaves = {k: v.detach().clone().requires_grad_() for k, v in case.items() if isinstance(v, torch.Tensor)}
    out = deform_conv2d(**{**case, **leaves}, backend=backend)
    out.backward(grad_out.to(out.dtype))
    return {"output": out.detach(), **{k: v.grad for k, v in leaves.items()}}


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("mask", [True, False])
def test_cuda_matches_reference(name: str, dtype: torch.dtype, mask: bool) -> None:
    case64 = make_case(CONFIGS[name], mask=mask, device="cuda", seed=7)
    grad_out = torch.randn_like(deform_conv2d(**case64, backend="reference"))
    want = _grads(case64, "reference", grad_out)
    case = {k: v.to(dtype) if isinstance(v, torch.Tensor) else v for k, v in case64.items()}
    got = _grads(case, "cuda", grad_out)
    for key, value in want.items():
        assert got[key].dtype == dtype
        assert_close_rel(got[key], value, TOL[dtype], f"{name} {key}")


@needs_cuda
def test_cuda_integer_positions_follow_reference_gradient() -> None:
    """Zero offsets with padding put border taps exactly at -1: the gradient convention of the reference."""
    case = make_case((1, 3, 2, 5, 6, 3, 3, 1, 1, 1, 1, 1), device="cuda", seed=8)
    case["offset"] = torch.zeros_like(case["offset"])
    grad_out = torch.randn(1, 2, 5, 6, device="cuda", dtype=torch.float64)
    want, got = _grads(case, "reference", grad_out), _grads(case, "cuda", grad_out)
    for key in want:
        assert_close_rel(got[key], want[key], 1e-12, key)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_cuda_smooth_offsets_gradients(dtype: torch.dtype) -> None:
    """Flow-like offsets (one shift per sample plus small noise): neighbouring pixels share corners, the
    case where the backward kernel merges the input-gradient updates of neighbouring lanes."""
    case = make_case((2, 8, 4, 9, 37, 3, 3, 1, 4, 1, 1, 1), device="cuda", seed=18)
    shift = torch.tensor([0.3, -1.7], dtype=torch.float64, device="cuda").repeat(4 * 9).view(1, -1, 1, 1)
    case["offset"] = shift + 0.05 * case["offset"]
    grad_out = torch.randn(2, 4, 9, 37, device="cuda", dtype=torch.float64)
    want = _grads(case, "reference", grad_out)
    got = _grads({k: v.to(dtype) if isinstance(v, torch.Tensor) else v for k, v in case.items()}, "cuda", grad_out)
    for key in want:
        assert_close_rel(got[key], want[key], TOL[dtype], key)


@needs_cuda
def test_cuda_chunked_batch_equals_whole_batch() -> None:
    case = make_case((5, 4, 3, 6, 7, 3, 3, 1, 2, 1, 1, 1), device="cuda", seed=9)
    leaves = {k: case[k].clone().requires_grad_() for k in ("input", "offset", "weight", "bias", "mask")}
    pos = {"stride": 1, "padding": 1, "dilation": 1}
    results = []
    for limit in (deform_conv_cuda.MAX_COLUMN_ELEMENTS, 2 * 4 * 9 * 42, 1):  # whole, 2 samples, 1 sample
        out = deform_conv_cuda.deform_conv2d_cuda(**leaves, **pos, max_column_elements=limit)
        grads = torch.autograd.grad(out, list(leaves.values()), torch.ones_like(out))
        results.append((out, *grads))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert_close_rel(b, a, 1e-14)


@needs_cuda
@pytest.mark.parametrize("mask", [True, False])
def test_cuda_gradcheck(mask: bool) -> None:
    case = make_case((2, 4, 2, 5, 4, 3, 3, 2, 2, 1, 1, 1), mask=mask, offset_scale=2.0, device="cuda", seed=10)
    keys = [k for k in ("input", "offset", "weight", "bias", "mask") if case[k] is not None]
    tensors = tuple(case[k].requires_grad_() for k in keys)

    def fn(*args):
        return deform_conv2d(**{**case, **dict(zip(keys, args, strict=True))}, backend="cuda")

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-8, nondet_tol=1e-12)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("name", ["plain", "weight-groups", "stride-dilation", "vrt-like"])
def test_cuda_matches_torchvision(name: str, dtype: torch.dtype) -> None:
    ops = pytest.importorskip("torchvision.ops")
    case = make_case(CONFIGS[name], device="cuda", dtype=dtype, seed=11)
    grad_out = torch.randn_like(deform_conv2d(**case, backend="cuda"))
    got = _grads(case, "cuda", grad_out)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in case.items() if isinstance(v, torch.Tensor)}
    want = ops.deform_conv2d(**{**case, **leaves})
    want.backward(grad_out)
    assert_close_rel(got["output"], want, TOL[dtype], "output")
    for key, leaf in leaves.items():
        assert_close_rel(got[key], leaf.grad, 10 * TOL[dtype], key)


@pytest.mark.parametrize("device,backend", PATHS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_inputs_compute_in_float32(device: str, backend: str, dtype: torch.dtype) -> None:
    # 40 pixels wide with offsets up to 3: positions beyond 32 would round to 0.25 px in bfloat16
    case = make_case((2, 32, 8, 11, 40, 3, 3, 1, 16, 1, 1, 1), device=device, seed=12)
    for key in ("input", "offset", "mask"):
        case[key] = case[key].to(dtype)  # the weight and bias stay float32, as under autocast
    for key in ("weight", "bias"):
        case[key] = case[key].float()
    upcast = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in case.items()}
    grad_out = torch.randn(2, 8, 11, 40, device=device, dtype=torch.float64)
    want = _grads(upcast, "reference", grad_out)
    got = _grads(case, backend, grad_out.to(dtype))
    assert got["output"].dtype == dtype
    for key in want:
        assert got[key].dtype == case.get(key, case["input"]).dtype
        # the inputs are exact in both; only the rounding of the output/gradients to `dtype` differs
        assert_close_rel(got[key], want[key], TOL[dtype], key)


@needs_cuda
def test_cuda_under_autocast_returns_input_dtype() -> None:
    case = make_case(CONFIGS["plain"], device="cuda", dtype=torch.float32, seed=13)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        feats = F.conv2d(case["input"], torch.eye(4, device="cuda").view(4, 4, 1, 1))  # bf16 under autocast
        assert feats.dtype == torch.bfloat16
        out = deform_conv2d(**{**case, "input": feats}, backend="cuda")
    assert out.dtype == torch.bfloat16
    want = deform_conv2d(**{**case, "input": feats.float()}, backend="cuda")
    assert_close_rel(out, want, TOL[torch.bfloat16])


@needs_cuda
@pytest.mark.parametrize("tf32", [False, True])
def test_cuda_gemm_precision_follows_the_input_dtype(tf32: bool) -> None:
    """Half-precision input: TF32 GEMMs inside, the global setting untouched afterwards; float32 input:
    the global setting decides (off: float32 GEMMs, equal to float64 within float32 rounding)."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        case = make_case((2, 64, 16, 24, 24, 3, 3, 1, 16, 1, 1, 1), device="cuda", dtype=torch.float32, seed=15)
        half = deform_conv2d(**{**case, "input": case["input"].to(torch.bfloat16)}, backend="cuda")
        assert torch.backends.cuda.matmul.allow_tf32 is tf32
        upcast = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in case.items()}
        want = deform_conv2d(**{**upcast, "input": case["input"].to(torch.bfloat16).double()}, backend="cuda")
        assert_close_rel(half, want, TOL[torch.bfloat16])
        if not tf32:
            exact = deform_conv2d(**case, backend="cuda")
            assert_close_rel(exact, deform_conv2d(**upcast, backend="cuda"), TOL[torch.float32])
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


@needs_cuda
def test_cuda_writes_every_element() -> None:
    """The caching allocator hands back NaN-filled memory: an unwritten column would show."""
    poison = torch.full((1 << 26,), float("nan"), device="cuda")
    del poison
    # columns and gradients of > 1 MB come from the allocator's large pool, where the poison sits
    case = make_case((2, 32, 8, 40, 40, 3, 3, 1, 16, 1, 1, 1), device="cuda", dtype=torch.float32, seed=14)
    got = _grads(case, "cuda", torch.ones(2, 8, 40, 40, device="cuda"))
    for key, value in got.items():
        assert torch.isfinite(value).all(), key


@pytest.mark.parametrize("device,backend", PATHS)
def test_float64_mixed_with_float32_raises(device: str, backend: str) -> None:
    case = make_case(CONFIGS["plain"], device=device)
    case["weight"] = case["weight"].float()
    with pytest.raises(SvrtValueError, match=r"float64 mixed with other dtypes \(torch.float32, torch.float64\)"):
        deform_conv2d(**case, backend=backend)


@needs_cuda
def test_cuda_runs_on_torch_current_stream() -> None:
    case = make_case(CONFIGS["vrt-like"], device="cuda", dtype=torch.float32, seed=17)
    want = deform_conv2d(**case, backend="reference")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = deform_conv2d(**case, backend="cuda")
        assert deform_conv_cuda._cupy_stream(got.device).ptr == side.cuda_stream
        got = got * 1.0  # a torch op queued behind the kernels on the same stream
    torch.cuda.current_stream().wait_stream(side)
    assert_close_rel(got, want, TOL[torch.float32])


@needs_cuda
def test_auto_without_cupy_falls_back_to_reference(without_cupy: None) -> None:
    case = make_case(CONFIGS["plain"], device="cuda", seed=15)
    assert torch.equal(deform_conv2d(**case), deform_conv2d(**case, backend="reference"))
    with pytest.raises(BackendUnavailableError, match=r'pip install "svrt\[cuda\]"'):
        deform_conv2d(**case, backend="cuda")


@needs_cuda
def test_auto_uses_cuda_kernel_on_cuda_tensors() -> None:
    case = make_case(CONFIGS["plain"], device="cuda", seed=16)
    assert torch.equal(deform_conv2d(**case), deform_conv2d(**case, backend="cuda"))
