"""VRTSpike behaviour on CPU: variants against the plain backbone, gradients, switches, input validation."""

from __future__ import annotations

import warnings

import pytest
import torch

from svrt_model import VRT, VRTSpike, svrt_tiny
from svrt_model.errors import ModelConfigError, ModelInputError, UntrainedSpyNetWarning
from tests.model.spike_reference import build, inputs, micro_config


def _backbone_copy(model: VRTSpike) -> VRT:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        vrt = VRT(model.config.vrt).double()
    vrt.load_state_dict(model.vrt.state_dict())
    vrt.spynet.weights_loaded = True
    return vrt.eval()


def test_rgb_only_is_exactly_vrt() -> None:
    model = build(micro_config(fusion="rgb_only")).eval()
    assert not any(k.startswith(("spike", "cross")) for k in model.state_dict())
    rgb, spikes, flows = inputs(1, 3, 32, 32, 4)
    with torch.no_grad():
        expected = _backbone_copy(model)(rgb, flows)
        assert torch.equal(model(rgb, None, flows), expected)
        assert torch.equal(model(rgb, spikes, flows), expected)  # spikes ignored


def test_zero_initialised_fusion_is_exactly_vrt() -> None:
    model = build(micro_config(fuse_zero_init=True)).eval()
    rgb, spikes, flows = inputs(1, 3, 32, 32, 4, (16, 16))
    with torch.no_grad():
        assert torch.equal(model(rgb, spikes, flows), _backbone_copy(model)(rgb, flows))
    # a trained fusion moves away from the backbone: the path is live
    with torch.no_grad():
        torch.nn.init.normal_(model.cross_attn_fuse.fuse_blocks[1].ffn[2].weight, std=0.1)
        assert (model(rgb, spikes, flows) - _backbone_copy(model)(rgb, flows)).abs().max() > 1e-6


def test_every_parameter_gets_a_gradient() -> None:
    """Forward + backward of the tiny preset (2 frames to stay fast, SpyNet's own flows) reaches every
    parameter, SpyNet's included (through the flow-guided warping and deformable offsets)."""
    cfg = svrt_tiny(frames=2)
    model = build(cfg).train()
    rgb, spikes, _ = inputs(1, 2, 64, 64, cfg.spike_bins, (32, 32))
    model(rgb, spikes).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert missing == []


def test_checkpointing_changes_no_gradient() -> None:
    model = build(micro_config(frames=2)).train()
    rgb, spikes, flows = inputs(1, 2, 32, 32, 4, (16, 16))
    model(rgb, spikes, flows).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_spike_checkpointing("all")
    model.set_spike_chunking(100)
    model(rgb, spikes, flows).square().mean().backward()
    assert grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, p in model.named_parameters():
        if name in grads:
            assert torch.allclose(p.grad, grads[name], rtol=1e-10, atol=1e-14), name


def test_spike_gradients_reach_the_input_and_odd_t_half_size_work() -> None:
    model = build(micro_config(frames=5)).eval()
    rgb, spikes, flows = inputs(1, 5, 32, 32, 4, (16, 16))
    spikes.requires_grad_(True)
    out = model(rgb, spikes, flows)
    assert out.shape == (1, 5, 3, 32, 32) and torch.isfinite(out).all()
    out.sum().backward()
    assert spikes.grad.shape == spikes.shape and spikes.grad.abs().sum() > 0


def test_early_fusion_sees_rgb_in_spynet_and_residual() -> None:
    """With zero weights on the spike channels of ``conv_first``, early fusion equals the RGB backbone with
    the same RGB weights: SpyNet, the pre-alignment of the RGB channels and the residual are RGB-only."""
    model = build(micro_config(fusion="early", spike_bins=4, early_channels=2)).eval()
    assert model.vrt.config.in_chans == 5 and model.vrt.conv_first.in_channels == 45
    rgb, spikes, flows = inputs(1, 3, 32, 32, 4, (16, 16))
    vrt = _backbone_copy(build(micro_config(fusion="rgb_only")))
    rgb_keys = {k: v for k, v in model.vrt.state_dict().items() if not k.startswith("conv_first.weight")}
    vrt.load_state_dict({**rgb_keys, "conv_first.weight": vrt.conv_first.weight}, strict=True)
    with torch.no_grad():
        weight = model.vrt.conv_first.weight.view(16, 9, 5, 1, 3, 3)  # blocks [x, 4 corners back, 4 fwd] x (3+2)
        weight[:, :, 3:] = 0
        vrt.conv_first.weight.copy_(weight[:, :, :3].reshape(16, 27, 1, 3, 3))
        assert torch.equal(model(rgb, spikes, flows), vrt(rgb, flows))
        torch.nn.init.normal_(weight[:, :, 3:], std=0.1)
        changed = model(rgb, spikes, flows)
        assert (changed - model(rgb, spikes * 0.5, flows)).abs().max() > 1e-6  # spikes matter


def test_early_channels_are_bin_group_means() -> None:
    from svrt_model.spike.inputs import early_spike_channels

    vox = torch.arange(2 * 8 * 2 * 2, dtype=torch.float64).view(1, 2, 8, 2, 2)
    out = early_spike_channels(vox, 2, (2, 2))
    assert torch.equal(out, torch.stack([vox[:, :, :4].mean(2), vox[:, :, 4:].mean(2)], dim=2))
    assert early_spike_channels(vox, 1, (4, 4)).shape == (1, 2, 1, 4, 4)


@pytest.fixture(scope="module")
def micro() -> VRTSpike:
    return build(micro_config()).eval()


@pytest.mark.parametrize(
    ("spikes_shape", "message"),
    [
        ((1, 3, 5, 32, 32), r"spike voxels have K=5 bins .*spike_bins=4"),
        ((1, 4, 4, 32, 32), r"spikes have B=1, T=4 .* RGB frames have B=1, T=3"),
        ((2, 3, 4, 32, 32), r"spikes have B=2, T=3 .* RGB frames have B=1, T=3"),
        ((1, 3, 4, 32, 16), r"spike frames 32x16 do not cover the RGB frames 32x32"),
        ((1, 3, 4, 32), r"expected spike voxels \(B, T, K=4, Hs, Ws\), got \(1, 3, 4, 32\)"),
    ],
)
def test_bad_spike_shapes_are_explained(micro: VRTSpike, spikes_shape: tuple, message: str) -> None:
    rgb, _, flows = inputs(1, 3, 32, 32, 4)
    with pytest.raises(ModelInputError, match=message):
        micro(rgb, torch.rand(spikes_shape, dtype=torch.float64), flows)


def test_bad_rgb_and_missing_spikes_are_explained(micro: VRTSpike) -> None:
    rgb, spikes, flows = inputs(1, 3, 32, 32, 4)
    with pytest.raises(ModelInputError, match=r"expected RGB frames \(B, T, 3, H, W\), got \(1, 3, 4, 32, 32\)"):
        micro(torch.rand(1, 3, 4, 32, 32, dtype=torch.float64), spikes, flows)
    with pytest.raises(ModelInputError, match=r"fusion='cross_attention'\) needs spikes .* got None"):
        micro(rgb, None, flows)
    with pytest.raises(ModelInputError, match=r"frame size 36x36 is not supported"):
        micro(torch.rand(1, 3, 3, 36, 36, dtype=torch.float64), torch.rand(1, 3, 4, 36, 36, dtype=torch.float64))


def test_fusion_rejects_a_different_t_per_scale(micro: VRTSpike) -> None:
    fr = torch.rand(1, 16, 3, 8, 8, dtype=torch.float64)
    fs = torch.rand(1, 16, 2, 8, 8, dtype=torch.float64)
    with pytest.raises(ModelInputError, match=r"scale 2: RGB features \(1, 16, 3, 8, 8\) and spike features "
                                              r"\(1, 16, 2, 8, 8\) must agree in \(B, C, T\)"):
        micro.cross_attn_fuse.fuse_scale(1, fr, fs)


def test_integer_voxels_are_accepted_as_counts() -> None:
    model = build(micro_config(), dtype=torch.float32).eval()
    rgb, spikes, flows = inputs(1, 3, 32, 32, 4, (16, 16))
    counts = (spikes * 3).round().to(torch.uint8)
    flows = tuple([f.float() for f in level] for level in flows)
    with torch.no_grad():
        a = model(rgb.float(), counts, flows)
        b = model(rgb.float(), counts.float(), flows)
    assert torch.equal(a, b)


def test_switches_validate_their_values(micro: VRTSpike) -> None:
    with pytest.raises(ModelConfigError, match=r"unknown impl 'flash'; expected one of \('fused', 'reference'\)"):
        micro.set_spike_attention("flash")
    with pytest.raises(ModelConfigError, match=r"chunk_tokens=0; expected None or a positive integer"):
        micro.set_spike_chunking(0)
    with pytest.raises(ModelConfigError, match=r"unknown parts 'tsa\+mlp'"):
        micro.set_spike_checkpointing("tsa+mlp")
    with pytest.raises(ModelConfigError, match=r"unknown parts 'attn\+spikes'"):
        micro.compile_blocks("attn+spikes")
    micro.set_spike_checkpointing("encoder+fuse")
    assert micro.spike_checkpoint == "encoder+fuse"
    assert [b.checkpoint for b in micro.cross_attn_fuse.fuse_blocks] == [True] * 4
    assert [b.checkpoint for b in micro.spike_temporal_sa.blocks] == [False] * 4
    micro.set_spike_checkpointing("none")
    micro.set_attention("plain")
    assert all(m.impl == "plain" for m in micro.vrt.modules() if hasattr(m, "relative_position_bias_table"))
    micro.set_attention("fused")
