"""Spike .dat reading/writing: format facts, round trips, lazy reads, errors, fixtures."""

from __future__ import annotations

import hashlib
import tracemalloc

import numpy as np
import pytest
from PIL import Image

import svrt_data
from svrt_data import SpikeFormatError, read_dat, write_dat, write_dat_packed
from svrt_data.geometry import Geometry
from svrt_data.spike_io import DatWriter, SpikeStream, pack_frames


def random_frames(s: int, h: int, w: int, rate: float = 0.2, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((s, h, w)) < rate).astype(np.uint8)


def test_bit_layout_is_lsb_first_row_major_bottom_up(tmp_path):
    # One spike at the upright top-left pixel (row 0, col 0) and one at (row 0, col 9) of a 2x16 frame.
    frames = np.zeros((1, 2, 16), np.uint8)
    frames[0, 0, 0] = 1
    frames[0, 0, 9] = 1
    write_dat(tmp_path / "a.dat", frames, flip=True)
    raw = (tmp_path / "a.dat").read_bytes()
    # Stored bottom-up: the upright row 0 is the second stored row (bytes 2-3); LSB first.
    assert raw == bytes([0, 0, 0b00000001, 0b00000010])
    write_dat(tmp_path / "b.dat", frames, flip=False)
    assert (tmp_path / "b.dat").read_bytes() == bytes([0b00000001, 0b00000010, 0, 0])


@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("hw", [(4, 8), (5, 24), (3, 16), (250, 400)])
def test_round_trip_bit_exact(tmp_path, flip, hw):
    frames = random_frames(7, *hw, seed=hw[0])
    write_dat(tmp_path / "x.dat", frames, flip=flip)
    s = read_dat(tmp_path / "x.dat", height=hw[0], width=hw[1], flip=flip)
    assert len(s) == 7 and (s.height, s.width) == hw
    np.testing.assert_array_equal(s[:], frames)
    np.testing.assert_array_equal(s[2:5], frames[2:5])
    np.testing.assert_array_equal(s[-1], frames[-1])
    np.testing.assert_array_equal(s.packed(1, 6), pack_frames(frames[1:6]))
    assert s.spike_count() == int(frames.sum())
    assert s.firing_rate(2, 4) == pytest.approx(frames[2:4].mean())


def test_rows_not_byte_aligned(tmp_path):
    # 3x12 = 36 bits per frame would not be bytes; 6x12 = 72 bits = 9 bytes is, with rows of 1.5 bytes.
    frames = random_frames(5, 6, 12, seed=3)
    write_dat(tmp_path / "x.dat", frames)
    s = read_dat(tmp_path / "x.dat", height=6, width=12)
    np.testing.assert_array_equal(s[:], frames)
    with pytest.raises(SpikeFormatError, match="multiple of 8"):
        s.packed()


def test_packed_writer_is_inverse_of_packed_reader(tmp_path):
    frames = random_frames(9, 10, 32, seed=4)
    write_dat(tmp_path / "a.dat", frames)
    s = read_dat(tmp_path / "a.dat", height=10, width=32)
    write_dat_packed(tmp_path / "b.dat", s.packed())
    assert (tmp_path / "a.dat").read_bytes() == (tmp_path / "b.dat").read_bytes()


def test_stored_width_with_head_strip(tmp_path):
    # 250x416 Vidar captures: 16 extra columns at the head of each stored row.
    full = random_frames(3, 6, 32, seed=5)
    write_dat(tmp_path / "x.dat", full)
    s = read_dat(tmp_path / "x.dat", height=6, width=16, stored_width=32, col_offset=16)
    np.testing.assert_array_equal(s[:], full[:, :, 16:])
    np.testing.assert_array_equal(s.packed(), pack_frames(full[:, :, 16:]))
    g = svrt_data.get_geometry("250x416")
    assert (g.width, g.row_width, g.col_offset, g.frame_bytes) == (400, 416, 16, 13000)


def test_size_mismatch_names_file_size_and_fitting_geometries(tmp_path):
    frames = random_frames(3, 250, 400)
    write_dat(tmp_path / "x.dat", frames)
    expected = r"x\.dat: size 37500 bytes .*\(28800 bytes each.*vidar-250x400 .*3 frames"
    with pytest.raises(SpikeFormatError, match=expected):
        read_dat(tmp_path / "x.dat", height=360, width=640)
    assert isinstance(SpikeFormatError("x"), ValueError)


def test_truncation_only_when_asked(tmp_path):
    frames = random_frames(4, 8, 16)
    p = tmp_path / "x.dat"
    write_dat(p, frames)
    with open(p, "ab") as fh:
        fh.write(b"\x01\x02\x03")
    with pytest.raises(SpikeFormatError, match="3 bytes left over"):
        read_dat(p, height=8, width=16)
    s = read_dat(p, height=8, width=16, truncate=True)
    assert len(s) == 4 and s.truncated_bytes == 3
    np.testing.assert_array_equal(s[:], frames)


def test_reading_a_slice_does_not_read_the_file(tmp_path):
    frames = random_frames(400, 250, 400, seed=1)  # 5 MB on disk
    write_dat(tmp_path / "big.dat", frames)
    s = read_dat(tmp_path / "big.dat", height=250, width=400)
    tracemalloc.start()
    part = s.packed(100, 104)
    unpacked = s[200:204]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000, f"reading 4 frames allocated {peak} bytes"
    np.testing.assert_array_equal(part, pack_frames(frames[100:104]))
    np.testing.assert_array_equal(unpacked, frames[200:204])


def test_empty_file_and_empty_ranges(tmp_path):
    (tmp_path / "e.dat").write_bytes(b"")
    s = read_dat(tmp_path / "e.dat", height=8, width=8)
    assert len(s) == 0 and s[:].shape == (0, 8, 8) and s.packed().shape == (0, 8, 1)
    with pytest.raises(IndexError, match="out of range"):
        s[0]


def test_writer_errors_and_atomicity(tmp_path):
    with pytest.raises(SpikeFormatError, match=r"in \{0, 1\}, got a maximum of 2"):
        write_dat(tmp_path / "x.dat", np.full((1, 8, 8), 2, np.uint8))
    with pytest.raises(SpikeFormatError, match=r"shape \(S, H, W\)"):
        write_dat(tmp_path / "x.dat", np.zeros((8, 8), np.uint8))
    with pytest.raises(SpikeFormatError, match="cannot follow"):
        with DatWriter(tmp_path / "y.dat") as w:
            w.write(np.zeros((2, 8, 8), np.uint8))
            w.write(np.zeros((2, 8, 16), np.uint8))
    # The failed writer left neither the target nor its temporary file behind.
    assert not (tmp_path / "y.dat").exists() and not list(tmp_path.glob("*.part"))


def test_step_slices_are_refused(tmp_path):
    write_dat(tmp_path / "x.dat", random_frames(4, 8, 8))
    with pytest.raises(SpikeFormatError, match="step 1"):
        read_dat(tmp_path / "x.dat", height=8, width=8)[::2]


def _gray_resized(path, size):
    return np.asarray(Image.open(path).convert("L").resize(size, Image.BILINEAR), np.float64)


def test_spk_gopro_fixture_matches_its_ground_truth(fixtures_dir):
    s = read_dat(fixtures_dir / "spk_gopro_000226_88x360x640.dat", height=360, width=640, flip=True)
    assert len(s) == 88
    assert s.firing_rate() == pytest.approx(0.206, abs=0.001)
    gt = _gray_resized(fixtures_dir / "spk_gopro_000226_gt.png", (640, 360))
    r_flipped = np.corrcoef(s.mean_image().ravel(), gt.ravel())[0, 1]
    assert r_flipped > 0.95
    # Without the flip the image is upside down and the correlation collapses: the flip is real.
    unflipped = read_dat(fixtures_dir / "spk_gopro_000226_88x360x640.dat", height=360, width=640, flip=False)
    assert np.corrcoef(unflipped.mean_image().ravel(), gt.ravel())[0, 1] < 0.5


def test_sreds_fixture(fixtures_dir):
    s = read_dat(fixtures_dir / "sreds_200_part1_301x250x400.dat", height=250, width=400)
    assert len(s) == 301 and s.firing_rate() == pytest.approx(0.288, abs=0.001)
    gt = _gray_resized(fixtures_dir / "sreds_200_part1_gt.png", (400, 250))
    mid = s.mean_image(130, 171)  # the ground truth is centred on the middle frame
    assert np.corrcoef(mid.ravel(), gt.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("name,hw", [("spk_gopro_000226_88x360x640.dat", (360, 640)),
                                     ("sreds_200_part1_301x250x400.dat", (250, 400))])
def test_fixtures_are_reproduced_byte_for_byte(fixtures_dir, tmp_path, name, hw):
    src = fixtures_dir / name
    s = read_dat(src, height=hw[0], width=hw[1], flip=True)
    write_dat(tmp_path / name, s[:], flip=True)
    digest = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()


def test_real_uhsr_recording_round_trip(fixtures_dir, tmp_path):
    spk = np.load(fixtures_dir / "uhsr_real_helicopter_200x250x250.npz")["spk"].astype(np.uint8)
    assert spk.shape == (200, 250, 250) and spk.mean() == pytest.approx(0.031, abs=0.002)
    # 250x250 is 7812.5 bytes per frame: not storable as .dat, and the writer says so.
    with pytest.raises(SpikeFormatError, match="250x250 is not a multiple of 8 bits"):
        write_dat(tmp_path / "uhsr.dat", spk, flip=False)
    # 250x244 is 7625 bytes per frame, with rows of 30.5 bytes (not byte-aligned).
    crop = np.ascontiguousarray(spk[:, :, :244])
    write_dat(tmp_path / "uhsr.dat", crop, flip=False)
    s = SpikeStream(tmp_path / "uhsr.dat", Geometry(250, 244, flip=False))
    np.testing.assert_array_equal(s[:], crop)
    assert s.spike_count() == int(crop.sum())
