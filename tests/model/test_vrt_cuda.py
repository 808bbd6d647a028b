"""VRT on the GPU: float32 CUDA vs the float64 golden output, fused and flex vs plain attention in float32
and bf16 autocast (flex also called from compiled attention cores), checkpointing on CUDA. Skipped without CUDA
(``FAIL_WITHOUT_CUDA=1`` makes them fail)."""

from __future__ import annotations

import warnings

import pytest
import torch

from svrt_model import VRT
from svrt_model.errors import UntrainedSpyNetWarning
from tests.model.golden import gpu_test_vrt, load_golden_model

pytestmark = pytest.mark.needs_cuda


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture
def strict_fp32():
    """float32 means float32 here: no TF32 in convolutions or matmuls."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("run_name", ["spynet", "given"])
@pytest.mark.parametrize("impl", ["fused", "plain"])
def test_cuda_float64_matches_golden(shared_dir, run_name: str, impl: str) -> None:
    model, run, x = load_golden_model(shared_dir, run_name, dtype=torch.float64, device="cuda")
    model.set_attention(impl)
    with torch.no_grad():
        out = model(x, flows=run["flows"])
    assert (out.cpu() - run["output"]).abs().max().item() < 1e-8


@pytest.mark.parametrize("impl", ["fused", "flex", "plain"])
def test_cuda_float32_matches_golden(shared_dir, strict_fp32, impl: str) -> None:
    # The SpyNet run only: with the golden's several-pixel given flows, "nearest4" pre-alignment rounds
    # positions to pixels, and float32 rounding flips some of them (a discontinuity, not an error).
    model, run, x = load_golden_model(shared_dir, "spynet", dtype=torch.float32, device="cuda")
    model.set_attention(impl)
    with torch.no_grad():
        out = model(x)
    assert rel_err(out, run["output"]) < 1e-5


def _run(model: VRT, x: torch.Tensor, autocast: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with warnings.catch_warnings(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        out = model(x)
    out.float().square().mean().backward()
    grads = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
    return out.detach().float(), grads


@pytest.mark.parametrize(("impl", "compiled"), [("fused", False), ("flex", False), ("flex", True)])
def test_cuda_fused_equals_plain_float32(strict_fp32, impl: str, compiled: bool) -> None:
    model = gpu_test_vrt()
    x = torch.rand(2, 5, 3, 64, 72, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    model.set_attention("plain")
    out_p, g_p = _run(model, x, autocast=False)
    model.set_attention(impl)
    if compiled:  # flex traced into compiled attention cores (on q/k/v views it was 3e-3 off on the H200)
        model.compile_blocks("attn")
    out_f, g_f = _run(model, x, autocast=False)
    assert rel_err(out_f, out_p) < 1e-5
    assert len(g_f) == len(g_p) > 0
    assert max(rel_err(a, b) for a, b in zip(g_f, g_p, strict=True) if b.norm() > 0) < 1e-3


@pytest.mark.parametrize("impl", ["fused", "flex"])
def test_cuda_fused_close_to_plain_bf16(impl: str) -> None:
    model = gpu_test_vrt()
    x = torch.rand(1, 5, 3, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    model.set_attention("plain")
    out_p, _ = _run(model, x, autocast=True)
    model.set_attention(impl)
    out_f, g_f = _run(model, x, autocast=True)
    assert torch.isfinite(out_f).all() and all(torch.isfinite(g).all() for g in g_f)
    assert rel_err(out_f, out_p) < 2e-2


def test_cuda_checkpointing_changes_nothing(strict_fp32) -> None:
    model = gpu_test_vrt()
    x = torch.rand(1, 4, 3, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(3))
    model.set_grad_checkpointing("none")
    out_a, g_a = _run(model, x, autocast=False)
    model.set_grad_checkpointing("all")
    out_b, g_b = _run(model, x, autocast=False)
    assert rel_err(out_b, out_a) < 1e-6
    # SDPA's backward accumulates with atomics on the GPU: equal up to summation order.
    assert max(rel_err(a, b) for a, b in zip(g_b, g_a, strict=True) if b.norm() > 0) < 1e-4


@pytest.mark.parametrize("impl", ["fused", "plain"])
def test_bf16_training_step_runs_and_matches_fp32(impl: str) -> None:
    """Regression: SDPA's cuDNN kernel crashed (illegal memory access) on the tiny config's unmasked
    mutual-attention windows (head dim 8) under bf16 autocast at this size."""
    from svrt_model import tiny

    torch.manual_seed(0)
    model = VRT(tiny()).cuda()
    model.set_attention(impl)
    x = torch.rand(2, 5, 3, 256, 256, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)  # train mode: drop path is random, so only finiteness is checked here
        (out.float() - x).abs().mean().backward()
        torch.cuda.synchronize()
        assert torch.isfinite(out).all()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.eval()
        with torch.no_grad():
            ref = model(x)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                low = model(x)
    assert rel_err(low.float(), ref) < 2e-2  # bf16 vs fp32 forward of the same weights, deterministic
