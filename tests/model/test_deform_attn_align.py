"""``VRTConfig.alignment="deform_attn"``: the guided deformable attention alignment in VRT's parallel warping
(module behaviour, the backbone built with it, the CUDA kernel path on the CPU emulation), and that the
default stays the official deformable convolution."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from kernels.deform_attn import deform_attn
from svrt_model import VRT
from svrt_model.config import VRTConfig
from svrt_model.errors import ModelConfigError, UntrainedSpyNetWarning
from svrt_model.layers.deform_align import FlowGuidedDeformAlign
from svrt_model.layers.deform_attn_align import FlowGuidedDeformAttnAlign
from svrt_model.layers.stage import make_alignment
from tests.model.golden import randomise_offset_heads

MICRO = VRTConfig(
    img_size=(3, 64, 64), window_size=(3, 8, 8), depths=(2,) * 7 + (2, 2), indep_reconsts=(8,),
    embed_dims=(16,) * 7 + (24, 24), num_heads=(2,) * 9, deformable_groups=2, drop_path_rate=0.0,
)


def _inputs(n: int = 2, c: int = 8, h: int = 6, w: int = 7, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    neighbour, warped, current = (torch.randn(n, c, h, w, generator=gen, dtype=torch.float64) for _ in range(3))
    flow = 2 * torch.randn(n, 2, h, w, generator=gen, dtype=torch.float64)
    return neighbour, warped, current, flow


def test_unknown_alignment_is_refused() -> None:
    with pytest.raises(ModelConfigError, match=r"VRTConfig.alignment='dconv' is unknown; expected one of dcn, "
                                                r"deform_attn"):
        dataclasses.replace(MICRO, alignment="dconv")
    with pytest.raises(ModelConfigError, match=r"Stage alignment 'x' is unknown"):
        make_alignment("x", 8, 2, 10.0)


def test_default_is_the_official_deformable_convolution() -> None:
    assert MICRO.alignment == "dcn"
    assert VRTConfig.from_dict({k: v for k, v in MICRO.to_dict().items() if k != "alignment"}) == MICRO
    assert isinstance(make_alignment("dcn", 8, 2, 10.0), FlowGuidedDeformAlign)


def test_offsets_start_at_the_flow() -> None:
    """The last offset conv starts at zero: every tap's offset is the flow, as (dy, dx) pairs."""
    torch.manual_seed(0)
    align = FlowGuidedDeformAttnAlign(8, 2, 10.0).double()
    neighbour, warped, current, flow = _inputs()
    offset = align.offsets(warped, current, flow)
    assert offset.shape == (2, 2 * 9 * 2, 6, 7)
    assert torch.equal(offset[:, 0::2], flow[:, 1:2].expand(-1, 18, -1, -1))  # dy = flow y
    assert torch.equal(offset[:, 1::2], flow[:, 0:1].expand(-1, 18, -1, -1))  # dx = flow x


def test_forward_is_projected_deformable_attention_plus_mlp() -> None:
    torch.manual_seed(1)
    align = FlowGuidedDeformAttnAlign(8, 2, 10.0).double()
    neighbour, warped, current, flow = _inputs(seed=2)
    with torch.no_grad():
        torch.nn.init.normal_(align.conv_offset[-1].weight, std=0.05)
        got = align(neighbour, warped, current, flow)
        offset = align.offsets(warped, current, flow)
        attended = deform_attn(align.proj_q(current), align.proj_k(neighbour).unsqueeze(1),
                               align.proj_v(neighbour).unsqueeze(1), offset, heads=2, groups=2, backend="torch")
        projected = align.proj(attended)
        want = projected + align.mlp(projected)
    assert torch.equal(got, want)


def test_offset_network_learns_through_the_attention() -> None:
    torch.manual_seed(3)
    align = FlowGuidedDeformAttnAlign(8, 2, 10.0).double()
    align(*_inputs(seed=4)).square().mean().backward()
    # at initialisation the zero last layer gets a gradient (through the offsets) and blocks the earlier ones
    assert align.conv_offset[-1].weight.grad.abs().sum() > 0
    assert align.conv_offset[0].weight.grad.abs().sum() == 0
    with torch.no_grad():
        torch.nn.init.normal_(align.conv_offset[-1].weight, std=0.05)
    align.zero_grad()
    align(*_inputs(seed=4)).square().mean().backward()
    for name, p in align.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} gets no gradient"


def test_kernel_path_equals_torch_path_on_the_cpu_emulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module with the CUDA kernels (emulated on the CPU) gives the torch path's output and gradients."""
    import kernels.deform_attn as da
    from tests.kernels.emulation import EmulatedRuntime

    emulated = EmulatedRuntime()
    real = da.deform_attn_cuda
    monkeypatch.setattr(da, "deform_attn_cuda", lambda *a: real(*a, runtime=emulated))
    monkeypatch.setattr(da, "cupy_available", lambda: True)
    torch.manual_seed(5)
    align = FlowGuidedDeformAttnAlign(8, 2, 10.0).double()
    with torch.no_grad():
        torch.nn.init.normal_(align.conv_offset[-1].weight, std=0.05)
    results = []
    for backend in ("torch", "cuda"):
        align.backend = backend
        align.zero_grad()
        inputs = [t.clone().requires_grad_() for t in _inputs(seed=6)]
        out = align(*inputs)
        out.square().mean().backward()
        results.append([out.detach(), *(t.grad for t in inputs), *(p.grad.clone() for p in align.parameters())])
    assert emulated.launches and emulated.launches[0][0] == "deform_attn_forward<double>"
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def attn_vrt() -> VRT:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model = VRT(dataclasses.replace(MICRO, alignment="deform_attn")).double()
    model.spynet.weights_loaded = True
    return model


def test_backbone_builds_the_attention_alignment_in_every_stage(attn_vrt: VRT) -> None:
    keys = set(attn_vrt.state_dict())
    for i in range(1, 8):
        assert isinstance(getattr(attn_vrt, f"stage{i}").pa_deform, FlowGuidedDeformAttnAlign)
        assert f"stage{i}.pa_deform.proj_q.weight" in keys and f"stage{i}.pa_deform.weight" not in keys
    dcn_keys = set(VRT(MICRO).state_dict())
    assert {k for k in dcn_keys if "pa_deform" not in k} == {k for k in keys if "pa_deform" not in k}


def test_backbone_trains_with_the_attention_alignment(attn_vrt: VRT) -> None:
    x = torch.rand(1, 3, 3, 64, 64, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    attn_vrt.zero_grad()
    out = attn_vrt(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.mean().backward()
    grads = {n: p.grad for n, p in attn_vrt.named_parameters() if "pa_deform" in n}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "proj_k" in n)


def test_reference_backend_name_means_the_torch_path(attn_vrt: VRT) -> None:
    attn_vrt.set_deform_conv_backend("reference")  # deform_conv2d's name for its torch path
    try:
        align = attn_vrt.stage1.pa_deform
        assert align.backend == "reference"
        with torch.no_grad():
            got = align(*_inputs(c=16, seed=8))
            align.backend = "torch"
            want = align(*_inputs(c=16, seed=8))
        assert torch.equal(got, want)
    finally:
        attn_vrt.set_deform_conv_backend("auto")


@pytest.mark.needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_step_with_the_kernel_equals_the_torch_path(dtype: torch.dtype) -> None:
    """A training step of the micro VRT with the attention alignment on the GPU: the CUDA kernel and the
    torch path agree (output and gradients), in float32 and under bfloat16 autocast."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model = VRT(dataclasses.replace(MICRO, alignment="deform_attn")).cuda()
    model.spynet.weights_loaded = True
    randomise_offset_heads(model)
    x = torch.rand(1, 3, 3, 64, 64, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
    results = []
    for backend in ("reference", "cuda"):
        model.set_deform_conv_backend(backend)
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = model(x)
        out.float().square().mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if "pa_deform" in n and p.grad is not None}
        results.append((out.detach().float(), grads))
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    torch.testing.assert_close(results[1][0], results[0][0], rtol=tol, atol=tol)
    for name, g in results[0][1].items():  # relative in norm: single elements of the offset heads' gradients
        err = ((results[1][1][name] - g).double().norm() / g.double().norm().clamp_min(1e-30)).item()
        assert err <= tol * 10, f"{name}: relative error {err:.2e}"  # sum many sampling-position terms
