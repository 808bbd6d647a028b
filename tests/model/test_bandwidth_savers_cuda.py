"""The backbone's bandwidth savers on the GPU kernels (SDPA, cuBLAS, the deformable-conv CUDA ops): no savers
vs all and vs each saver alone (with the savers it needs), outputs and every gradient, in float64 (the same
numbers), strict float32 and bf16 autocast (rounding order only).

The clip exercises every saver path: T=5 (mutual windows padded to 6 frames: pad-skip), 72x72 frames (windows
padded at every scale: 72, 36, 18, 9 px in 8 px windows), shifted windows, spikes at half size (stochastic
depth is covered by the CPU tests of test_bandwidth_savers.py). Tolerances are relative to the norm of the
compared tensor: in float32 and bf16 the savers' error against the float64 computation must be about the
same as the error without savers (GEMMs and SDPA calls of other shapes round differently; the deep network
and the offset heads amplify that). Measured on the CPU (float32 / bf16 vs float64, savers off): output
1.8e-7 / 4.3e-3, all gradients 3.8e-6 / 6.2e-2.
"""

from __future__ import annotations

import copy

import pytest
import torch

from svrt_model import svrt_tiny
from svrt_model.vrt import BANDWIDTH_SAVERS, with_needed_savers
from tests.model.spike_reference import build, inputs

pytestmark = pytest.mark.needs_cuda

DEV = "cuda"




SAVER_SETS = ["all", *(with_needed_savers(n) for n in BANDWIDTH_SAVERS)]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.fixture(scope="module")
def clip():
    cfg = svrt_tiny(frames=5)  # no stochastic depth: float32 and float64 would draw different masks
    model = build(cfg, dtype=torch.float64).to(DEV).train()
    with torch.no_grad():  # a trained table's size: the init's 0.02 would hide a wrong bias lookup
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_()
    rgb, spikes, flows = inputs(1, 5, 72, 72, cfg.spike_bins, (36, 36))
    data = (rgb.to(DEV), spikes.to(DEV), tuple([f.to(DEV) for f in level] for level in flows))
    ref = _step(model, data, "fp64", "none")
    return model, data, ref


def _cast(data, dtype: torch.dtype):
    rgb, spikes, flows = data
    return rgb.to(dtype), spikes.to(dtype), tuple([f.to(dtype) for f in level] for level in flows)


def _step(model, data, precision: str, savers: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.vrt.set_bandwidth_savers(savers)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same stochastic-depth draws
    rgb, spikes, flows = data
    with torch.autocast(DEV, dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = model(rgb, spikes, flows)
    (out.double() * torch.linspace(-1, 1, out.numel(), device=DEV, dtype=torch.float64).view_as(out)).sum().backward()
    grads = {n: p.grad.detach().double() for n, p in model.named_parameters() if p.grad is not None}
    model.vrt.set_bandwidth_savers("all")
    return out.detach().double(), grads


def test_float64_savers_give_the_same_numbers_on_the_gpu(clip) -> None:
    model, data, (ref_out, ref_grads) = clip
    assert len(ref_grads) > 150
    for savers in SAVER_SETS:
        out, grads = _step(model, data, "fp64", savers)
        assert _rel(out, ref_out) <= 1e-11, savers
        assert grads.keys() == ref_grads.keys()
        for name, g in grads.items():  # float64 atomics in the deformable ops' backward: ~1e-16 noise
            assert _rel(g, ref_grads[name]) <= 1e-9, f"{savers}: {name}"


@pytest.mark.parametrize(("precision", "sane", "floor"), [("fp32", 1e-4, 2e-4), ("bf16", 0.2, 5e-2)])
def test_savers_change_rounding_only(clip, precision: str, sane: float, floor: float) -> None:
    """Float32 (no TF32) and bf16 autocast: with any savers, the output and the gradients are about as close
    to the float64 computation as without savers (the offset heads' gradients, the most sensitive, differ
    by a few 1e-4 in float32 between any two summation orders; bf16 by a few 1e-2)."""
    model64, data64, (exact_out, exact_grads) = clip
    model, data = copy.deepcopy(model64).float(), _cast(data64, torch.float32)
    names = sorted(exact_grads)

    def flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([grads[n].flatten() for n in names])

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        off_out, off_grads = _step(model, data, precision, "none")
        off_err, off_flat = _rel(off_out, exact_out), _rel(flat(off_grads), flat(exact_grads))
        assert off_err <= sane and off_flat <= 10 * sane  # the reference is itself close to float64
        for savers in SAVER_SETS:
            out, grads = _step(model, data, precision, savers)
            assert _rel(out, exact_out) <= 1.5 * off_err + floor / 10, f"{savers}: output"
            assert _rel(flat(grads), flat(exact_grads)) <= 1.5 * off_flat + floor / 10, f"{savers}: all gradients"
            for name in names:
                off = _rel(off_grads[name], exact_grads[name])
                # offset heads: a sampling position near a pixel border flips its bilinear cell under any
                # rounding change (seen on the CPU in float32: 8e-3 against 1.2e-3 without savers)
                loose = 5e-2 if "conv_offset" in name else floor
                assert _rel(grads[name], exact_grads[name]) <= 4 * off + loose, f"{savers}: {name}"
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
