"""Restoring from a raw dataset (voxelized on the fly) equals restoring from its store; PNG folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from svrt_data.loader.spike_transform import SpikeTransform
from svrt_errors import SvrtValueError
from svrt_model.restore import (
    MANIFEST,
    InputRules,
    Tile,
    check_plain_name,
    restore_raw,
    restore_split,
    write_sequence_pngs,
)
from tests.model.conftest import STORE_BINS
from tests.model.standin import StencilModel

RULES = InputRules(frame_multiple=4, min_frames=2, size_multiple=8, min_size=(16, 16))
TILE = Tile(frames=3, height=32, width=64, frame_overlap=1, overlap=8)


@pytest.mark.parametrize("spike_input", ["voxels", "raw"])
def test_raw_dataset_restores_exactly_like_its_store(synth_raw, synth_store, spike_input):
    transform = SpikeTransform(spike_input=spike_input, bins=STORE_BINS if spike_input == "raw" else None,
                               log1p=True, mean=0.5, std=0.7)
    model = StencilModel(radius=2, spike_weight=0.3)
    kw = dict(tile=TILE, transform=transform, rules=RULES, progress=False)
    from_store = {s.key: s for s in restore_split(model, synth_store, "test", **kw)}
    from_raw = list(restore_raw(model, synth_raw, synth_raw / "align.csv", bins=STORE_BINS, mode="count",
                                sequences=["test/SYN0002_07_00"], **kw))
    assert [s.key for s in from_raw] == list(from_store) == ["test/SYN0002_07_00"]
    for s in from_raw:
        ref = from_store[s.key]
        assert s.sharp is None and s.name == ref.name
        assert torch.equal(s.blur, ref.blur)
        assert torch.equal(s.output, ref.output)  # same voxels bit for bit, so the same restoration
        assert s.frame_names == ref.frame_names == [f"{i:06d}" for i in range(7)]


def test_raw_voxels_of_another_k_change_the_result(synth_raw, synth_store):
    """The voxel settings matter (the check above would notice a wrong K or mode)."""
    transform = SpikeTransform(spike_input="voxels", log1p=False)
    model = StencilModel(radius=1, spike_weight=0.3)
    kw = dict(tile=None, transform=transform, rules=RULES, progress=False, sequences=["test/SYN0002_07_00"])
    (a,) = restore_raw(model, synth_raw, synth_raw / "align.csv", bins=STORE_BINS, **kw)
    (b,) = restore_raw(model, synth_raw, synth_raw / "align.csv", bins=STORE_BINS // 2, **kw)
    assert not torch.equal(a.output, b.output)
    with pytest.raises(SvrtValueError, match="voxel input needs bins=K"):
        next(restore_raw(model, synth_raw, synth_raw / "align.csv", **kw))


def frames(n=3, h=12, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_png_folders_round_trip(tmp_path):
    f = frames()
    folder = write_sequence_pngs(tmp_path / "out", "SEQ", f, ["a", "b", "c"])
    assert folder == tmp_path / "out" / "SEQ"
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST, "a.png", "b.png", "c.png"]
    for i, name in enumerate("abc"):
        np.testing.assert_array_equal(np.asarray(Image.open(folder / f"{name}.png")), f[i])
    assert json.loads((folder / MANIFEST).read_text())["files"] == ["a.png", "b.png", "c.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["SEQ"]  # no partial folders left


def test_png_folders_replace_only_their_own(tmp_path):
    out = tmp_path / "out"
    write_sequence_pngs(out, "SEQ", frames(seed=1), ["a", "b", "c"])
    with pytest.raises(SvrtValueError, match="SEQ already exists; pass --overwrite"):
        write_sequence_pngs(out, "SEQ", frames(seed=2), ["a", "b", "c"])
    write_sequence_pngs(out, "SEQ", frames(2, seed=2), ["x", "y"], overwrite=True)
    assert sorted(p.name for p in (out / "SEQ").iterdir()) == [MANIFEST, "x.png", "y.png"]  # old frames gone
    assert sorted(p.name for p in out.iterdir()) == ["SEQ"]
    (out / "SEQ" / "notes.txt").write_text("mine")  # someone else's file: the folder is no longer ours alone
    with pytest.raises(SvrtValueError, match="was not written by svrt-model infer .* left alone"):
        write_sequence_pngs(out, "SEQ", frames(seed=3), ["a", "b", "c"], overwrite=True)
    assert (out / "SEQ" / "notes.txt").read_text() == "mine" and (out / "SEQ" / "x.png").exists()
    (out / "OTHER").mkdir()
    (out / "OTHER" / "keep.png").write_bytes(b"x")
    with pytest.raises(SvrtValueError, match="OTHER exists and was not written by svrt-model infer"):
        write_sequence_pngs(out, "OTHER", frames(), ["a", "b", "c"], overwrite=True)
    assert (out / "OTHER" / "keep.png").read_bytes() == b"x"


def test_a_failed_write_leaves_the_old_folder_and_no_partial(tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_sequence_pngs(out, "SEQ", frames(seed=1), ["a", "b", "c"])
    before = {p.name: p.read_bytes() for p in (out / "SEQ").iterdir()}
    calls = []

    def failing_save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(self, fp, *args, **kwargs)

    original = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_sequence_pngs(out, "SEQ", frames(seed=2), ["a", "b", "c"], overwrite=True)
    assert {p.name: p.read_bytes() for p in (out / "SEQ").iterdir()} == before
    assert sorted(p.name for p in out.iterdir()) == ["SEQ"]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", ".hidden", "tab\there", "nul\x00"])
def test_names_must_be_plain(tmp_path, name):
    with pytest.raises(SvrtValueError, match="is not a plain name"):
        check_plain_name(name, "frame name")
    with pytest.raises(SvrtValueError, match="is not a plain name"):
        write_sequence_pngs(tmp_path, name, frames(1), ["a"])
    with pytest.raises(SvrtValueError, match="frame name in sequence SEQ .* is not a plain name"):
        write_sequence_pngs(tmp_path, "SEQ", frames(1), [name])
    assert list(tmp_path.iterdir()) == []


def test_png_argument_errors(tmp_path):
    with pytest.raises(SvrtValueError, match="frame names repeat"):
        write_sequence_pngs(tmp_path, "SEQ", frames(2), ["a", "a"])
    with pytest.raises(SvrtValueError, match=r"expected uint8 frames \(N, H, W, 3\) with N = 3 names"):
        write_sequence_pngs(tmp_path, "SEQ", frames(2), ["a", "b", "c"])
    assert list(tmp_path.iterdir()) == []
