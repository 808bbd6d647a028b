"""Checkpoint primitives: atomic writes, RNG capture/restore, the config comparison used to refuse a resume."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from svrt_model.errors import CheckpointError
from svrt_model.train.checkpoint import (
    FORMAT,
    atomic_save,
    atomic_write_text,
    config_differences,
    get_rng_state,
    read_checkpoint,
    set_rng_state,
)
from svrt_model.train.config import load_run_config


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    atomic_save({"format": FORMAT, "version": 1, "x": torch.arange(3)}, path)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_save({"x": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(3))
    atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "last.pt"]  # no temporary files left


def test_read_checkpoint_refuses_other_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist; pass RUN_DIR/last.pt"):
        read_checkpoint(tmp_path / "missing.pt")
    torch.save({"params": {}}, tmp_path / "official.pth")
    with pytest.raises(CheckpointError, match="not an svrt training checkpoint .*load_official_checkpoint"):
        read_checkpoint(tmp_path / "official.pth")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot be read as a torch file"):
        read_checkpoint(tmp_path / "junk.pt")
    torch.save({"format": FORMAT, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99, this svrt reads version 1"):
        read_checkpoint(tmp_path / "future.pt")


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)  # noqa: NPY002 (the legacy global generator is what is checked)
    random.seed(3)
    np.random.standard_normal()  # noqa: NPY002  (leaves a cached Gaussian in NumPy's state)
    atomic_save({"rng": get_rng_state()}, tmp_path / "rng.pt")
    first = (torch.rand(4), np.random.standard_normal(3),  # noqa: NPY002
             [random.random() for _ in range(3)])
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    second = (torch.rand(4), np.random.standard_normal(3),  # noqa: NPY002
              [random.random() for _ in range(3)])
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


def test_config_differences_name_math_keys_only() -> None:
    a = load_run_config("tiny")
    b = load_run_config("tiny", ["train.steps=999", "log.every=3", "train.threads=1", "data.num_workers=2",
                                 "loss.vgg_weights=/w/vgg.pth"])
    assert config_differences(a, b) == []
    c = load_run_config("tiny", ["train.lr=1.0e-4", "data.crop=96", "model.vrt.window_size=[5, 4, 4]"])
    assert config_differences(a, c) == [
        f"data.crop: {a.data.crop!r} -> 96",
        f"model.vrt.window_size: {list(a.model.config.vrt.window_size)!r} -> [5, 4, 4]",
        f"train.lr: {a.train.lr!r} -> 0.0001",
    ]
    assert config_differences(a.to_dict(), c) == config_differences(a, c)
