"""Whole-sequence restoration with the published tiling: the plan, tiled == untiled, stores, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from svrt_data.loader.clip_geometry import AxisScale
from svrt_data.loader.dataset import SpikeDeblurDataset
from svrt_data.loader.spike_transform import SpikeTransform
from svrt_data.store import open_store
from svrt_errors import StoreError, SvrtValueError
from svrt_model.restore import (
    DEFAULT_TILE,
    InputRules,
    Tile,
    axis_plan,
    input_rules,
    mirror_index,
    restore_clip,
    restore_split,
    tile_starts,
    with_clip_len,
)
from tests.model.standin import ClipMeanModel, IdentityModel, StencilModel

RULES = InputRules(frame_multiple=4, min_frames=2, size_multiple=8, min_size=(16, 16))
VOXELS = SpikeTransform(spike_input="voxels", log1p=False)


# -- the plan --------------------------------------------------------------------------------------------
def official_starts(length: int, tile: int, overlap: int) -> list[int]:
    """main_test_vrt.py, written out: range(0, L - P, P - ov) + [max(0, L - P)]."""
    return list(range(0, length - tile, tile - overlap)) + [max(0, length - tile)]


@pytest.mark.parametrize(("length", "tile", "overlap"), [(100, 32, 8), (64, 32, 8), (65, 32, 9), (180, 64, 20),
                                                         (720, 192, 20), (1280, 192, 20), (33, 32, 7), (20, 4, 2)])
def test_starts_and_weights_follow_the_official_protocol(length, tile, overlap):
    assert tile_starts(length, tile, overlap) == official_starts(length, tile, overlap)
    plan = axis_plan(length, tile, overlap, AxisScale(length, length), multiple=1, minimum=1)
    coverage = torch.zeros(length)
    for s, w in zip(plan.starts, plan.weights, strict=True):
        assert set(w.unique().tolist()) <= {0.0, 1.0}
        coverage[s : s + tile] += w
    assert coverage.min() >= 1 and coverage.max() <= 2  # every pixel kept by some patch, at most two
    first, last = plan.weights[0], plan.weights[-1]
    assert first[: overlap // 2].min() == 1 and last[-(overlap // 2):].min() == 1  # image borders are kept
    if len(plan.starts) > 1:  # interior borders: floor(ov/2) cleared at a start, ceil(ov/2) at an end
        assert first[tile - (overlap + 1) // 2 :].max() == 0 and first[tile - (overlap + 1) // 2 - 1] == 1
        assert last[: overlap // 2].max() == 0 and last[overlap // 2] == 1


def test_tiles_larger_than_the_frame_are_one_patch():
    assert tile_starts(50, 64, 20) == [0] and tile_starts(50, 0, 20) == [0]
    plan = axis_plan(50, 64, 20, AxisScale(50, 25), multiple=8, minimum=64)
    assert plan.starts == (0,) and plan.size == 50 and plan.padded == 64 and plan.spike_padded == 32
    assert plan.weights[0].min() == 1


def test_mirror_index_is_the_official_flip_pad():
    x = torch.arange(7)
    for pad in range(0, 8):
        official = torch.cat([x, torch.flip(x[-pad:], [0])]) if pad else x
        assert torch.equal(x[mirror_index(7, 7 + pad)], official)
    assert mirror_index(2, 7).tolist() == [0, 1, 1, 0, 0, 1, 1]  # longer pads keep mirroring


def test_tile_parse_and_validation():
    assert Tile.parse("none") is None and Tile.parse("default") == DEFAULT_TILE == Tile(18, 192, 192, 2, 20)
    assert Tile.parse("6x64x96") == Tile(6, 64, 96, 2, 20)
    assert Tile.parse("2x16x0") == Tile(2, 16, 0, 1, 15)  # overlaps shrink to fit small tiles
    assert Tile.parse("0x0x0").untiled
    with pytest.raises(SvrtValueError, match=r"expected 'none', 'default' or TxHxW .* got '18x192'"):
        Tile.parse("18x192")
    with pytest.raises(SvrtValueError, match=r"frame_overlap \(4\) must be smaller than frames \(4\)"):
        Tile(4, 64, 64, 4, 20)
    with pytest.raises(SvrtValueError, match=r"overlap \(64\) must be smaller than the patch height \(64\)"):
        Tile(4, 64, 128, 2, 64)
    with pytest.raises(SvrtValueError, match="frames must be an integer >= 0"):
        Tile(-1)


# -- one clip ----------------------------------------------------------------------------------------------
def clip(b=1, t=5, h=64, w=96, hs=32, ws=48, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((b, t, 3, h, w), generator=g), torch.rand((b, t, k, hs, ws), generator=g)


@pytest.mark.parametrize("spike_size", [(64, 96), (32, 48)], ids=["full-res spikes", "half-res spikes"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_tiled_equals_untiled_when_the_receptive_field_fits_the_margin(spike_size, batch_size):
    rgb, spikes = clip(b=2, hs=spike_size[0], ws=spike_size[1])
    model = StencilModel(radius=4)
    tile = Tile(frames=3, height=32, width=48, frame_overlap=1, overlap=8)  # radius 4 = overlap / 2
    whole = restore_clip(model, rgb, spikes, tile=None, rules=RULES)
    tiled = restore_clip(model, rgb, spikes, tile=tile, rules=RULES, batch_size=batch_size)
    assert torch.equal(tiled, whole)
    # 3 x 3 patches of 32 x 48 (starts 0, 24, 32 and 0, 40, 48), batched; the untiled pass padded T to 8
    chunks = [min(batch_size, 9 - i) for i in range(0, 9, batch_size)]
    assert model.calls == [(2, 8, 3, 64, 96)] + [(2 * n, 5, 3, 32, 48) for n in chunks]
    # the spike term matters: cutting spike tiles anywhere else would change the result
    assert not torch.equal(whole, StencilModel(radius=4, spike_weight=0)(rgb, None))


def test_a_receptive_field_wider_than_the_margin_shows_the_seams():
    rgb, spikes = clip()
    model = StencilModel(radius=5)
    tile = Tile(frames=0, height=32, width=48, overlap=8)
    diff = (restore_clip(model, rgb, spikes, tile=tile, rules=RULES) - model(rgb, spikes)).abs()
    assert diff.max() > 1e-4
    assert diff[..., :27, :43].max() == 0  # where the field fits inside the first patch nothing changed
    assert diff[..., :28, :44].max() > 0  # on its kept border it does


def test_untiled_pads_by_mirroring_and_crops():
    rgb, spikes = clip(h=60, w=100, hs=30, ws=50)
    seen = []

    def model(x, s):
        seen.append((tuple(x.shape), tuple(s.shape)))
        return x * 2

    out = restore_clip(model, rgb, spikes, tile=None, rules=RULES)
    assert seen == [((1, 8, 3, 64, 104), (1, 8, 4, 32, 52))]  # T to a multiple of 4, H/W of 8
    assert torch.equal(out, rgb * 2)
    # a patch larger than the frame is padded the same way; clips keep their length when tiled
    seen.clear()
    restore_clip(model, rgb[:, :1], spikes[:, :1], tile=Tile(1, 64, 128, 0, 8), rules=RULES)
    assert seen == [((1, 2, 3, 64, 104), (1, 2, 4, 32, 52))]  # min_frames 2, no temporal multiple


def test_spike_tiles_must_lie_on_the_scale_grid():
    rgb, spikes = clip()
    with pytest.raises(SvrtValueError, match=r"the patch height 33 does not map to whole spike pixels .* 1/2\)"):
        restore_clip(StencilModel(1), rgb, spikes, tile=Tile(0, 33, 48, 0, 8), rules=InputRules())
    with pytest.raises(SvrtValueError, match="the overlap height 7 does not map"):
        restore_clip(StencilModel(1), rgb, spikes, tile=Tile(0, 32, 48, 0, 7), rules=InputRules())
    with pytest.raises(SvrtValueError, match=r"patch heights that are multiples of 8 and at least 16, got 12"):
        restore_clip(StencilModel(1), rgb, spikes, tile=Tile(0, 12, 48, 0, 4), rules=RULES)


def test_input_rules_of_vrt_models():
    from svrt_model import VRT, tiny

    vrt = VRT(tiny())
    assert input_rules(vrt) == InputRules(frame_multiple=6, min_frames=2, size_multiple=8, min_size=(64, 64))
    holder = torch.nn.Module()
    holder.vrt = vrt
    assert input_rules(holder) == input_rules(vrt)
    with pytest.raises(SvrtValueError, match="cannot tell what input sizes a StencilModel accepts; pass rules="):
        input_rules(StencilModel(1))


# -- whole sequences from a store ------------------------------------------------------------------------------
def test_store_clips_are_the_protocols_clips(synth_store):
    for n_frames, t, ov in ((7, 3, 1), (7, 4, 2), (7, 7, 2), (7, 2, 0)):
        ds = SpikeDeblurDataset(synth_store, "test", clip_len=t, stride=t - ov, mode="eval")
        assert [ds.spec(i).start for i in range(len(ds))] == official_starts(n_frames, t, ov)


def test_restore_split_tiled_equals_untiled_and_keeps_frame_order(synth_store):
    model = StencilModel(radius=4)
    tile = Tile(frames=3, height=32, width=48, frame_overlap=1, overlap=8)
    tiled = list(restore_split(model, synth_store, "train", tile=tile, transform=VOXELS, rules=RULES,
                               batch_size=3, progress=False))
    whole = list(restore_split(model, synth_store, "train", tile=None, transform=VOXELS, rules=RULES,
                               progress=False))
    store = open_store(synth_store)
    assert [s.name for s in tiled] == [q for s, q in store.sequence_keys() if s == "train"]
    for a, b in zip(tiled, whole, strict=True):
        assert a.output.dtype == torch.uint8 and a.output.shape == (7, 3, 64, 128)
        assert torch.equal(a.output, b.output)
        seq = store.sequence("train", a.name)
        assert torch.equal(a.blur, torch.from_numpy(seq.blur[...]).permute(0, 3, 1, 2))  # N 3 H W
        assert torch.equal(a.sharp, torch.from_numpy(seq.sharp[...]).permute(0, 3, 1, 2))
        assert a.frame_names == [f"{i:06d}" for i in range(7)]
        # the model really ran on the voxels: the output is not the stencil of RGB alone
        rgb = a.blur[None].float() / 255
        assert not torch.equal(a.output, (StencilModel(4, spike_weight=0)(rgb, None)[0] * 255).round().byte())


def test_frames_of_overlapping_clips_are_averaged_in_order(synth_store):
    tile = Tile(frames=3, height=0, width=0, frame_overlap=1)  # starts 0, 2, 4 over 7 frames
    (seq,) = restore_split(ClipMeanModel(), synth_store, "test", tile=tile, transform=VOXELS, rules=InputRules(),
                           progress=False)
    blur = seq.blur.double() / 255
    means = {s: blur[s : s + 3].mean(dim=0) for s in (0, 2, 4)}
    expect = torch.stack([means[0], means[0], (means[0] + means[2]) / 2, means[2], (means[2] + means[4]) / 2,
                          means[4], means[4]])
    assert (seq.output.double() - expect * 255).abs().max() <= 0.5 + 1e-3  # rounded to uint8


def test_clip_len_sets_the_temporal_clips(synth_store):
    assert with_clip_len(None, 5) == Tile(5, 0, 0, 2, 0)
    assert with_clip_len(None, 2) == Tile(2, 0, 0, 1, 0)
    assert with_clip_len(DEFAULT_TILE, 5) == Tile(5, 192, 192, 2, 20)
    assert with_clip_len(DEFAULT_TILE, None) is DEFAULT_TILE
    with pytest.raises(SvrtValueError, match="clip_len must be a positive integer or None, got 0"):
        with_clip_len(None, 0)
    kw = dict(transform=VOXELS, rules=InputRules(), progress=False)
    (a,) = restore_split(ClipMeanModel(), synth_store, "test", tile=None, clip_len=3, **kw)
    (b,) = restore_split(ClipMeanModel(), synth_store, "test", tile=Tile(3, 0, 0, 2, 0), **kw)
    (c,) = restore_split(ClipMeanModel(), synth_store, "test", tile=None, **kw)
    assert torch.equal(a.output, b.output) and not torch.equal(a.output, c.output)


def test_model_mode_and_device_are_restored(synth_store):
    model = IdentityModel().train()
    (seq,) = restore_split(model, synth_store, "test", tile=None, transform=VOXELS, rules=InputRules(),
                           progress=False)
    assert model.training  # back in training mode for the caller (validation inside a training loop)
    assert torch.equal(seq.output, seq.blur)  # x/255 -> round(x * 255) is the identity on uint8


def test_restore_split_errors(synth_store):
    with pytest.raises(StoreError, match=r"no split 'val'; the store has splits \['test', 'train'\]"):
        next(restore_split(IdentityModel(), synth_store, "val", tile=None, transform=VOXELS, rules=InputRules()))
    with pytest.raises(StoreError, match=r"split 'test' has no sequence\(s\) \['nope'\]"):
        next(restore_split(IdentityModel(), synth_store, "test", tile=None, transform=VOXELS, rules=InputRules(),
                           sequences=["nope"]))


def test_raw_spike_input_rebins_to_the_stored_voxels(synth_store):
    """Raw bits re-binned by the transform give the same restoration as the stored voxels."""
    model = StencilModel(radius=1)
    kw = dict(tile=Tile(frames=3, height=32, width=64, frame_overlap=1, overlap=8), rules=RULES, progress=False)
    (a,) = restore_split(model, synth_store, "test", transform=VOXELS, **kw)
    raw = SpikeTransform(spike_input="raw", bins=8, log1p=False)
    (b,) = restore_split(model, synth_store, "test", transform=raw, **kw)
    assert torch.equal(a.output, b.output)
    assert np.isfinite(a.output.numpy()).all()


def test_loader_workers_give_the_same_restoration(synth_store):
    model = StencilModel(radius=1)
    kw = dict(tile=Tile(frames=3, height=32, width=64, frame_overlap=1, overlap=8), transform=VOXELS, rules=RULES,
              progress=False)
    (a,) = restore_split(model, synth_store, "test", **kw)
    (b,) = restore_split(model, synth_store, "test", num_workers=1, **kw)
    assert torch.equal(a.output, b.output) and torch.equal(a.blur, b.blur) and torch.equal(a.sharp, b.sharp)


def test_half_precision_input_reaches_the_model_as_float32():
    rgb, spikes = clip()
    seen = []

    def model(x, s):
        seen.append((x.dtype, s.dtype))
        return x

    out = restore_clip(model, rgb.bfloat16(), spikes.half(), tile=None, rules=InputRules())
    assert seen == [(torch.float32, torch.float32)] and out.dtype == torch.float32
    assert torch.equal(out, rgb.bfloat16().float())


@pytest.mark.needs_cuda
def test_tiled_equals_untiled_on_the_gpu_too():
    rgb, spikes = clip(b=2, hs=32, ws=48)
    rgb, spikes = rgb.cuda(), spikes.cuda()
    model = StencilModel(radius=4).cuda()
    tile = Tile(frames=3, height=32, width=48, frame_overlap=1, overlap=8)
    whole = restore_clip(model, rgb, spikes, tile=None, rules=RULES)
    tiled = restore_clip(model, rgb, spikes, tile=tile, rules=RULES, batch_size=4)
    assert whole.is_cuda and torch.equal(tiled, whole)
    torch.testing.assert_close(whole.cpu(), restore_clip(model.cpu(), rgb.cpu(), spikes.cpu(), tile=None, rules=RULES),
                               rtol=1e-6, atol=1e-6)


def test_restore_clip_input_errors():
    rgb, spikes = clip()
    with pytest.raises(SvrtValueError, match=r"rgb must be float frames \(B, T, 3, H, W\), got torch.uint8"):
        restore_clip(StencilModel(1), (rgb * 255).byte(), spikes, tile=None, rules=RULES)
    with pytest.raises(SvrtValueError, match=r"rgb must be float frames .* got torch.float32 \(5, 3, 64, 96\)"):
        restore_clip(StencilModel(1), rgb[0], spikes, tile=None, rules=RULES)
    with pytest.raises(SvrtValueError, match=r"spikes must be \(B, T, K, Hs, Ws\) with the frames' B, T = \(1, 5\), "
                                             r"got \(1, 4, 4, 32, 48\)"):
        restore_clip(StencilModel(1), rgb, spikes[:, :4], tile=None, rules=RULES)
    with pytest.raises(SvrtValueError, match="batch_size must be a positive integer, got 0"):
        restore_clip(StencilModel(1), rgb, spikes, tile=None, rules=RULES, batch_size=0)


def test_vrt_rules_keep_spynet_above_32_pixels():
    import dataclasses
    import warnings

    from svrt_model import VRT, tiny
    from svrt_model.errors import UntrainedSpyNetWarning

    small = VRT(dataclasses.replace(tiny(), window_size=(2, 4, 4))).eval()
    assert input_rules(small).min_size == (40, 40)  # 8 windows would be 32
    with pytest.raises(RuntimeError, match="sizes should be greater than 0"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        small(torch.rand(1, 2, 3, 32, 32))  # what the rule prevents: SpyNet's pyramid runs out


# -- raw bits (RawSpikes) ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [8, 29, 64])
def test_pack_and_unpack_bits_match_the_numpy_reference(width):
    from kernels.packed_bits import pack_bits, unpack_bits
    from svrt_data.spike_io import pack_frames, unpack_frames

    packed = np.random.default_rng(width).integers(0, 256, (2, 3, 5, -(-width // 8)), dtype=np.uint8)
    planes = unpack_bits(torch.from_numpy(packed), width)
    np.testing.assert_array_equal(planes.numpy(), unpack_frames(packed, width))
    np.testing.assert_array_equal(pack_bits(planes).numpy(), pack_frames(unpack_frames(packed, width)))
    with pytest.raises(SvrtValueError, match="width 9 does not fit rows of 1 bytes"):
        unpack_bits(torch.zeros(1, 1, dtype=torch.uint8), 9)


class RawStencil(StencilModel):
    """The stencil model fed packed bits: voxels accumulated with gamma = 1 are the stored counts."""

    def __init__(self, radius: int, bins: int) -> None:
        super().__init__(radius, spike_weight=0.3)
        from svrt_model.spike.accumulator import SpikeAccumulator

        self.accumulator = SpikeAccumulator(bins)
        self.widths: list[int | None] = []

    def forward(self, rgb, spikes):
        self.widths.append(spikes.width)
        return super().forward(rgb, self.accumulator(spikes.bits, spikes.ranges, width=spikes.width))


@pytest.mark.parametrize(("patch_width", "widths"), [(48, {None}), (40, {20})])
def test_raw_bits_are_tiled_like_voxels(synth_store, patch_width, widths):
    """Patches whose spike x offsets are not byte aligned (x starts 0, 40, 80 -> spike 0, 20, 40; or 0, 32, 64,
    88 -> 0, 16, 32, 44) and widths of 24 or 20 spike px: the packed tiles give exactly the restoration of the
    stored voxels."""
    tile = Tile(frames=3, height=32, width=patch_width, frame_overlap=1, overlap=8)
    (a,) = restore_split(StencilModel(radius=2, spike_weight=0.3), synth_store, "test", tile=tile, transform=VOXELS,
                         rules=RULES, progress=False)
    model = RawStencil(radius=2, bins=8)
    bits = SpikeTransform(spike_input="raw", bins=8, raw_output="bits", log1p=False)
    (b,) = restore_split(model, synth_store, "test", tile=tile, transform=bits, rules=RULES, progress=False)
    assert torch.equal(a.output, b.output)
    assert set(model.widths) == widths  # 24-px tiles are 3 whole bytes; 20-px tiles say their width
    (c,) = restore_split(model, synth_store, "test", tile=None, transform=bits, rules=RULES, progress=False)
    (d,) = restore_split(StencilModel(radius=2, spike_weight=0.3), synth_store, "test", tile=None, transform=VOXELS,
                         rules=RULES, progress=False)
    assert torch.equal(c.output, d.output)  # untiled: frames padded to 8, their bin ranges repeated
