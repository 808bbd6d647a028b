"""Test helpers for VRTSpike: the golden S-VRT files, small configurations, and an independent slow reference.

The slow reference re-computes the spike branch the way the original S-VRT code does, written from its
description rather than from our modules: the encoder with ``F.conv3d``, every attention per pixel on
pixel-major ``(pixels, T, C)`` tokens with explicit softmax(q k^T / sqrt(d)) v, one image row of pixels
at a time (the original's spatial chunks), the resize with ``F.interpolate`` on ``(B*T, C, h, w)``, and
the fused features handed to the backbone through its encoder hook. It reads only the parameters.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from svrt_model import VRTConfig, VRTSpike, VRTSpikeConfig
from svrt_model.errors import UntrainedSpyNetWarning
from tests.model.golden import randomise_offset_heads

REFERENCE = "svrt_reference"


@functools.lru_cache(maxsize=2)
def _load(path: str) -> Any:
    return torch.load(path, weights_only=False, map_location="cpu")


def golden_files(shared_dir: Path) -> tuple[dict, dict]:
    """``(weights, run)`` blobs of ``../shared/svrt_reference``; skips the test when absent."""
    folder = shared_dir / REFERENCE
    weights, run = folder / "svrt_tiny_weights.pt", folder / "svrt_tiny_run.pt"
    if not weights.is_file() or not run.is_file():
        pytest.skip(f"{folder} lacks the golden S-VRT files")
    return _load(str(weights)), _load(str(run))


def golden_model(shared_dir: Path, impl: str = "fused", device: str = "cpu") -> tuple[VRTSpike, dict]:
    """The tiny S-VRT with the golden parameters loaded strictly by their original names, in float64."""
    weights, run = golden_files(shared_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model = VRTSpike(VRTSpikeConfig.from_dict(weights["config"]))
    state = model.state_dict()
    assert set(weights["parameters"]) | set(weights["buffer_names"]) == set(state)
    state.update(weights["parameters"])
    model.load_state_dict(state, strict=True)
    model = model.to(device=device, dtype=torch.float64).eval()
    model.set_spike_attention(impl)
    return model, run


def build(config: VRTSpikeConfig, seed: int = 0, dtype: torch.dtype = torch.float64) -> VRTSpike:
    """A model with random weights; the alignment's offset heads are randomised (they start at zero
    officially, which would leave the offset CNNs without gradient and the alignment untested)."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model = VRTSpike(config).to(dtype)
    randomise_offset_heads(model.vrt)
    with torch.no_grad():
        for name, p in model.named_parameters():  # zero-initialised biases carry no signal: randomise them
            if not name.startswith("vrt.") and name.endswith("bias") and not config.fuse_zero_init:
                p.normal_(0.0, 0.1)
    model.vrt.spynet.weights_loaded = True
    return model


def micro_config(frames: int = 3, **spike: Any) -> VRTSpikeConfig:
    """A very small S-VRT (16-channel VRT, 2 blocks per stage, 4x4 windows: 32x32 frames work)."""
    vrt = VRTConfig(
        img_size=(frames, 32, 32), window_size=(frames, 4, 4), depths=(2,) * 7 + (1,), indep_reconsts=(7,),
        embed_dims=(16,) * 7 + (24,), num_heads=(2,) * 8, deformable_groups=2, drop_path_rate=0.0,
    )
    values: dict[str, Any] = dict(vrt=vrt, spike_bins=4, channels_per_scale=(16,) * 4)
    values.update(spike)
    return VRTSpikeConfig(**values)


def inputs(b: int, t: int, h: int, w: int, k: int, spike_hw: tuple[int, int] | None = None, seed: int = 1):
    """Random ``rgb``, ``spikes`` and given ``flows`` (SpyNet needs 64x64 frames; flows keep tests small)."""
    gen = torch.Generator().manual_seed(seed)
    hs, ws = spike_hw or (h, w)
    rgb = torch.rand(b, t, 3, h, w, generator=gen, dtype=torch.float64)
    spikes = torch.rand(b, t, k, hs, ws, generator=gen, dtype=torch.float64) * 3
    flows = tuple(
        [torch.randn(b, t - 1, 2, h >> i, w >> i, generator=gen, dtype=torch.float64) * 2 for i in range(4)]
        for _ in range(2)
    )
    return rgb, spikes, flows


# ---------------------------------------------------------------------- the slow reference
def _conv(conv: torch.nn.Conv3d, x: torch.Tensor, stride: tuple[int, int, int] = (1, 1, 1)) -> torch.Tensor:
    return F.conv3d(x, conv.weight, conv.bias, stride=stride, padding=1)


def slow_encoder(enc: Any, spikes: torch.Tensor) -> list[torch.Tensor]:
    """SpikeEncoder3D: ``(B, T, K, H, W)`` -> 4 x ``(B, C, T_i, H_i, W_i)``."""

    def residual(block: Any, x: torch.Tensor) -> torch.Tensor:
        return F.relu(_conv(block.conv2, F.relu(_conv(block.conv1, x))) + x)

    x = F.relu(_conv(enc.in_proj, spikes.permute(0, 2, 1, 3, 4)))
    for block in enc.res0:
        x = residual(block, x)
    feats = [x]
    for i, (down, blocks) in enumerate(zip(enc.downs, enc.residuals, strict=True)):
        st, ss = enc.temporal_strides[i], enc.spatial_strides[i]
        x = F.relu(_conv(down, x, (st, ss, ss)))
        for block in blocks:
            x = residual(block, x)
        feats.append(x)
    return feats


def slow_mha(mha: torch.nn.MultiheadAttention, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Multi-head attention of pixel-major tokens ``(N, T, C)``, written out."""
    n, t, c = query.shape
    heads = mha.num_heads
    w, b = mha.in_proj_weight, mha.in_proj_bias
    q = (query @ w[:c].T + b[:c]).view(n, t, heads, c // heads)
    k = (context @ w[c:2 * c].T + b[c:2 * c]).view(n, t, heads, c // heads)
    v = (context @ w[2 * c:].T + b[2 * c:]).view(n, t, heads, c // heads)
    logits = torch.einsum("nthd,nshd->nhts", q, k) / (c // heads) ** 0.5
    out = torch.einsum("nhts,nshd->nthd", logits.softmax(dim=-1), v).reshape(n, t, c)
    return out @ mha.out_proj.weight.T + mha.out_proj.bias


def _ln(norm: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _mlp(seq: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    return F.linear(F.gelu(F.linear(x, seq[0].weight, seq[0].bias)), seq[2].weight, seq[2].bias)


def slow_tsa(tsa: Any, feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """SpikeTemporalSA: per scale, per image row of pixels, pre-LN self-attention over T and MLP."""
    out = []
    for block, f in zip(tsa.blocks, feats, strict=True):
        b, c, t, h, w = f.shape
        x = f.permute(0, 3, 4, 2, 1)  # B H W T C
        rows = []
        for r in range(h):
            flat = x[:, r].reshape(b * w, t, c)
            y = _ln(block.ln1, flat)
            flat = flat + slow_mha(block.attn, y, y)
            flat = flat + _mlp(block.mlp, _ln(block.ln2, flat))
            rows.append(flat.view(b, w, t, c))
        out.append(torch.stack(rows, dim=1).permute(0, 4, 3, 1, 2))  # B C T H W
    return out


def slow_fuse(block: Any, fr: torch.Tensor, fs: torch.Tensor) -> torch.Tensor:
    """One fusion block: RGB ``(B, C, T, H, W)``, spikes ``(B, C, T, h, w)`` -> ``(B, C, T, H, W)``."""
    b, c, t, h, w = fr.shape
    if fs.shape[-2:] != fr.shape[-2:]:
        frames = fs.permute(0, 2, 1, 3, 4).reshape(b * t, c, *fs.shape[-2:])
        fs = F.interpolate(frames, size=(h, w), mode="bilinear", align_corners=False)
        fs = fs.view(b, t, c, h, w).permute(0, 2, 1, 3, 4)
    r_tok, s_tok = fr.permute(0, 3, 4, 2, 1), fs.permute(0, 3, 4, 2, 1)  # B H W T C
    rows = []
    for r in range(h):
        rr = r_tok[:, r].reshape(b * w, t, c)
        x = rr + slow_mha(block.attn.attn, _ln(block.ln_q, rr), _ln(block.ln_kv, s_tok[:, r].reshape(b * w, t, c)))
        x = x + _mlp(block.ffn, _ln(block.ln_ffn, x))
        rows.append(x.view(b, w, t, c))
    return torch.stack(rows, dim=1).permute(0, 4, 3, 1, 2)  # B C T H W


def slow_forward(model: VRTSpike, rgb: torch.Tensor, spikes: torch.Tensor, flows: Any) -> torch.Tensor:
    """The whole cross-attention model: slow spike branch, fused through the backbone's encoder hook."""
    feats = slow_tsa(model.spike_temporal_sa, slow_encoder(model.spike_encoder, spikes))
    blocks = model.cross_attn_fuse.fuse_blocks
    return model.vrt(rgb, flows, encoder_hook=lambda i, x: slow_fuse(blocks[i - 1], x, feats[i - 1]))
