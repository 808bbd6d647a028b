"""State-dict compatibility with the official VRT: names, shapes and kinds (parameter / persistent buffer)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

from svrt_model import VRT, gopro_deblurring, svrt_baseline, tiny
from svrt_model.config import VRTConfig
from svrt_model.errors import UntrainedSpyNetWarning
from svrt_model.layers.position import relative_position_index, sine_position_encoding

KEYS_FILE = "vrt_reference/vrt_state_dict_keys.txt"


def _official_sections(shared_dir: Path) -> list[tuple[str, dict[str, tuple[tuple[int, ...], str]]]]:
    path = shared_dir / KEYS_FILE
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    sections: list[tuple[str, dict[str, tuple[tuple[int, ...], str]]]] = []
    for line in path.read_text().splitlines():
        if line.startswith("### CONFIG"):
            sections.append((line, {}))
        elif line and not line.startswith("#"):
            key, shape, kind = line.split("\t")
            sections[-1][1][key] = (tuple(int(v) for v in re.findall(r"\d+", shape)), kind)
    return sections


def _meta_model(cfg: VRTConfig) -> VRT:
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        return VRT(cfg)


def _ours(model: VRT) -> dict[str, tuple[tuple[int, ...], str]]:
    params = {name for name, _ in model.named_parameters()}
    return {k: (tuple(v.shape), "param" if k in params else "buffer") for k, v in model.state_dict().items()}


@pytest.mark.parametrize(("section", "make"), [("TINY", tiny), ("GOPRO", gopro_deblurring)])
def test_state_dict_equals_official(shared_dir, section: str, make) -> None:
    sections = {re.match(r"### CONFIG (\w+)", head).group(1): keys for head, keys in _official_sections(shared_dir)}
    official = sections[section]
    ours = _ours(_meta_model(make()))
    assert sorted(set(official) - set(ours)) == [], "official keys missing from ours"
    assert sorted(set(ours) - set(official)) == [], "keys the official model does not have"
    assert ours == official
    assert list(ours) == list(official)  # same registration order as well


@pytest.mark.parametrize(("make", "millions"), [(gopro_deblurring, 18.32), (svrt_baseline, 18.26), (tiny, 1.92)])
def test_parameter_counts(make, millions: float) -> None:
    model = _meta_model(make())
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 2) == millions
    assert sum(p.numel() for p in model.spynet.parameters()) == 1440300


def test_buffers_are_computed_from_the_window() -> None:
    idx = relative_position_index((2, 8, 8))
    assert idx.shape == (128, 128) and idx.dtype == torch.int64
    # token 0 = (0,0,0), token 127 = (1,7,7): offsets (-1,-7,-7) -> row 0 ; the reverse -> the last row
    assert idx[0, 127].item() == 0 and idx[127, 0].item() == 3 * 15 * 15 - 1
    assert idx.diagonal().unique().tolist() == [(2 - 1) * 15 * 15 + 7 * 15 + 7]
    pos = sine_position_encoding(8, 8, 8)
    assert pos.shape == (1, 64, 16) and pos.dtype == torch.float32
    # channels [y features, x features]; feature 0 is sin(2*pi*pos/8) since dim_t[0] = 1
    assert torch.allclose(pos[0, 9, 0], torch.sin(torch.tensor(2 * torch.pi * 2 / 8)), atol=1e-5)
    model = _meta_model(tiny())
    attn = model.stage1.residual_group1.blocks[0].attn
    assert attn.relative_position_index.shape == (128, 128) and attn.position_bias.shape == (1, 64, 16)
