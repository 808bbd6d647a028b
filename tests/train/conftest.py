"""Fixtures of the training tests: a small synthetic store (K=8) and a micro run config that trains in
well under a second per step on one CPU thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

MICRO = {
    "base": "tiny",
    "model": {
        "preset": "svrt_tiny",
        "spike_bins": 8,
        "channels_per_scale": [8, 8, 8, 8],
        "vrt": {"img_size": [2, 64, 64], "window_size": [2, 4, 4], "depths": [1] * 9, "indep_reconsts": [8],
                "embed_dims": [8] * 9, "num_heads": [2] * 9, "deformable_groups": 2},
    },
    "data": {"clip_len": 2, "stride": 2, "crop": 64, "batch_size": 1, "num_workers": 0},
    "train": {"steps": 4, "lr": 1.0e-3, "min_lr": 1.0e-5, "warmup_steps": 1, "accumulate": 1, "grad_clip": 1.0,
              "precision": "fp32", "fix_iter": 0, "ema_decay": None, "deterministic": True, "threads": 1,
              "checkpoint_every": 2, "device": "cpu", "init": "default"},
    "log": {"every": 1, "image_every": 0, "val_every": 0, "val_split": None, "val_tile": "clip", "progress": False,
            "tensorboard": False},
}
"""A VRT+Spike of 8 channels, 1 block per stage, T=2 clips of 64x64 crops, batch 1, 4 steps."""


@pytest.fixture(scope="session")
def train_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 train sequences x 5 frames (4 clips per epoch at T=2, stride 2) and 1 test sequence; RGB 64x128,
    spikes 32x64, K=8 count voxels."""
    from pipelines.voxelize_job import voxelize_dataset
    from tests.store_helpers import make_raw

    root = tmp_path_factory.mktemp("train_store")
    raw = make_raw(root / "raw", sequences=2, test_sequences=1, frames=5)
    out = root / "store.zarr"
    voxelize_dataset(raw, raw / "align.csv", out, bins=8, backend="numpy", progress=False)
    return out


@pytest.fixture
def micro_config(tmp_path: Path) -> Path:
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(MICRO))
    return path
