"""Shared helpers for the model tests: the golden files of ``../shared/vrt_reference``."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from svrt_model import VRT, VRTConfig
from svrt_model.errors import UntrainedSpyNetWarning

REFERENCE = "vrt_reference"


@functools.lru_cache(maxsize=2)
def _load(path: str) -> Any:
    return torch.load(path, weights_only=False, map_location="cpu")


def golden_files(shared_dir: Path) -> tuple[dict, dict]:
    """``(weights, runs)`` blobs; skips the test when the folder is absent."""
    folder = shared_dir / REFERENCE
    weights, runs = folder / "vrt_tiny_weights.pt", folder / "vrt_tiny_run.pt"
    if not weights.is_file() or not runs.is_file():
        pytest.skip(f"{folder} lacks the golden files")
    return _load(str(weights)), _load(str(runs))


def load_golden_model(
    shared_dir: Path, run_name: str, dtype: torch.dtype = torch.float64, device: str = "cpu"
) -> tuple[VRT, dict[str, Any], torch.Tensor]:
    """The tiny model with the golden parameters (loaded by official name), one run and its input.

    The run dict holds ``flows`` (None for the ``spynet`` run: the model computes them), ``output``,
    ``stages`` (fingerprints) and the reference flows.
    """
    weights, runs = golden_files(shared_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model = VRT(VRTConfig(**weights["config"]))
    state = model.state_dict()
    params = dict(model.named_parameters())
    assert set(weights["parameters"]) == set(params), "golden parameter names differ from the model's"
    assert set(weights["buffer_names"]) == set(state) - set(params), "golden buffer names differ from the model's"
    for name, value in weights["parameters"].items():
        state[name] = value
    model.load_state_dict(state, strict=True)
    model = model.to(device=device, dtype=dtype).eval()
    ref = runs["runs"][run_name]
    run = {
        "flows": None if run_name == "spynet" else (
            [f.to(device, dtype) for f in ref["flows_backward"]], [f.to(device, dtype) for f in ref["flows_forward"]]
        ),
        "flows_backward": ref["flows_backward"],
        "flows_forward": ref["flows_forward"],
        "output": ref["output"],
        "stages": ref["stages"],
    }
    return model, run, runs["input"].to(device, dtype)


def randomise_offset_heads(vrt: VRT, std: float = 0.05) -> None:
    """Draw the last layer of stages 1-7's offset heads from N(0, std): the official init zeroes them, which
    would leave the alignment an identity and its offset CNNs without gradient in tests."""
    with torch.no_grad():
        for i in range(1, 8):
            torch.nn.init.normal_(getattr(vrt, f"stage{i}").pa_deform.conv_offset[-1].weight, std=std)


def micro_model(seed: int = 0, dtype: torch.dtype = torch.float64, drop_path_rate: float = 0.0) -> VRT:
    """A very small VRT (2 blocks per stage) with random, non-trivial offsets, for fast CPU tests."""
    torch.manual_seed(seed)
    cfg = VRTConfig(
        img_size=(3, 64, 64), window_size=(3, 8, 8), depths=(2,) * 7 + (2, 2), indep_reconsts=(8,),
        embed_dims=(16,) * 7 + (24, 24), num_heads=(2,) * 9, deformable_groups=2, drop_path_rate=drop_path_rate,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model = VRT(cfg).to(dtype)
    randomise_offset_heads(model)
    model.spynet.weights_loaded = True  # random SpyNet on purpose: no untrained-SpyNet warning in tests
    return model


def gpu_test_vrt(seed: int = 0, device: str = "cuda", **changes: object) -> VRT:
    """The GPU tests' small VRT (float32, eval, on ``device``): 4x8x8 windows, 2 blocks per stage, 32
    channels x 2 heads in stages 1-7 and 48 x 2 in 8-9, random offset heads; ``changes``: other
    VRTConfig fields."""
    torch.manual_seed(seed)
    cfg = VRTConfig(
        img_size=(4, 64, 64), window_size=(4, 8, 8), depths=(2,) * 7 + (2, 2), indep_reconsts=(8,),
        embed_dims=(32,) * 7 + (48, 48), num_heads=(2,) * 9, deformable_groups=4, drop_path_rate=0.0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model = VRT(dataclasses.replace(cfg, **changes)).to(device).eval()
    randomise_offset_heads(model)  # so that alignment is exercised
    return model
