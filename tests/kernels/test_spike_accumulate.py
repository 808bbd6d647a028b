"""Spike accumulator: the float64 loop reference vs the torch path vs the CUDA kernels (on the GPU, and on
the CPU through the C++ emulation of ``tests/kernels/emulation.py``), gamma = 1 against the stored count
voxels, gradients by ``gradcheck``, dtypes, and the argument errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from kernels import cuda_runtime
from kernels.spike_accumulate import spike_accumulate
from kernels.spike_accumulate_cuda import spike_accumulate_cuda
from kernels.spike_accumulate_ref import spike_accumulate_gamma_grad_reference, spike_accumulate_reference
from svrt_errors import BackendUnavailableError, SvrtValueError
from tests.kernels.emulation import EmulatedRuntime

needs_cuda = pytest.mark.needs_cuda

# (device, backend): "emulated" is the CUDA path with the kernels compiled as C++ on the CPU
PATHS = [
    pytest.param("cpu", "torch", id="cpu-torch"),
    pytest.param("cpu", "emulated", id="cpu-emulated-kernel"),
    pytest.param("cuda", "torch", id="cuda-torch", marks=needs_cuda),
    pytest.param("cuda", "cuda", id="cuda-kernel", marks=needs_cuda),
]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# max |got - want| / max |want| per output dtype (the reference is float64)
TOL = {torch.float64: 1e-13, torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}

# name: (B, S, H, W, T, K)
SHAPES = {
    "plain": (2, 23, 5, 16, 3, 4),
    "odd-width": (2, 19, 3, 13, 2, 5),
    "one-pixel": (1, 9, 1, 1, 2, 3),
    "wide-rows": (1, 12, 8, 300, 1, 2),  # 304 bytes a frame: two blocks of 256 threads
}


def make_case(name: str, *, seed: int = 0, density: float = 0.35, device: str = "cpu") -> dict:
    """Random packed bits (padding bits of odd widths set at random too, so they must be dropped) and
    ranges of adjacent bins of 0-4 frames from a random start per (b, t), clipped at S."""
    B, S, H, W, T, K = SHAPES[name]
    rng = np.random.default_rng(seed)
    Wb = -(-W // 8)
    bits = np.packbits(rng.random((B, S, H, 8 * Wb)) < density, axis=-1, bitorder="little")
    lengths = rng.integers(0, 5, size=(B, T, K))
    starts = rng.integers(0, S, size=(B, T, 1))
    stops = np.minimum(starts + np.cumsum(lengths, axis=-1), S)
    firsts = np.concatenate([starts, stops[..., :-1]], axis=-1)
    ranges = np.stack([firsts, stops], axis=-1).astype(np.int64)
    gamma = rng.uniform(0.2, 1.0, size=K)
    gamma[0] = 1.0
    return {
        "bits": torch.from_numpy(bits).to(device),
        "ranges": torch.from_numpy(ranges).to(device),
        "gamma": torch.from_numpy(gamma).to(device),
        "width": W,
    }


def reference(case: dict) -> torch.Tensor:
    return torch.from_numpy(
        spike_accumulate_reference(case["bits"].cpu().numpy(), case["ranges"].cpu().numpy(),
                                   case["gamma"].detach().cpu().double().numpy(), case["width"])
    )


def run(case: dict, backend: str, gamma: torch.Tensor | None = None, **kw) -> torch.Tensor:
    g = case["gamma"] if gamma is None else gamma
    if backend == "emulated":
        dtype = torch.float64 if g.dtype == torch.float64 else torch.float32
        return spike_accumulate_cuda(case["bits"], case["ranges"], g, case["width"], kw.pop("dtype", dtype),
                                     runtime=EmulatedRuntime(), **kw)
    return spike_accumulate(case["bits"], case["ranges"], g, width=case["width"], backend=backend, **kw)


def assert_close_rel(got: torch.Tensor, want: torch.Tensor, tol: float, what: str = "") -> None:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    assert got.shape == want.shape, what
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    err = (got - want).abs().max().item() if got.numel() else 0.0
    scale = want.abs().max().item() if want.numel() else 0.0
    assert err <= tol * max(scale, 1e-30), f"{what}: max abs error {err:.3e} > {tol:.1e} * {scale:.3e}"


# ---------------------------------------------------------------- the reference itself


def test_reference_on_a_hand_computed_case() -> None:
    # one pixel, frames 0..4 with spikes at 0, 2, 3; bin [0, 4) with gamma 0.5: 0.5**3 + 0.5**1 + 0.5**0
    bits = torch.tensor([1, 0, 1, 1, 0], dtype=torch.uint8).view(1, 5, 1, 1)
    ranges = torch.tensor([[[[0, 4], [4, 5], [2, 2]]]])
    got = spike_accumulate_reference(bits.numpy(), ranges.numpy(), np.array([0.5, 0.5, 0.5]), width=1)
    np.testing.assert_array_equal(got.reshape(3), [1.625, 0.0, 0.0])


# ---------------------------------------------------------------- every path against the reference


@pytest.mark.parametrize("device,backend", PATHS)
@pytest.mark.parametrize("name", list(SHAPES))
def test_matches_reference(device: str, backend: str, name: str) -> None:
    case = make_case(name, device=device, seed=1)
    got = run(case, backend)
    assert got.dtype == torch.float64 and got.shape == reference(case).shape
    assert_close_rel(got, reference(case), TOL[torch.float64], name)


@pytest.mark.parametrize("device,backend", PATHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("staged", [True, False])
def test_output_dtypes(device: str, backend: str, dtype: torch.dtype, staged: bool) -> None:
    if backend == "torch" and not staged:
        pytest.skip("the store path is a kernel option")
    case = make_case("plain", device=device, seed=2)
    gamma = case["gamma"].to(torch.float64 if dtype == torch.float64 else torch.float32)
    if backend == "torch":
        with torch.autocast(device, dtype=dtype, enabled=dtype in (torch.float16, torch.bfloat16)):
            got = run(case, backend, gamma)
    else:
        rt = EmulatedRuntime() if backend == "emulated" else None
        got = spike_accumulate_cuda(case["bits"], case["ranges"], gamma, case["width"], dtype, staged=staged,
                                    runtime=rt)
    assert got.dtype == dtype
    # compare with the reference on the gamma the path computed with (float32 rounds it)
    assert_close_rel(got, reference({**case, "gamma": gamma}), TOL[dtype], str(dtype))


@pytest.mark.parametrize("device,backend", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_gamma_one_counts_are_exact(device: str, backend: str, dtype: torch.dtype) -> None:
    case = make_case("odd-width", device=device, seed=3, density=0.9)
    ones = torch.ones_like(case["gamma"], dtype=torch.float32)
    if backend == "emulated":
        got = spike_accumulate_cuda(case["bits"], case["ranges"], ones, case["width"], dtype,
                                    runtime=EmulatedRuntime())
    else:
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            got = run(case, backend, ones)
    assert got.dtype == dtype
    assert torch.equal(got.double().cpu(), reference({**case, "gamma": ones}))


@pytest.mark.parametrize("device,backend", PATHS)
def test_empty_batch_and_empty_ranges(device: str, backend: str) -> None:
    case = make_case("plain", device=device)
    empty = {**case, "bits": case["bits"][:0], "ranges": case["ranges"][:0]}
    gamma = case["gamma"].clone().requires_grad_()
    out = run(empty, backend, gamma)
    assert out.shape == (0, 3, 4, 5, 16)
    out.sum().backward()
    assert torch.equal(gamma.grad, torch.zeros_like(gamma))
    # every range empty (and S = 0): zeros, gradient zero
    none = {**case, "bits": case["bits"][:, :0], "ranges": torch.zeros_like(case["ranges"])}
    gamma.grad = None
    out = run(none, backend, gamma)
    assert out.shape == (2, 3, 4, 5, 16) and not out.any()
    out.sum().backward()
    assert torch.equal(gamma.grad, torch.zeros_like(gamma))


def test_gamma_zero_keeps_each_bins_last_frame() -> None:
    case = make_case("plain", seed=4)
    got = run(case, "torch", torch.zeros(4, dtype=torch.float64))
    bits, ranges = case["bits"], case["ranges"]
    last = torch.zeros_like(got)
    for b, t, k in np.ndindex(*ranges.shape[:3]):
        r0, r1 = ranges[b, t, k].tolist()
        if r1 > r0:
            frame = np.unpackbits(bits[b, r1 - 1].numpy(), axis=-1, bitorder="little")
            last[b, t, k] = torch.from_numpy(frame.astype(np.float64))
    assert torch.equal(got, last)


# ---------------------------------------------------------------- gamma = 1 is the stored count voxels


def test_gamma_one_equals_voxelize_counts_through_spike_transform() -> None:
    from svrt_data import SpikeTransform, voxelize

    rng = np.random.default_rng(5)
    B, S, H, W, T, K = 2, 120, 4, 24, 3, 8
    bits = torch.from_numpy(np.packbits(rng.random((B, S, H, W)) < 0.4, axis=-1, bitorder="little"))
    starts = rng.uniform(0, 40, size=(B, T, 1))
    windows = np.concatenate([starts, starts + rng.uniform(20, 70, size=(B, T, 1))], axis=-1)
    batch = {"spike_bits": bits, "spike_windows": torch.from_numpy(windows)}
    out = SpikeTransform(spike_input="raw", bins=K, raw_output="bits")(batch)
    counts = spike_accumulate(out["spike_bits"], out["spike_bin_ranges"], torch.ones(K))
    for b in range(B):
        want = voxelize(bits[b].numpy(), windows[b], bins=K, mode="count", backend="numpy")
        assert torch.equal(counts[b], torch.from_numpy(want).float())
    emulated = spike_accumulate_cuda(out["spike_bits"], out["spike_bin_ranges"], torch.ones(K), W, torch.float32,
                                     runtime=EmulatedRuntime())
    assert torch.equal(emulated, counts)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("device,backend", PATHS)
@pytest.mark.parametrize("name", ["plain", "odd-width"])
def test_gamma_gradient_matches_reference(device: str, backend: str, name: str) -> None:
    case = make_case(name, device=device, seed=6)
    gamma = case["gamma"].clone().requires_grad_()
    out = run(case, backend, gamma)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out.backward(grad_out.to(device))
    want = spike_accumulate_gamma_grad_reference(case["bits"].cpu().numpy(), case["ranges"].cpu().numpy(),
                                                 case["gamma"].cpu().numpy(), grad_out.numpy(), case["width"])
    assert_close_rel(gamma.grad, torch.from_numpy(want), 1e-12)


@pytest.mark.parametrize("device,backend", PATHS)
def test_gradcheck(device: str, backend: str) -> None:
    # the emulation gets a small case: a failing fast-mode check recomputes the Jacobian one output at a time
    case = make_case("one-pixel" if backend == "emulated" else "odd-width", device=device, seed=7)
    gamma = case["gamma"].clone().requires_grad_()
    # fast mode (one random projection) keeps the CPU runs short; exact Jacobians on the GPU
    fast = device == "cpu"
    assert torch.autograd.gradcheck(lambda g: run(case, backend, g), (gamma,), fast_mode=fast)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_float32_gradient_for_half_outputs(dtype: torch.dtype) -> None:
    """A float32 gamma under autocast: bf16 output, float32 gradient close to the float64 one."""
    case = make_case("plain", seed=8)
    g32 = case["gamma"].float().requires_grad_()
    got = spike_accumulate_cuda(case["bits"], case["ranges"], g32, case["width"], dtype, runtime=EmulatedRuntime())
    got.float().sum().backward()
    g64 = case["gamma"].clone().requires_grad_()
    run(case, "torch", g64).sum().backward()
    assert g32.grad.dtype == torch.float32
    assert_close_rel(g32.grad, g64.grad, 1e-5)


def test_bits_and_ranges_get_no_gradient() -> None:
    case = make_case("plain")
    out = spike_accumulate(case["bits"], case["ranges"], case["gamma"], width=16)
    assert not out.requires_grad


# ---------------------------------------------------------------- launch geometry (emulated)


def test_launch_geometry_covers_every_bin_beyond_the_grid_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from kernels import spike_accumulate_cuda as sac

    monkeypatch.setattr(sac, "MAX_GRID_Y", 5)  # 24 bins: the kernels' grid-stride loop must cover the rest
    case = make_case("plain", seed=9)
    rt = EmulatedRuntime()
    gamma = case["gamma"].clone().requires_grad_()
    out = spike_accumulate_cuda(case["bits"], case["ranges"], gamma, 16, torch.float64, runtime=rt)
    assert [launch[1] for launch in rt.launches] == [(1, 5)]
    assert_close_rel(out, reference(case), TOL[torch.float64])
    out.sum().backward()
    want = spike_accumulate_gamma_grad_reference(case["bits"].numpy(), case["ranges"].numpy(),
                                                 case["gamma"].numpy(), np.ones(out.shape), 16)
    assert_close_rel(gamma.grad, torch.from_numpy(want), 1e-12)


# ---------------------------------------------------------------- errors


def _bad(**changes) -> dict:
    case = make_case("plain")  # B=2, S=23, H=5, Wb=2, T=3, K=4
    case.update(changes)
    return case


@pytest.mark.parametrize(
    "case,match",
    [
        (_bad(bits=torch.zeros(2, 23, 5, 2, dtype=torch.int16)), r"bits must be uint8 \(B, S, H, W/8\).*torch.int16"),
        (_bad(bits=torch.zeros(2, 23, 10, dtype=torch.uint8)), r"bits must be uint8.*shape \(2, 23, 10\)"),
        (_bad(ranges=torch.zeros(2, 3, 4, 2, dtype=torch.int32)), r"ranges must be int64 \(B, T, K, 2\) = \(2, T"),
        (_bad(ranges=torch.zeros(1, 3, 4, 2, dtype=torch.int64)), r"got torch.int64 of shape \(1, 3, 4, 2\)"),
        (_bad(gamma=torch.ones(5, dtype=torch.float64)), r"gamma must be a floating-point \(4,\) tensor.*shape \(5,\)"),
        (_bad(gamma=torch.ones(4, dtype=torch.int64)), r"gamma must be a floating-point \(4,\) tensor.*torch.int64"),
        (_bad(width=8), r"width=8 does not fit packed rows of 2 bytes; expected an int from 9 to 16"),
        (_bad(width=17), r"width=17 does not fit"),
        (_bad(bits=np.zeros((2, 23, 5, 2), np.uint8)), r"bits must be a torch tensor, got ndarray"),
    ],
)
def test_bad_arguments_raise(case: dict, match: str) -> None:
    with pytest.raises(SvrtValueError, match=match):
        spike_accumulate(case["bits"], case["ranges"], case["gamma"], width=case["width"])


@pytest.mark.parametrize(
    "pair,match",
    [
        ((5, 4), r"ranges\[0, 1, 2\] = \[5, 4\) is outside the 23 spike frames of bits; expected 0 <= r0 <= r1 <= 23"),
        ((-1, 4), r"= \[-1, 4\) is outside"),
        ((20, 24), r"= \[20, 24\) is outside.*SpikeTransform.bin_ranges"),
    ],
)
def test_bad_ranges_raise(pair: tuple[int, int], match: str) -> None:
    case = make_case("plain")
    case["ranges"][0, 1, 2] = torch.tensor(pair)
    with pytest.raises(SvrtValueError, match=match):
        spike_accumulate(case["bits"], case["ranges"], case["gamma"], width=16)


def test_unvalidated_bad_ranges_read_in_bounds() -> None:
    """validate=False skips the check; the kernels clamp the range into [0, S] instead of reading outside."""
    case = make_case("plain")
    case["ranges"][0, 0, 0] = torch.tensor([-50, 10_000])
    got = spike_accumulate_cuda(case["bits"], case["ranges"], case["gamma"], 16, torch.float64,
                                runtime=EmulatedRuntime())
    clamped = {**case, "ranges": case["ranges"].clone()}
    clamped["ranges"][0, 0, 0] = torch.tensor([0, 23])
    assert_close_rel(got, reference(clamped), TOL[torch.float64])


def test_unknown_backend_raises() -> None:
    case = make_case("plain")
    with pytest.raises(SvrtValueError, match=r"unknown backend 'triton'; expected one of auto, torch, cuda"):
        spike_accumulate(case["bits"], case["ranges"], case["gamma"], backend="triton")


def test_devices_must_match() -> None:
    case = make_case("plain")
    with pytest.raises(SvrtValueError, match=r"gamma is on meta but bits are on cpu; move all tensors to one device"):
        spike_accumulate(case["bits"], case["ranges"], case["gamma"].to("meta"))


def test_cuda_backend_without_a_gpu_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    case = make_case("plain")
    with pytest.raises(BackendUnavailableError, match=r"spike_accumulate: backend 'cuda' needs a CUDA device, and "
                                                      r"torch sees none.*backend='torch'"):
        spike_accumulate(case["bits"], case["ranges"], case["gamma"], backend="cuda")


@pytest.fixture
def without_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    monkeypatch.setattr(cuda_runtime, "cp", None)
    monkeypatch.setattr(cuda_runtime, "_cupy_missing", None)


def test_missing_cupy_is_reported_with_install_hint(without_cupy: None) -> None:
    assert not cuda_runtime.cupy_available()
    hint = r'spike_accumulate: backend .cuda. needs CuPy.*pip install "svrt\[cuda\]"'
    with pytest.raises(BackendUnavailableError, match=hint):
        cuda_runtime.import_cupy("spike_accumulate")
    case = make_case("plain")
    # auto falls back to the torch path without CuPy
    assert torch.equal(spike_accumulate(case["bits"], case["ranges"], case["gamma"]),
                       spike_accumulate(case["bits"], case["ranges"], case["gamma"], backend="torch"))


# ---------------------------------------------------------------- CUDA only


@needs_cuda
def test_cuda_backend_without_cupy_raises(without_cupy: None) -> None:
    case = make_case("plain", device="cuda")
    with pytest.raises(BackendUnavailableError, match=r"needs CuPy"):
        spike_accumulate(case["bits"], case["ranges"], case["gamma"], backend="cuda")


@needs_cuda
def test_cuda_rejects_cpu_tensors() -> None:
    case = make_case("plain")
    with pytest.raises(SvrtValueError, match=r"backend 'cuda' needs CUDA tensors; got bits on cpu"):
        spike_accumulate(case["bits"], case["ranges"], case["gamma"], backend="cuda")


@needs_cuda
def test_auto_uses_the_kernel_on_cuda_and_autocast_dtype() -> None:
    case = make_case("plain", device="cuda", seed=10)
    g = case["gamma"].float()
    assert torch.equal(spike_accumulate(case["bits"], case["ranges"], g),
                       spike_accumulate(case["bits"], case["ranges"], g, backend="cuda"))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = spike_accumulate(case["bits"], case["ranges"], g)
    assert out.dtype == torch.bfloat16


@needs_cuda
@pytest.mark.parametrize("staged", [True, False])
def test_cuda_large_frame_writes_every_element(staged: bool) -> None:
    """A 256x256 frame window at the benchmark's shape; NaN-poisoned allocator memory must not show."""
    poison = torch.full((1 << 26,), float("nan"), device="cuda")
    del poison
    rng = np.random.default_rng(11)
    S, K, T = 60, 8, 2
    bits = torch.from_numpy(np.packbits(rng.random((1, S, 64, 256)) < 0.2, axis=-1, bitorder="little")).cuda()
    edges = np.linspace(0, S, T * K + 1).round().astype(np.int64)
    ranges = torch.from_numpy(np.stack([edges[:-1], edges[1:]], -1).reshape(1, T, K, 2)).cuda()
    gamma = torch.linspace(0.5, 1.0, K, device="cuda")
    got = spike_accumulate_cuda(bits, ranges, gamma, 256, torch.float32, staged=staged)
    want = spike_accumulate(bits, ranges, gamma, backend="torch")
    assert torch.isfinite(got).all()
    assert_close_rel(got, want, TOL[torch.float32])


@needs_cuda
def test_cuda_runs_on_torch_current_stream() -> None:
    case = make_case("plain", device="cuda", seed=12)
    want = run(case, "torch")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = run(case, "cuda") * 1.0
        assert cuda_runtime._cupy_stream(got.device).ptr == side.cuda_stream
    torch.cuda.current_stream().wait_stream(side)
    assert_close_rel(got, want, TOL[torch.float64])
