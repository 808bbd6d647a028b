"""Fixtures of the model tests: a small synthetic raw dataset and its store (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.store_helpers import make_raw

STORE_BINS = 8


@pytest.fixture(scope="session")
def synth_raw(tmp_path_factory) -> Path:
    """2 train + 1 test sequences of 7 frames, RGB 64x128, spikes 32x64 (half resolution)."""
    return make_raw(tmp_path_factory.mktemp("synth") / "raw", frames=7)


@pytest.fixture(scope="session")
def synth_store(synth_raw: Path) -> Path:
    from pipelines.voxelize_job import voxelize_dataset

    out = synth_raw.parent / "store.zarr"
    voxelize_dataset(synth_raw, synth_raw / "align.csv", out, bins=STORE_BINS, backend="numpy", progress=False)
    return out
