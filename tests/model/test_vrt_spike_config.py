"""VRTSpikeConfig: presets, dict round trip with the golden config, validation messages."""

from __future__ import annotations

import dataclasses

import pytest

from svrt_model import VRTSpikeConfig, svrt_base, svrt_baseline, svrt_tiny
from svrt_model.errors import ModelConfigError

GOLDEN = {
    "vrt": {"upscale": 1, "img_size": [6, 64, 64], "window_size": [6, 8, 8], "depths": [2] * 7 + [1] * 4,
            "indep_reconsts": [9, 10], "embed_dims": [16] * 7 + [24] * 4, "num_heads": [2] * 11, "pa_frames": 2,
            "deformable_groups": 4},
    "spike_bins": 8, "channels_per_scale": [16] * 4, "tsa_heads": 4, "tsa_mlp_ratio": 2, "fuse_heads": 4,
    "fuse_mlp_ratio": 2,
}


def test_presets() -> None:
    base = svrt_base()
    assert base.vrt == svrt_baseline() and base.vrt.img_size == (5, 256, 256)
    assert (base.spike_bins, base.channels_per_scale, base.tsa_heads, base.fuse_heads) == (32, (96,) * 4, 4, 4)
    assert (base.tsa_mlp_ratio, base.fuse_mlp_ratio, base.fusion, base.attention) == (2, 2, "cross_attention", "fused")
    assert VRTSpikeConfig() == base
    tiny = svrt_tiny()
    golden = VRTSpikeConfig.from_dict(GOLDEN)
    assert dataclasses.replace(tiny, vrt=dataclasses.replace(tiny.vrt, drop_path_rate=0.2)) == golden
    assert svrt_tiny(fusion="early").backbone.in_chans == 4 and svrt_tiny().backbone.in_chans == 3


def test_dict_round_trip() -> None:
    cfg = svrt_tiny(fusion="early")
    values = cfg.to_dict()
    assert values["vrt"]["embed_dims"] == [16] * 7 + [24] * 4 and values["channels_per_scale"] == [16] * 4
    assert VRTSpikeConfig.from_dict(values) == cfg


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ModelConfigError, match=r"unknown keys \['fuse_dropout', 'tsa_chunk_cfg'\]"):
        VRTSpikeConfig.from_dict({**GOLDEN, "tsa_chunk_cfg": {}, "fuse_dropout": 0.0})
    with pytest.raises(ModelConfigError, match=r"VRTConfig: unknown keys \['net_type'\]"):
        VRTSpikeConfig.from_dict({**GOLDEN, "vrt": {**GOLDEN["vrt"], "net_type": "vrt"}})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"channels_per_scale": [16, 16, 32, 16]}, r"channels_per_scale=\[16, 16, 32, 16\] must equal the backbone's "
                                                   r"stage widths vrt.embed_dims\[0:4\]=\[16, 16, 16, 16\]"),
        ({"channels_per_scale": [16] * 3}, r"channels_per_scale: expected 4 entries, got 3"),
        ({"tsa_heads": 3}, r"channels_per_scale\[0\]=16 is not divisible by tsa_heads=3"),
        ({"fuse_heads": 5}, r"channels_per_scale\[0\]=16 is not divisible by fuse_heads=5"),
        ({"spike_bins": 0}, r"spike_bins=0; expected an integer K >= 1"),
        ({"temporal_strides": [1, 2, 1]}, r"temporal_strides=\[1, 2, 1\]: cross-attention fusion needs all 1"),
        ({"spatial_strides": [2, 0, 2]}, r"spatial_strides: every entry must be >= 1, got \[2, 0, 2\]"),
        ({"spatial_strides": [2, 2]}, r"spatial_strides: expected 3 entries, got 2"),
        ({"spatial_strides": [2.0, 2, 2]}, r"spatial_strides: expected integers only"),
        ({"tsa_mlp_ratio": 0}, r"tsa_mlp_ratio=0; expected a positive number"),
        ({"fusion": "late"}, r"fusion='late' is unknown; expected one of \('cross_attention', 'early', 'rgb_only'\)"),
        ({"spike_input": "events"},
         r"spike_input='events' is unknown; expected one of \('voxels', 'raw', 'intervals'\)"),
        ({"attention": "plain"}, r"attention='plain' is unknown"),
        ({"chunk_tokens": 0}, r"chunk_tokens=0; expected None \(no chunking\) or a positive integer"),
        ({"fusion": "early", "early_channels": 3}, r"spike_bins=8 is not divisible by early_channels=3"),
        ({"early_channels": 9}, r"early_channels=9; expected an integer in \[1, spike_bins=8\]"),
        ({"vrt": {**GOLDEN["vrt"], "in_chans": 4}}, r"vrt.in_chans=4; expected 3"),
        ({"vrt": [1, 2]}, r"vrt: expected a mapping of VRTConfig fields, got list"),
    ],
)
def test_invalid_values_name_both_sides(change: dict, message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        VRTSpikeConfig.from_dict({**GOLDEN, **change})


def test_rgb_only_and_early_do_not_need_matching_channels() -> None:
    for fusion in ("rgb_only", "early"):
        cfg = VRTSpikeConfig.from_dict({**GOLDEN, "fusion": fusion, "channels_per_scale": [96] * 4})
        assert cfg.fusion == fusion
