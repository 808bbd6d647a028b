from __future__ import annotations

import h5py
import numpy as np
import pytest

from svrt_data import SpikeFormatError, read_dat, write_dat
from svrt_data.hdf5 import export_h5, import_h5, read_h5


def test_export_import_round_trip_bit_exact(tmp_path):
    frames = (np.random.default_rng(0).random((37, 16, 40)) < 0.3).astype(np.uint8)
    write_dat(tmp_path / "a.dat", frames, flip=True)
    s = read_dat(tmp_path / "a.dat", height=16, width=40)
    export_h5(s, tmp_path / "a.h5", chunk_frames=8, progress=False)
    with h5py.File(tmp_path / "a.h5") as f:
        ds = f["spikes"]
        assert ds.shape == (37, 16, 5) and ds.chunks == (8, 16, 5)
        assert (ds.attrs["height"], ds.attrs["width"], ds.attrs["bitorder"]) == (16, 40, "little")
    with read_h5(tmp_path / "a.h5") as h:
        assert len(h) == 37 and h.flip is True
        np.testing.assert_array_equal(h[:], frames)
        np.testing.assert_array_equal(h[5:9], frames[5:9])
        assert h.spike_count() == frames.sum()
    import_h5(tmp_path / "a.h5", tmp_path / "b.dat")
    assert (tmp_path / "a.dat").read_bytes() == (tmp_path / "b.dat").read_bytes()


def test_fixture_round_trip(fixtures_dir, tmp_path):
    src = fixtures_dir / "spk_gopro_000226_88x360x640.dat"
    export_h5(read_dat(src, height=360, width=640), tmp_path / "g.h5", progress=False)
    import_h5(tmp_path / "g.h5", tmp_path / "g.dat")
    assert (tmp_path / "g.dat").read_bytes() == src.read_bytes()


def test_foreign_hdf5_is_refused(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["spikes"] = np.zeros((2, 3, 4), np.uint8)
    with pytest.raises(SpikeFormatError, match="not an svrt spike stream"):
        read_h5(tmp_path / "x.h5")
    with pytest.raises(SpikeFormatError, match=r"no dataset 'frames' \(has: spikes\)"):
        read_h5(tmp_path / "x.h5", dataset="frames")
