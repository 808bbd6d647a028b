"""VRTConfig: official keyword names, presets, validation messages."""

from __future__ import annotations

import dataclasses

import pytest

from svrt_model import VRTConfig, dvd_deblurring, gopro_deblurring, svrt_baseline, tiny
from svrt_model.errors import ModelConfigError

GOLDEN_CONFIG = {  # the golden files' config, in the official keyword names
    "upscale": 1, "img_size": [6, 64, 64], "window_size": [6, 8, 8], "depths": [4, 4, 4, 4, 4, 4, 4, 2, 2, 2, 2],
    "indep_reconsts": [9, 10], "embed_dims": [16, 16, 16, 16, 16, 16, 16, 24, 24, 24, 24],
    "num_heads": [2] * 11, "pa_frames": 2, "deformable_groups": 4,
}


def test_official_dict_builds_the_tiny_preset() -> None:
    cfg = VRTConfig(**GOLDEN_CONFIG)
    assert cfg == tiny()
    assert cfg.window_size == (6, 8, 8) and isinstance(cfg.depths, tuple)
    assert VRTConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["depths"] == GOLDEN_CONFIG["depths"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.upscale = 4  # type: ignore[misc]


def test_presets() -> None:
    gopro = gopro_deblurring(spynet_path="/weights/spynet.pth")
    assert gopro.embed_dims == (96,) * 7 + (120,) * 4 and gopro.indep_reconsts == (9, 10)
    assert gopro.spynet_path == "/weights/spynet.pth" and gopro.num_stage8 == 4
    assert dvd_deblurring() == gopro_deblurring()
    svrt = svrt_baseline()
    assert svrt.window_size == (5, 8, 8) and svrt.depths == (8,) * 7 + (4,) * 6 and svrt.num_stage8 == 6


def test_from_dict_names_unknown_keys() -> None:
    with pytest.raises(ModelConfigError, match=r"unknown keys \['init_type', 'net_type'\]"):
        VRTConfig.from_dict({**GOLDEN_CONFIG, "net_type": "vrt", "init_type": "default"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"upscale": 4}, r"upscale=4 is not supported.*upscale=1"),
        ({"pa_frames": 4}, r"pa_frames=4 is not supported"),
        ({"nonblind_denoising": True}, r"nonblind_denoising=True is not supported"),
        ({"in_chans": 2}, r"in_chans=2, out_chans=3; expected in_chans >= 3"),
        ({"out_chans": 4}, r"in_chans=3, out_chans=4; expected in_chans >= 3 .* and out_chans = 3"),
        ({"window_size": [6, 8]}, r"window_size: expected 3 entries, got 2"),
        ({"depths": [4] * 7}, r"depths: expected at least 8 entries"),
        ({"num_heads": [3] * 11}, r"embed_dims\[0\]=16 is not divisible by num_heads\[0\]=3"),
        ({"embed_dims": [16] * 6 + [32] + [24] * 4}, r"embed_dims\[0\] and embed_dims\[6\] must be equal"),
        ({"embed_dims": [16] * 7 + [24, 24, 24, 32]}, r"embed_dims\[7:\] must all be equal"),
        ({"deformable_groups": 3}, r"not divisible by deformable_groups=3"),
        ({"indep_reconsts": [3]}, r"indices \[3\] are not stage-8 groups"),
        ({"mul_attn_ratio": 1.5}, r"mul_attn_ratio=1.5; expected a value in \[0, 1\]"),
        ({"drop_path_rate": 1.0}, r"drop_path_rate=1.0; expected a value in \[0, 1\)"),
        ({"depths": "8888"}, r"depths: expected a list of integers"),
        ({"depths": [4.0] * 11}, r"depths: expected integers only"),
    ],
)
def test_invalid_values_are_explained(change: dict, message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        VRTConfig(**{**GOLDEN_CONFIG, **change})
