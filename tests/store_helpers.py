"""Shared helpers for store tests: a tiny synthetic raw dataset and store comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from svrt_data.store import open_store


def make_raw(root: Path, *, sequences: int = 2, test_sequences: int = 1, frames: int = 5, seed: int = 0) -> Path:
    from svrt_data.synth import synthesize

    synthesize(root, sequences=sequences, test_sequences=test_sequences, frames=frames, size=(64, 128),
               spike_scale=0.5, seed=seed, source_frames=7, progress=False)
    return root


def store_contents(path: Path) -> dict:
    """Everything that defines a store's content: root attrs, per-sequence attrs and array bytes."""
    store = open_store(path)
    out = {"root": store.attrs}
    for split, name in store.sequence_keys(include_incomplete=True):
        g = store.root[f"{split}/{name}" if split else name]
        arrays = {}
        for an, arr in g.arrays():
            data = np.asarray(arr[...])
            arrays[an] = (str(arr.dtype), data.shape, data.tobytes(), tuple(arr.metadata.dimension_names))
        out[(split, name)] = (dict(g.attrs), arrays)
    return out


def assert_same_store(a: Path, b: Path) -> None:
    ca, cb = store_contents(a), store_contents(b)
    assert ca.keys() == cb.keys()
    for k in ca:
        assert ca[k] == cb[k], f"stores differ at {k}"
