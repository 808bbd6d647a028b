"""VRTSpike with the model ops: raw spike input through the learnable accumulator end to end from the
dataset (``spike_input="raw"``) and as interval voxels (``"intervals"``), the spike luminance base
(``spike_base="intervals"``), its colour-line recolouring (``base_chroma="colorline"``) and the encoder's
exposure-centre rate channels (``centre_rates``) against a NumPy reference, the base fed to the backbone
(``base_into="input"``), the spike encoder on
``fused_bias_act``, spike features resized by ``upfirdn2d``; each against the plain path."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kernels.packed_bits import unpack_bits
from kernels.resample import resize
from kernels.spike_intervals import spike_intervals
from svrt_data.loader import ClipKey, SpikeDeblurDataset, collate_clips
from svrt_data.loader.spike_transform import SpikeTransform
from svrt_data.reconstruct import interval_rate
from svrt_data.synth.photos import LUMA
from svrt_model import VRTSpike
from svrt_model.errors import ModelConfigError, ModelInputError, UntrainedSpyNetWarning
from svrt_model.spike.base import BT601_LUMA, SpikeLumaBase, colorline_chroma
from svrt_model.spike.fusion import resize_features
from svrt_model.spike.inputs import RawSpikes
from tests.model.spike_reference import build, inputs, micro_config
from tests.test_dataset import BINS, build_coord_store


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    """A voxel batch and the raw batch of the same clip (2 frames, 64x64 RGB crops, 32x32 spikes)."""
    store = build_coord_store(tmp_path_factory.mktemp("vrt_raw"), rgb=(128, 160), spike=(64, 80), frames=(6, 5))
    kw = {"clip_len": 2, "stride": 1, "crop": (64, 64), "seed": 2}
    vox = SpikeDeblurDataset(store, "train", spike_input="voxels", **kw)
    raw = SpikeDeblurDataset(store, "train", spike_input="raw", **kw)
    keys = [ClipKey(1, 3)]
    return collate_clips(vox.__getitems__(keys)), collate_clips(raw.__getitems__(keys))


def _copy(model: VRTSpike, **changes) -> VRTSpike:
    """A model of ``model``'s config with ``changes`` and the same weights (new parameters stay as built, a
    dropped refiner's are left out)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        other = VRTSpike(dataclasses.replace(model.config, **changes)).double()
    missing, unexpected = other.load_state_dict(model.state_dict(), strict=False)
    assert all(k.startswith("spike_base.refiner.") for k in unexpected), unexpected
    assert all(k.startswith(("spike_input.", "spike_base.refiner.")) for k in missing), missing
    other.vrt.spynet.weights_loaded = True
    return other.eval()


def _rgb_and_flows(batch: dict) -> tuple[torch.Tensor, tuple]:
    rgb = batch["blur"].double() / 255.0
    b, t, _, h, w = rgb.shape
    return rgb, inputs(b, t, h, w, 1, seed=3)[2]


def test_raw_input_with_gamma_one_equals_the_voxel_input_end_to_end(batches) -> None:
    vox, raw = batches
    model = build(micro_config(frames=2, spike_bins=BINS)).eval()
    raw_model = _copy(model, spike_input="raw")
    assert [k for k in raw_model.state_dict() if k.startswith("spike_input")] == ["spike_input.accumulator.raw_gamma"]
    rgb, flows = _rgb_and_flows(vox)
    spikes = RawSpikes.from_batch(SpikeTransform(spike_input="raw", bins=BINS, raw_output="bits")(raw))
    with torch.no_grad():
        want = model(rgb, vox["spikes"].double(), flows)
        got = raw_model(rgb, spikes, flows)
        accumulated = raw_model.spike_input(spikes)
    assert torch.equal(accumulated, vox["spikes"].double())  # gamma = 1: the stored voxels, bit for bit
    assert torch.equal(got, want)


def test_raw_input_learns_its_decays_through_the_model(batches) -> None:
    _, raw = batches
    bins = 3  # several spike frames a bin, so that the decays matter
    model = build(micro_config(frames=2, spike_bins=bins, spike_input="raw", raw_init_gamma=0.8)).train()
    spikes = RawSpikes.from_batch(SpikeTransform(spike_input="raw", bins=bins, raw_output="bits")(raw))
    rgb, flows = _rgb_and_flows(raw)
    model(rgb, spikes, flows).square().mean().backward()
    grad = model.spike_input.accumulator.raw_gamma.grad
    assert grad is not None and torch.isfinite(grad).all() and (grad != 0).all()
    torch.testing.assert_close(model.spike_input.accumulator.gamma, torch.full((bins,), 0.8, dtype=torch.float64))


def test_raw_input_errors(batches) -> None:
    _, raw = batches
    model = build(micro_config(frames=2, spike_bins=BINS, spike_input="raw")).eval()
    rgb, flows = _rgb_and_flows(raw)
    with pytest.raises(ModelInputError, match=r"expected RawSpikes\(bits, ranges\) \(RawSpikes.from_batch\(batch\) "
                                              r"of a batch .*got dict"):
        model(rgb, {"spike_bits": raw["spike_bits"]}, flows)
    # voxels would bypass the learnable decays: refused, not silently taken
    with pytest.raises(ModelInputError, match=r"got Tensor; a model fed precomputed voxels needs spike_input='voxels'"):
        model(rgb, torch.zeros(1, 2, BINS, 32, 32, dtype=torch.float64), flows)
    with pytest.raises(ModelInputError, match=r"the batch has no \['spike_bin_ranges'\]; build the dataset with "
                                              r"spike_input='raw'"):
        RawSpikes.from_batch(raw)
    with pytest.raises(ModelConfigError, match=r"raw_init_gamma=0.0; expected a decay in \(0, 1\]"):
        micro_config(spike_input="raw", raw_init_gamma=0.0)


def test_interval_input_feeds_the_encoder_the_interval_voxels(batches) -> None:
    vox, raw = batches
    model = build(micro_config(frames=2, spike_bins=BINS)).eval()
    interval_model = _copy(model, spike_input="intervals", interval_spikes=1)
    assert not [k for k in interval_model.state_dict() if k.startswith("spike_input")]  # no parameters
    rgb, flows = _rgb_and_flows(vox)
    bits = SpikeTransform(spike_input="raw", bins=BINS, raw_output="bits")(raw)
    spikes = RawSpikes.from_batch(bits)
    voxels = spike_intervals(bits["spike_bits"], bits["spike_bin_ranges"], spikes_each_side=1, dtype=torch.float64)
    assert voxels.shape == vox["spikes"].shape and not torch.equal(voxels, vox["spikes"].double())
    with torch.no_grad():
        got = interval_model(rgb, spikes, flows)
        want = model(rgb, voxels, flows)  # the same weights fed those voxels as voxels
    assert torch.equal(got, want)
    with pytest.raises(ModelInputError, match=r"spike_input='intervals'.*got Tensor; a model fed precomputed voxels"):
        interval_model(rgb, vox["spikes"].double(), flows)
    with pytest.raises(ModelConfigError, match=r"interval_spikes=0; expected an integer >= 1"):
        micro_config(spike_input="intervals", interval_spikes=0)


def test_fused_bias_act_encoder_equals_the_relu_encoder() -> None:
    model = build(micro_config(frames=2)).train()
    fused = _copy(model, encoder_activation="fused_bias_act").train()
    assert fused.spike_encoder.activation == "fused_bias_act"
    assert all(m.activation == "fused_bias_act" for m in fused.spike_encoder.res0)
    rgb, spikes, flows = inputs(1, 2, 32, 32, 4, (16, 16))
    outs, grads = [], []
    for m in (model, fused):
        out = m(rgb, spikes, flows)
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append({n: p.grad for n, p in m.named_parameters() if n.startswith("spike_encoder")})
    # the same numbers up to the order of the bias and residual additions (float64)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-12)
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-9, atol=1e-12, msg=name)
    with pytest.raises(ModelConfigError, match=r"encoder_activation='gelu' is unknown"):
        micro_config(encoder_activation="gelu")


def test_fused_bias_act_keeps_channels_last_memory() -> None:
    from svrt_model.spike.encoder import conv_relu

    conv = torch.nn.Conv3d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 3, 5, 7).contiguous(memory_format=torch.channels_last_3d)
    want = conv_relu(conv, x, "relu")
    got = conv_relu(conv, x, "fused_bias_act", residual=None)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert got.permute(0, 2, 3, 4, 1).is_contiguous()  # B C T H W view of B T H W C memory


def test_upfirdn2d_resize_of_spike_features() -> None:
    feats = torch.randn(2, 3, 4, 8, 10, dtype=torch.float64)  # B C T h w
    got = resize_features(feats, (16, 20), "upfirdn2d")
    for t in range(4):
        torch.testing.assert_close(got[:, :, t], resize(feats[:, :, t], (16, 20)), rtol=0, atol=0)
    assert resize_features(feats, (8, 10), "upfirdn2d") is feats
    model = build(micro_config(frames=2)).eval()
    anti = _copy(model, spike_resize="upfirdn2d")
    assert anti.cross_attn_fuse.resize == "upfirdn2d"
    rgb, spikes, flows = inputs(1, 2, 32, 32, 4, (16, 16))  # half-size spikes: every scale is resized
    with torch.no_grad():
        plain, filtered = model(rgb, spikes, flows), anti(rgb, spikes, flows)
    assert torch.isfinite(filtered).all() and (filtered - plain).abs().max() > 1e-6
    same = inputs(1, 2, 32, 32, 4)  # full-size spikes: nothing to resize, the same numbers
    with torch.no_grad():
        assert torch.equal(anti(same[0], same[1], same[2]), model(same[0], same[1], same[2]))
    early = build(micro_config(frames=2, fusion="early", spike_resize="upfirdn2d")).eval()
    with torch.no_grad():
        assert torch.isfinite(early(rgb, spikes, flows)).all()


@pytest.mark.needs_cuda
def test_cuda_raw_input_and_fused_encoder(batches) -> None:
    """On the GPU: the accumulator kernel gives the voxel path's numbers through the whole model, and the
    fused bias+ReLU encoder the ReLU encoder's (float32)."""
    vox, raw = batches
    model = build(micro_config(frames=2, spike_bins=BINS), dtype=torch.float32).eval().cuda()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        raw_model = VRTSpike(dataclasses.replace(model.config, spike_input="raw",
                                                 encoder_activation="fused_bias_act")).cuda().eval()
    raw_model.load_state_dict(model.state_dict(), strict=False)
    raw_model.vrt.spynet.weights_loaded = True
    rgb, flows = _rgb_and_flows(vox)
    rgb, flows = rgb.float().cuda(), tuple([f.float().cuda() for f in level] for level in flows)
    bits_batch = SpikeTransform(spike_input="raw", bins=BINS, raw_output="bits")(
        {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in raw.items()})
    spikes = RawSpikes.from_batch(bits_batch)
    assert spikes.bits.is_cuda and spikes.ranges.is_cuda
    with torch.no_grad():
        assert torch.equal(raw_model.spike_input(spikes), vox["spikes"].float().cuda())
        torch.testing.assert_close(raw_model(rgb, spikes, flows), model(rgb, vox["spikes"].float().cuda(), flows),
                                   rtol=1e-4, atol=1e-4)


def _centre_rate_reference(bits: torch.Tensor, ranges: torch.Tensor, m: int) -> np.ndarray:
    """``(B, T, Hs, Ws)`` rates at each frame's exposure centre from ``interval_rate`` on the clip's frames."""
    frames = unpack_bits(bits, bits.shape[-1] * 8).numpy()
    b, t = ranges.shape[:2]
    out = np.zeros((b, t) + frames.shape[-2:])
    for i in range(b):
        lo, hi = int(ranges[i, :, :, 0].min()), int(ranges[i, :, :, 1].max())
        for j in range(t):
            centre = (int(ranges[i, j, 0, 0]) + int(ranges[i, j, -1, 1]) - 1) // 2
            out[i, j] = interval_rate(frames[i, lo:hi], centre - lo, m)
    return out


def _luma_base_reference(rgb: torch.Tensor, bits: torch.Tensor, ranges: torch.Tensor, gain: float, m: int
                         ) -> torch.Tensor:
    """``up(gain * rate - down(luma))`` per frame, the rate from ``svrt_data.reconstruct.interval_rate`` on
    the clip's frames and the down-sampling as 2x2 block means (NumPy), the way back bicubic."""
    b, t, _, h, w = rgb.shape
    rate = _centre_rate_reference(bits, ranges, m)
    luma = np.einsum("btchw,c->bthw", rgb.numpy(), np.array([0.299, 0.587, 0.114]))
    hs, ws = rate.shape[-2:]
    delta = gain * rate - luma.reshape(b, t, hs, h // hs, ws, w // ws).mean((3, 5))
    up = F.interpolate(torch.from_numpy(delta).flatten(0, 1)[:, None], size=(h, w), mode="bicubic",
                       align_corners=False)
    return up.unflatten(0, (b, t))


@pytest.mark.parametrize("spike_input", ["raw", "intervals"])
def test_spike_base_adds_the_interval_luminance(batches, spike_input: str) -> None:
    _, raw = batches
    model = build(micro_config(frames=2, spike_bins=BINS, spike_input=spike_input)).eval()
    based = _copy(model, spike_base="intervals", spike_base_gain=1.5, interval_spikes=2)
    assert based.state_dict().keys() == model.state_dict().keys()  # the base has no parameters
    bits = SpikeTransform(spike_input="raw", bins=BINS, raw_output="bits")(raw)
    spikes = RawSpikes.from_batch(bits)
    rgb, flows = _rgb_and_flows(raw)
    with torch.no_grad():
        delta = based(rgb, spikes, flows) - model(rgb, spikes, flows)
    np.testing.assert_array_equal(np.float32(BT601_LUMA), LUMA)  # the synthetic sensor's weights
    want = _luma_base_reference(rgb, bits["spike_bits"], bits["spike_bin_ranges"], 1.5, 2)
    assert want.abs().amax() > 0.05  # the spikes' luminance is not the blurry one
    torch.testing.assert_close(delta, want.expand_as(delta), rtol=0, atol=1e-6)  # interval_rate is float32


def test_spike_base_config_errors() -> None:
    with pytest.raises(ModelConfigError, match=r"spike_base='intervals' reads packed spike bits, but "
                                               r"spike_input='voxels'; set spike_input to one of"):
        micro_config(spike_base="intervals")
    with pytest.raises(ModelConfigError, match=r"fusion='rgb_only' ignores them"):
        micro_config(spike_base="intervals", spike_input="raw", fusion="rgb_only")
    with pytest.raises(ModelConfigError, match=r"spike_base_gain=0.0; expected a positive number"):
        micro_config(spike_base="intervals", spike_input="raw", spike_base_gain=0.0)
    with pytest.raises(ModelConfigError, match=r"spike_base='mean' is unknown; expected one of \('none', "):
        micro_config(spike_base="mean", spike_input="raw")


@pytest.mark.parametrize("spike_base", ["none", "intervals"])
def test_centre_rates_follow_the_bins_into_the_encoder(batches, spike_base: str) -> None:
    _, raw = batches
    model = build(micro_config(frames=2, spike_bins=BINS, spike_input="raw", spike_base=spike_base,
                               spike_base_gain=1.5, centre_rates=(3, 1))).eval()
    assert model.spike_encoder.in_proj.in_channels == BINS + 2
    bits = SpikeTransform(spike_input="raw", bins=BINS, raw_output="bits")(raw)
    spikes = RawSpikes.from_batch(bits)
    rgb, flows = _rgb_and_flows(raw)
    seen = []
    hook = model.spike_encoder.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    with torch.no_grad():
        out = model(rgb, spikes, flows)
        feats = model.encode_spikes(spikes)
    hook.remove()
    assert len(seen) == 2 and torch.equal(seen[0], seen[1]) and len(feats) == 4
    vox = seen[0]  # B T K+2 Hs Ws, as the encoder takes it
    torch.testing.assert_close(vox[:, :, :BINS], model.spike_input(spikes), rtol=0, atol=0)
    for i, m in enumerate((3, 1)):
        want = 1.5 * _centre_rate_reference(bits["spike_bits"], bits["spike_bin_ranges"], m)
        assert np.ptp(want) > 0.1  # the rates vary: the test can tell channels apart
        np.testing.assert_allclose(vox[:, :, BINS + i].numpy(), want, rtol=0, atol=1e-6)  # interval_rate is float32
    if spike_base == "intervals":  # the base shares the one pass over the bits and equals its own computation
        plain = _copy(model, spike_base="none")
        with torch.no_grad():
            delta = out - plain(rgb, spikes, flows)
        want = _luma_base_reference(rgb, bits["spike_bits"], bits["spike_bin_ranges"], 1.5, 2)
        torch.testing.assert_close(delta, want.expand_as(delta), rtol=0, atol=1e-6)


def _bin_rate_reference(bits: torch.Tensor, ranges: torch.Tensor, m: int) -> np.ndarray:
    """``(B, T, K, Hs, Ws)`` rates at each bin's centre from ``interval_rate`` on the clip's frames."""
    frames = unpack_bits(bits, bits.shape[-1] * 8).numpy()
    b, t, k = ranges.shape[:3]
    out = np.zeros((b, t, k) + frames.shape[-2:])
    for i in range(b):
        lo, hi = int(ranges[i, :, :, 0].min()), int(ranges[i, :, :, 1].max())
        for j in range(t):
            for n in range(k):
                out[i, j, n] = interval_rate(frames[i, lo:hi], (int(ranges[i, j, n].sum()) - 1) // 2 - lo, m)
    return out


def _randomize(refiner: torch.nn.Module) -> None:
    for conv in refiner.net[::2]:
        conv.weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(conv.in_channels))
        conv.bias.normal_(0, 0.1, generator=torch.Generator().manual_seed(conv.out_channels))


def _refiner_reference(refiner: torch.nn.Module, rgb: torch.Tensor, inputs: np.ndarray, extra: np.ndarray | None,
                       gain: float) -> torch.Tensor:
    """The refiner's layers by hand on ``gain * inputs (B, T, M, Hs, Ws)``, the 2x2-mean blurry luma and
    ``gain * extra``, resized back bicubically: the refined base's delta over the plain one."""
    b, t, _, h, w = rgb.shape
    luma = (rgb * torch.tensor(BT601_LUMA, dtype=torch.float64).view(3, 1, 1)).sum(2).flatten(0, 1)[:, None]
    luma = F.avg_pool2d(luma, (h // inputs.shape[-2], w // inputs.shape[-1]))
    x = [gain * torch.from_numpy(inputs).flatten(0, 1), luma]
    x = torch.cat(x + ([gain * torch.from_numpy(extra).flatten(0, 1)] if extra is not None else []), 1)
    for i, conv in enumerate(refiner.net[::2]):
        x = F.conv2d(x, conv.weight, conv.bias, padding=1)
        x = x.relu() if i < len(refiner.net) // 2 else x
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).unflatten(0, (b, t))


@pytest.mark.parametrize("refine_bins", [False, True])
def test_refined_base_starts_as_the_plain_one_and_adds_its_refiner(batches, refine_bins) -> None:
    _, raw = batches
    plain = build(micro_config(frames=2, spike_bins=BINS, spike_input="raw", spike_base="intervals",
                               spike_base_gain=1.5, centre_rates=(3, 1))).eval()
    refined = _copy(plain, spike_base="refined", refine_channels=8, refine_rates=(4, 1), refine_bins=refine_bins)
    refiner = refined.spike_base.refiner
    # m = 4, 1, the base's 2 and the blurry luma (and the m = 2 rate at each of the K bins' centres)
    assert refiner.net[0].in_channels == 4 + (BINS if refine_bins else 0)
    assert refined._rate_ms == (3, 1, 4, 1, 2)  # the encoder's, then the refiner's and the base's
    bits = SpikeTransform(spike_input="raw", bins=BINS, raw_output="bits")(raw)
    spikes = RawSpikes.from_batch(bits)
    rgb, flows = _rgb_and_flows(raw)
    with torch.no_grad():
        assert torch.equal(refined(rgb, spikes, flows), plain(rgb, spikes, flows))  # the last conv starts at zero
        _randomize(refiner)
        delta = refined(rgb, spikes, flows) - plain(rgb, spikes, flows)
        # the reference: the refiner's layers by hand on the rates of svrt_data's interval_rate
        rates = np.stack([_centre_rate_reference(bits["spike_bits"], bits["spike_bin_ranges"], m)
                          for m in (4, 1, 2)], 2)
        per_bin = _bin_rate_reference(bits["spike_bits"], bits["spike_bin_ranges"], 2) if refine_bins else None
        if per_bin is not None:
            assert np.ptp(per_bin, axis=2).max() > 0.1  # the readings differ across the exposure
        want = _refiner_reference(refiner, rgb, rates, per_bin, 1.5)
    assert want.abs().amax() > 0.01
    torch.testing.assert_close(delta, want.expand_as(delta), rtol=0, atol=2e-5)  # interval_rate is float32
    with pytest.raises(ModelInputError, match=r"a refined base needs the caller's interval rates"):
        refined.spike_base(rgb, spikes)
    if refine_bins:
        with pytest.raises(ModelInputError, match=rf"reads the interval rates at {BINS} bin centres \(bins=...\), "
                                                  "got none"):
            refined.spike_base(rgb, spikes, torch.zeros(1, 2, 3, 4, 4))


@pytest.mark.parametrize("fusion", ["cross_attention", "early"])
def test_base_into_input_feeds_the_corrected_frames_to_the_backbone(batches, fusion: str) -> None:
    _, raw = batches
    rates = (3, 1) if fusion == "cross_attention" else ()
    out_mode = build(micro_config(frames=2, spike_bins=BINS, spike_input="raw", spike_base="refined", fusion=fusion,
                                  spike_base_gain=1.5, centre_rates=rates, refine_channels=8)).eval()
    with torch.no_grad():
        _randomize(out_mode.spike_base.refiner)
    in_mode = _copy(out_mode, base_into="input")
    no_base = _copy(out_mode, spike_base="none")
    spikes = RawSpikes.from_batch(SpikeTransform(spike_input="raw", bins=BINS, raw_output="bits")(raw))
    rgb, flows = _rgb_and_flows(raw)
    with torch.no_grad():
        base = out_mode(rgb, spikes, flows) - no_base(rgb, spikes, flows)  # the base, on all three channels
        assert base.abs().amax() > 0.01
        got = in_mode(rgb, spikes, flows)
        want = no_base(rgb + base, spikes, flows)  # the backbone restores from the corrected frames
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
        assert (got - out_mode(rgb, spikes, flows)).abs().amax() > 1e-3  # a different model than the output's
        for m in (in_mode, out_mode, no_base):  # the identity start: both places give the blurry frames + base
            torch.nn.init.zeros_(m.vrt.conv_last.weight)
            torch.nn.init.zeros_(m.vrt.conv_last.bias)
        torch.testing.assert_close(in_mode(rgb, spikes, flows), rgb + base, rtol=0, atol=1e-9)
        torch.testing.assert_close(out_mode(rgb, spikes, flows), rgb + base, rtol=0, atol=1e-9)
    in_mode.train()
    in_mode(rgb, spikes, flows).square().mean().backward()  # the refiner learns through the backbone too
    assert in_mode.spike_base.refiner.net[0].weight.grad.abs().amax() > 0


def _colorline_reference(rgb: np.ndarray, luma: np.ndarray, r: int, eps: float) -> np.ndarray:
    """``colorline_chroma`` by hand (NumPy, pixel by pixel): the least-squares line of the chroma offsets on the
    luma in each window of replicated edges, its coefficients averaged over the windows holding a pixel."""
    n, _, h, w = rgb.shape
    y = np.einsum("nchw,c->nhw", rgb, np.array(BT601_LUMA))
    d = rgb - y[:, None]
    coef = np.zeros((n, 2, 3, h, w))  # a, b per channel at each window centre
    for k in range(n):
        for i in range(h):
            for j in range(w):
                rows = np.clip(np.arange(i - r, i + r + 1), 0, h - 1)
                cols = np.clip(np.arange(j - r, j + r + 1), 0, w - 1)
                yw = y[k][np.ix_(rows, cols)].ravel()
                dw = d[k][:, rows][:, :, cols].reshape(3, -1)
                a = ((yw * dw).mean(1) - yw.mean() * dw.mean(1)) / (yw.var() + eps)
                coef[k, :, :, i, j] = a, dw.mean(1) - a * yw.mean()
    pad = np.pad(coef, ((0, 0), (0, 0), (0, 0), (r, r), (r, r)), mode="edge")
    avg = sum(pad[..., i:i + h, j:j + w] for i in range(2 * r + 1) for j in range(2 * r + 1)) / (2 * r + 1) ** 2
    return luma + avg[:, 0] * luma + avg[:, 1]


@pytest.mark.parametrize("radius", [1, 2])
def test_colorline_chroma_matches_the_pixel_loop_and_keeps_the_luma(radius: int) -> None:
    gen = torch.Generator().manual_seed(radius)
    rgb = torch.rand(2, 3, 9, 11, generator=gen, dtype=torch.float64)
    luma = torch.rand(2, 1, 9, 11, generator=gen, dtype=torch.float64)
    got = colorline_chroma(rgb, luma, radius, eps=1e-4)
    want = _colorline_reference(rgb.numpy(), luma.numpy(), radius, 1e-4)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-10)
    weights = torch.tensor(BT601_LUMA, dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close((got * weights).sum(1, keepdim=True), luma, rtol=0, atol=1e-12)  # luma kept
    assert colorline_chroma(rgb.float(), luma.float(), radius).dtype == torch.float32
    small = (rgb[:1, :, :5, :6].clone().requires_grad_(), luma[:1, :, :5, :6].clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda x, y: colorline_chroma(x, y, radius, eps=1e-2), small)


def test_colorline_chroma_gives_back_a_blurred_two_colour_scene() -> None:
    """Blur is linear: a scene mixing two colours stays on their colour line when blurred, so the sharp luma
    recolours the blurry frame into the sharp one (where every window sees the luma vary)."""
    h, w = 12, 24
    x = torch.arange(w, dtype=torch.float64) / w
    alpha = (0.3 * x + 0.6 * (x > 0.5)).expand(h, w)  # a ramp with a sharp edge
    c1, c2 = torch.tensor([0.9, 0.2, 0.1], dtype=torch.float64), torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64)

    def scene(a: torch.Tensor) -> torch.Tensor:
        return (a * c1.view(3, 1, 1) + (1 - a) * c2.view(3, 1, 1))[None]

    blurred = F.avg_pool1d(F.pad(alpha[:, None], (3, 3), mode="replicate"), 7, stride=1)[:, 0]  # motion blur
    sharp, blurry = scene(alpha), scene(blurred)
    weights = torch.tensor(BT601_LUMA, dtype=torch.float64).view(1, 3, 1, 1)
    luma = (sharp * weights).sum(1, keepdim=True)
    assert (blurry + luma - (blurry * weights).sum(1, keepdim=True) - sharp).abs().amax() > 0.05  # luma alone: off
    torch.testing.assert_close(colorline_chroma(blurry, luma, 1, eps=1e-12), sharp, rtol=0, atol=1e-6)


def test_colorline_base_recolours_the_spike_luminance(batches) -> None:
    _, raw = batches
    model = build(micro_config(frames=2, spike_bins=BINS, spike_input="raw")).eval()
    based = _copy(model, spike_base="intervals", spike_base_gain=1.5, interval_spikes=2, base_chroma="colorline",
                  colorline_radius=2)
    assert based.spike_base.chroma_radius == 2
    bits = SpikeTransform(spike_input="raw", bins=BINS, raw_output="bits")(raw)
    spikes = RawSpikes.from_batch(bits)
    rgb, flows = _rgb_and_flows(raw)
    with torch.no_grad():
        delta = based(rgb, spikes, flows) - model(rgb, spikes, flows)
        grey = _luma_base_reference(rgb, bits["spike_bits"], bits["spike_bin_ranges"], 1.5, 2)
    # the reference: 2x2 block means, the colour lines by hand on 1.5 x interval_rate, bicubic back
    b, t, _, h, w = rgb.shape
    rate = 1.5 * _centre_rate_reference(bits["spike_bits"], bits["spike_bin_ranges"], 2)
    hs, ws = rate.shape[-2:]
    small = rgb.numpy().reshape(b * t, 3, hs, h // hs, ws, w // ws).mean((3, 5))
    recoloured = _colorline_reference(small, rate.reshape(b * t, 1, hs, ws), 2, 1e-5)
    want = F.interpolate(torch.from_numpy(recoloured - small), size=(h, w), mode="bicubic", align_corners=False)
    torch.testing.assert_close(delta, want.unflatten(0, (b, t)), rtol=0, atol=1e-5)  # interval_rate is float32
    assert (delta - grey).abs().amax() > 0.01  # the colours moved, not only the luminance


def test_refined_base_config_errors() -> None:
    with pytest.raises(ModelConfigError, match=r"refine_rates=\[3, 3\]; expected distinct integers >= 1"):
        micro_config(spike_input="raw", spike_base="refined", refine_rates=(3, 3))
    with pytest.raises(ModelConfigError, match=r"refine_channels=0; expected an integer >= 1"):
        micro_config(spike_input="raw", spike_base="refined", refine_channels=0)
    with pytest.raises(ModelConfigError, match=r"spike_base='refined' reads packed spike bits"):
        micro_config(spike_base="refined")
    with pytest.raises(ModelConfigError, match=r"refine_bins=True feeds the refiner of spike_base='refined', but "
                                               r"spike_base='intervals'"):
        micro_config(spike_input="raw", spike_base="intervals", refine_bins=True)
    with pytest.raises(ModelConfigError, match=r"refine_bins=1; expected true or false"):
        micro_config(spike_input="raw", spike_base="refined", refine_bins=1)
    with pytest.raises(ModelInputError, match=r"bin_inputs are read by the refiner; give rate_inputs too"):
        SpikeLumaBase(2.0, 2, 0, 8, BINS)
    with pytest.raises(ModelConfigError, match=r"base_into='input' places the spike luminance base, but "
                                               r"spike_base='none'; set spike_base to"):
        micro_config(spike_input="raw", base_into="input")
    with pytest.raises(ModelConfigError, match=r"base_into='middle' is unknown; expected one of \('output', 'input'\)"):
        micro_config(spike_input="raw", spike_base="refined", base_into="middle")
    with pytest.raises(ModelConfigError, match=r"base_chroma='colorline' recolours the spike luminance base, but "
                                               r"spike_base='none'"):
        micro_config(spike_input="raw", base_chroma="colorline")
    with pytest.raises(ModelConfigError, match=r"colorline_radius=0; expected an integer >= 1"):
        micro_config(spike_input="raw", spike_base="intervals", base_chroma="colorline", colorline_radius=0)
    with pytest.raises(ModelConfigError, match=r"base_chroma='lab' is unknown; expected one of \('blurry', "):
        micro_config(spike_input="raw", spike_base="intervals", base_chroma="lab")


def test_centre_rates_config_errors() -> None:
    with pytest.raises(ModelConfigError, match=r"centre_rates=\[2, 2\]; expected distinct integers >= 1"):
        micro_config(spike_input="raw", centre_rates=(2, 2))
    with pytest.raises(ModelConfigError, match=r"centre_rates=\[0\]; expected distinct integers >= 1"):
        micro_config(spike_input="raw", centre_rates=(0,))
    with pytest.raises(ModelConfigError, match=r"centre_rates=\[2\] are spike-encoder channels read from packed "
                                               r"bits, but fusion='cross_attention', spike_input='voxels'"):
        micro_config(centre_rates=(2,))
    with pytest.raises(ModelConfigError, match=r"fusion='early', spike_input='raw'"):
        micro_config(spike_input="raw", fusion="early", centre_rates=(2,))
    with pytest.raises(ModelConfigError, match=r"centre_rates: expected integers only"):
        micro_config(spike_input="raw", centre_rates=(2.5,))
