"""Guided deformable attention: a float64 loop written from the definition vs the ``grid_sample`` torch path
vs the CUDA kernels (GPU, and the CPU emulation), gradients of all four inputs (``gradcheck``), dtypes,
empty and odd shapes, and the argument errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kernels.deform_attn import check_deform_attn_args, deform_attn
from kernels.deform_attn_cuda import deform_attn_cuda
from svrt_errors import BackendUnavailableError, SvrtValueError
from tests.kernels.emulation import EmulatedRuntime

needs_cuda = pytest.mark.needs_cuda

PATHS = [
    pytest.param("cpu", "torch", id="cpu-torch"),
    pytest.param("cpu", "emulated", id="cpu-emulated-kernel"),
    pytest.param("cuda", "torch", id="cuda-torch", marks=needs_cuda),
    pytest.param("cuda", "cuda", id="cuda-kernel", marks=needs_cuda),
]
TOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}
KEYS = ("query", "key", "value", "offset")

# name: (B, C, H, W, N, (kh, kw), heads, groups)
CONFIGS = {
    "rvrt-like": (2, 8, 5, 6, 2, (3, 3), 4, 2),
    "one-frame-one-group": (1, 6, 4, 7, 1, (3, 3), 2, 1),
    "heads-equal-groups": (1, 8, 3, 5, 1, (3, 3), 4, 4),
    "odd-window": (2, 4, 6, 3, 3, (1, 3), 1, 1),
    "single-pixel": (1, 4, 1, 1, 2, (2, 2), 2, 2),
}


def make_case(name: str, *, device: str = "cpu", dtype: torch.dtype = torch.float64, seed: int = 0,
              offset_scale: float = 2.5) -> dict:
    B, C, H, W, N, ks, heads, groups = CONFIGS[name]
    gen = torch.Generator().manual_seed(seed)
    P = ks[0] * ks[1]

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    tensors = {
        "query": rand(B, C, H, W),
        "key": rand(B, N, C, H, W),
        "value": rand(B, N, C, H, W),
        "offset": (torch.rand(B, N * groups * P * 2, H, W, generator=gen, dtype=torch.float64) * 2 - 1) * offset_scale,
    }
    tensors = {k: v.to(device, dtype) for k, v in tensors.items()}
    return {**tensors, "kernel_size": ks, "heads": heads, "groups": groups}


def expected_fn(query, key, value, offset, kernel_size, heads, groups, scale=None) -> np.ndarray:
    """Direct float64 loops over every query pixel, head and sample (no torch, no grid_sample)."""
    q, k, v, off = (t.detach().cpu().double().numpy() for t in (query, key, value, offset))
    B, C, H, W = q.shape
    N = k.shape[1]
    kh, kw = kernel_size
    P, M, G = kh * kw, heads, groups
    D = C // M
    scale = D**-0.5 if scale is None else scale

    def bilinear(plane: np.ndarray, y: float, x: float) -> float:
        y0, x0 = math.floor(y), math.floor(x)
        total = 0.0
        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                if 0 <= yy < H and 0 <= xx < W:
                    total += wy * wx * plane[yy, xx]
        return total

    out = np.zeros((B, C, H, W))
    for b in range(B):
        for h in range(M):
            g = h // (M // G)
            chans = range(h * D, (h + 1) * D)
            for i in range(H):
                for j in range(W):
                    logits, values = [], []
                    for n in range(N):
                        for p in range(P):
                            ch = ((n * G + g) * P + p) * 2
                            y = i - kh // 2 + p // kw + off[b, ch, i, j]
                            x = j - kw // 2 + p % kw + off[b, ch + 1, i, j]
                            kvec = [bilinear(k[b, n, c], y, x) for c in chans]
                            logits.append(scale * sum(q[b, c, i, j] * kv for c, kv in zip(chans, kvec, strict=True)))
                            values.append([bilinear(v[b, n, c], y, x) for c in chans])
                    e = np.exp(np.array(logits) - max(logits))
                    a = e / e.sum()
                    out[b, h * D : (h + 1) * D, i, j] = a @ np.array(values)
    return out


def call(case: dict, backend: str, **overrides) -> torch.Tensor:
    args = {**case, **overrides}
    if backend == "emulated":
        ks, scale = check_deform_attn_args(*(args[k] for k in KEYS), args["kernel_size"], args["heads"],
                                           args["groups"], args.get("scale"))
        return deform_attn_cuda(*(args[k] for k in KEYS), ks, args["heads"], args["groups"], scale,
                                runtime=EmulatedRuntime())
    return deform_attn(**args, backend=backend)


def assert_close_rel(got: torch.Tensor, want, tol: float, what: str = "") -> None:
    got = got.detach().double().cpu()
    want = torch.as_tensor(want, dtype=torch.float64).cpu()
    assert got.shape == want.shape, what
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    err = (got - want).abs().max().item() if got.numel() else 0.0
    scale = want.abs().max().item() if want.numel() else 0.0
    assert err <= tol * max(scale, 1e-30), f"{what}: max abs error {err:.3e} > {tol:.1e} * {scale:.3e}"


def grads(case: dict, backend: str, grad_out: torch.Tensor) -> dict[str, torch.Tensor]:
    leaves = {k: case[k].detach().clone().requires_grad_() for k in KEYS}
    out = call({**case, **leaves}, backend)
    out.backward(grad_out.to(out.dtype))
    return {"output": out.detach(), **{k: v.grad for k, v in leaves.items()}}


# ---------------------------------------------------------------- the reference itself


def test_reference_zero_offsets_1x1_window_is_attention_over_frames() -> None:
    """With a 1x1 window and zero offsets, each query attends to the N keys at its own pixel."""
    case = make_case("odd-window")
    case.update(kernel_size=(1, 1), offset=torch.zeros(2, 3 * 1 * 1 * 2, 6, 3, dtype=torch.float64))
    q, k, v = case["query"], case["key"], case["value"]
    attn = torch.softmax((q.unsqueeze(1) * k).sum(2) * 4**-0.5, dim=1)  # B N H W
    want = (attn.unsqueeze(2) * v).sum(1)
    np.testing.assert_allclose(expected_fn(**case), want.numpy(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- every path against the reference


@pytest.mark.parametrize("device,backend", PATHS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_reference(device: str, backend: str, name: str) -> None:
    case = make_case(name, device=device, seed=1)
    assert_close_rel(call(case, backend), expected_fn(**case), TOL[torch.float64], name)


@pytest.mark.parametrize("device,backend", PATHS)
def test_custom_scale_and_far_offsets(device: str, backend: str) -> None:
    case = make_case("rvrt-like", device=device, seed=2)
    assert_close_rel(call(case, backend, scale=0.7), expected_fn(**case, scale=0.7), TOL[torch.float64])
    # every sample outside the image: zero keys (uniform softmax) and zero values
    far = {**case, "offset": case["offset"] + 100.0}
    assert torch.equal(call(far, backend), torch.zeros_like(case["query"]))


@pytest.mark.parametrize("device,backend", PATHS)
def test_empty_batch(device: str, backend: str) -> None:
    case = make_case("rvrt-like", device=device)
    empty = {**case, **{k: case[k][:0] for k in KEYS}}
    g = grads(empty, backend, torch.zeros(0, 8, 5, 6, dtype=torch.float64, device=device))
    assert g["output"].shape == (0, 8, 5, 6)
    assert all(g[k].shape == empty[k].shape for k in KEYS)


@pytest.mark.parametrize("device,backend", [p for p in PATHS if p.id != "cpu-torch" and p.id != "cuda-torch"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_kernel_gradients_match_torch_path(device: str, backend: str, name: str) -> None:
    case = make_case(name, device=device, seed=3)
    grad_out = torch.randn(case["query"].shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    want = grads(case, "torch", grad_out.to(device))
    got = grads(case, backend, grad_out.to(device))
    for key in want:
        assert_close_rel(got[key], want[key], 1e-11, f"{name} {key}")


@pytest.mark.parametrize("device,backend", PATHS)
def test_gradcheck(device: str, backend: str) -> None:
    case = make_case("rvrt-like" if device == "cuda" else "single-pixel", device=device, seed=5)
    tensors = tuple(case[k].requires_grad_() for k in KEYS)

    def fn(*args):
        return call({**case, **dict(zip(KEYS, args, strict=True))}, backend)

    # fast mode on the CPU (a random projection of the Jacobian); atomics reorder float64 sums on the GPU
    assert torch.autograd.gradcheck(fn, tensors, fast_mode=device == "cpu", nondet_tol=1e-12)


@pytest.mark.parametrize("device,backend", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_lower_precision_inputs_compute_in_float32(device: str, backend: str, dtype: torch.dtype) -> None:
    """Features in ``dtype``, offsets in float32 (as the alignment module passes them: bfloat16 offsets would
    put many samples exactly on integer positions, where the bilinear position gradient jumps)."""
    case = make_case("rvrt-like", device=device, seed=6)
    case.update({k: case[k].to(dtype) for k in KEYS[:3]}, offset=case["offset"].float())
    grad_out = torch.randn(case["query"].shape, generator=torch.Generator().manual_seed(7)).to(device, dtype)
    upcast = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in case.items()}
    want = grads(upcast, "torch", grad_out.double())
    got = grads(case, backend, grad_out)
    for key in want:
        assert got[key].dtype == case.get(key, case["query"]).dtype, key
        assert_close_rel(got[key], want[key], TOL[dtype], key)


# ---------------------------------------------------------------- errors


def _bad(**changes) -> dict:
    case = make_case("rvrt-like")  # B=2, C=8, 5x6, N=2, 3x3, heads 4, groups 2
    case.update(changes)
    return case


@pytest.mark.parametrize(
    "case,match",
    [
        (_bad(key=torch.zeros(2, 2, 8, 5, 7, dtype=torch.float64)), r"key has shape \(2, 2, 8, 5, 7\); expected "
                                                                    r"\(B, N, C, H, W\) = \(2, N, 8, 5, 6\)"),
        (_bad(value=torch.zeros(2, 3, 8, 5, 6, dtype=torch.float64)), r"value has shape.*key has N=2"),
        (_bad(query=torch.zeros(2, 8, 5, dtype=torch.float64)), r"query must be a 4-D floating-point tensor"),
        (_bad(offset=torch.zeros(2, 36, 5, 6, dtype=torch.float64)), r"offset has shape \(2, 36, 5, 6\); expected "
                                                                     r"\(B, N\*G\*kh\*kw\*2, H, W\) = \(2, 72, 5, 6\)"),
        (_bad(heads=3), r"heads=3 must be a positive int dividing the 8 channels"),
        (_bad(groups=3), r"groups=3 must be a positive int dividing heads=4"),
        (_bad(kernel_size=(3, 0)), r"kernel_size=\(3, 0\) is invalid"),
        (_bad(kernel_size=(7, 7), offset=torch.zeros(2, 392, 5, 6, dtype=torch.float64)),
         r"2 frames x 7x7 taps = 98 samples per query; at most 64"),
        (_bad(offset=torch.zeros(2, 72, 5, 6, dtype=torch.float32)), r"float64 mixed with other dtypes"),
        (_bad(scale="big"), r"scale must be a number or None"),
    ],
)
def test_bad_arguments_raise(case: dict, match: str) -> None:
    with pytest.raises(SvrtValueError, match=match):
        deform_attn(**case)


def test_unknown_backend_raises() -> None:
    with pytest.raises(SvrtValueError, match=r"unknown backend 'triton'; expected one of auto, torch, cuda"):
        deform_attn(**make_case("rvrt-like"), backend="triton")


def test_cuda_backend_without_a_gpu_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match=r"deform_attn: backend 'cuda' needs a CUDA device"):
        deform_attn(**make_case("rvrt-like"), backend="cuda")


# ---------------------------------------------------------------- CUDA only


@needs_cuda
def test_cuda_is_auto_and_writes_every_element() -> None:
    poison = torch.full((1 << 26,), float("nan"), device="cuda")
    del poison
    B, C, H, W, N, G = 2, 64, 48, 40, 2, 8
    gen = torch.Generator(device="cuda").manual_seed(8)
    case = {
        "query": torch.randn(B, C, H, W, device="cuda", generator=gen),
        "key": torch.randn(B, N, C, H, W, device="cuda", generator=gen),
        "value": torch.randn(B, N, C, H, W, device="cuda", generator=gen),
        "offset": 3 * torch.randn(B, N * G * 9 * 2, H, W, device="cuda", generator=gen),
        "heads": 8, "groups": G,
    }
    got = grads(case, "auto", torch.ones(B, C, H, W, device="cuda"))
    want = grads(case, "torch", torch.ones(B, C, H, W, device="cuda"))
    for key in want:
        assert torch.isfinite(got[key]).all(), key
        assert_close_rel(got[key], want[key], 1e-4, key)
