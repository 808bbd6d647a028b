"""VRTSpike against the independent slow reference (``tests/model/spike_reference.py``) on configurations
that are not in the golden files (other T, heads, MLP ratios, spike sizes, strides), float64, CPU; the
per-pixel attention paths against each other, chunking, and gradcheck."""

from __future__ import annotations

import pytest
import torch

from svrt_model.spike.encoder import SpikeEncoder3D
from svrt_model.spike.temporal_attention import SpikeTemporalSA
from svrt_model.spike.temporal_mha import (
    fused_attention,
    map_pixel_chunks,
    math_attention,
    reference_attention,
    sdpa_attention,
)
from tests.model.spike_reference import build, inputs, micro_config, slow_encoder, slow_forward, slow_tsa

TOL = 1e-10

CASES = {
    # odd T, spikes at the RGB size, heads 2 / 8, MLP ratios 3 / 1.5
    "T3-full": (dict(frames=3, tsa_heads=2, fuse_heads=8, tsa_mlp_ratio=3, fuse_mlp_ratio=1.5), 1, (32, 32)),
    # half-size spikes (Spk-GoPro), two clips, heads 4 / 1, MLP ratios 1 / 4
    "T4-half-B2": (dict(frames=4, tsa_heads=4, fuse_heads=1, tsa_mlp_ratio=1, fuse_mlp_ratio=4), 2, (16, 16)),
    # odd T, spikes at 0.75x, spatial strides (1, 2, 4): every scale is resized (24, 24, 12, 3 -> 32, 16, 8, 4)
    "T5-strides": (dict(frames=5, spatial_strides=(1, 2, 4), tsa_heads=16, fuse_heads=2), 1, (24, 24)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_model_matches_the_slow_reference(case: str) -> None:
    spike, b, spike_hw = CASES[case]
    cfg = micro_config(**spike)
    model = build(cfg).eval()
    t = cfg.vrt.img_size[0]
    rgb, spikes, flows = inputs(b, t, 32, 32, cfg.spike_bins, spike_hw)
    with torch.no_grad():
        expected = slow_forward(model, rgb, spikes, flows)
        fused = model(rgb, spikes, flows)
        model.set_spike_attention("reference")
        reference = model(rgb, spikes, flows)
        model.set_spike_attention("fused")
        model.set_spike_chunking(37)  # not a divisor of any scale's pixel count
        chunked = model(rgb, spikes, flows)
    assert fused.shape == (b, t, 3, 32, 32)
    assert (fused - expected).abs().max().item() <= TOL
    assert (reference - expected).abs().max().item() <= TOL
    assert (chunked - fused).abs().max().item() <= 1e-12


def test_encoder_and_temporal_attention_with_temporal_strides() -> None:
    torch.manual_seed(3)
    enc = SpikeEncoder3D(3, (8, 12, 16, 8), temporal_strides=(2, 1, 2), spatial_strides=(1, 2, 3)).double()
    tsa = SpikeTemporalSA((8, 12, 16, 8), heads=4, mlp_ratio=1.5).double()
    spikes = torch.rand(2, 7, 3, 20, 18, dtype=torch.float64)
    with torch.no_grad():
        feats = enc(spikes)
        assert [tuple(f.shape) for f in feats] == [
            (2, 8, 7, 20, 18), (2, 12, 4, 20, 18), (2, 16, 4, 10, 9), (2, 8, 2, 4, 3)
        ]
        assert [tuple(f.shape[2:]) for f in feats] == enc.output_sizes(7, 20, 18)
        expected_feats = slow_encoder(enc, spikes)
        for ours, ref in zip(feats, expected_feats, strict=True):
            assert (ours - ref).abs().max().item() <= TOL
        out = tsa(feats)
        for block in tsa.blocks:
            block.impl = "reference"
        ref_path = tsa(feats)
        expected = slow_tsa(tsa, expected_feats)
    for a, b, e in zip(out, ref_path, expected, strict=True):
        assert a.shape == e.shape
        assert (a - e).abs().max().item() <= TOL and (b - e).abs().max().item() <= TOL


def test_fused_and_reference_gradients_agree() -> None:
    cfg = micro_config(frames=3, tsa_heads=4, fuse_heads=2)
    model = build(cfg)
    rgb, spikes, flows = inputs(1, 3, 32, 32, cfg.spike_bins, (16, 16))
    rgb.requires_grad_(True)
    spikes.requires_grad_(True)
    grads = []
    for impl in ("fused", "reference"):
        model.zero_grad()
        model.set_spike_attention(impl)
        model(rgb, spikes, flows).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if not n.startswith("vrt.")})
        grads[-1]["spikes"] = spikes.grad.clone()
        rgb.grad = spikes.grad = None
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        scale = grads[1][name].abs().max().item()
        assert (grads[0][name] - grads[1][name]).abs().max().item() <= 1e-10 * max(1.0, scale), name


def _tokens(b: int, t: int, s: int, c: int, seed: int) -> torch.Tensor:
    return torch.randn(b, t, s, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(("b", "t", "s", "heads"), [(1, 5, 7, 2), (2, 3, 4, 4), (1, 1, 3, 1), (3, 2, 1, 2)])
def test_attention_paths_agree(b: int, t: int, s: int, heads: int) -> None:
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(8, heads, batch_first=True).double()
    torch.nn.init.normal_(mha.in_proj_bias)
    q, kv = _tokens(b, t, s, 8, 1), _tokens(b, t, s, 8, 2)
    for context in (None, kv):
        with torch.no_grad():
            ref = reference_attention(q, context, mha)
            fused = fused_attention(q, context, mha)
        assert fused.shape == (b, t, s, 8)
        assert (fused - ref).abs().max().item() <= 1e-12
    qq, kk, vv = _tokens(b, t, s, 8, 3), _tokens(b, t, s, 8, 4), _tokens(b, t, s, 8, 5)
    sdpa = sdpa_attention(qq, kk, vv, heads).transpose(1, 2)  # B S T C -> B T S C
    assert (math_attention(qq, kk, vv, heads) - sdpa).abs().max().item() <= 1e-12


def test_attention_gradcheck() -> None:
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(4, 2, batch_first=True).double()
    q = _tokens(1, 3, 2, 4, 1).requires_grad_(True)
    kv = _tokens(1, 3, 2, 4, 2).requires_grad_(True)
    w = mha.in_proj_weight
    assert torch.autograd.gradcheck(lambda a, c, _w: fused_attention(a, c, mha), (q, kv, w))
    assert torch.autograd.gradcheck(lambda a: fused_attention(a, None, mha), (q,))
    assert torch.autograd.gradcheck(lambda a, b_, c: math_attention(a, b_, c, 2), (q, kv, kv.detach().clone()))


@pytest.mark.parametrize("chunk", [None, 1, 3, 5, 100])
def test_pixel_chunks_cover_every_pixel_once(chunk: int | None) -> None:
    x, y = _tokens(2, 3, 7, 4, 1), _tokens(2, 3, 7, 4, 2)
    calls = []

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls.append(a.shape[2])
        assert a.shape[0] * a.shape[2] <= max(chunk or 14, 2)
        return a * 2 + b

    assert torch.equal(map_pixel_chunks(fn, (x, y), chunk), x * 2 + y)
    assert sum(calls) == 7
