from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from svrt_data import AlignLogError, write_dat
from svrt_data.align import (
    AlignEntry,
    AlignHeader,
    AlignLog,
    CentredExposure,
    PerFrameFiles,
    Timestamps,
    build_align_log,
    frames_per_blur_for,
    read_align_log,
    validate_align_log,
    write_align_log,
)
from svrt_data.geometry import Geometry

G = Geometry(8, 16)


def make_per_frame_dataset(root: Path, sequences=("train/GOPR0001_07_00", "test/GOPR0002_11_00"), frames=3):
    rng = np.random.default_rng(0)
    for name in sequences:
        nn = int(name.split("_")[1])
        for i in range(frames):
            write_dat(root / name / "spike" / f"{i:06d}.dat", (rng.random((nn * 8, 8, 16)) < 0.2).astype(np.uint8))
            (root / name / "blur").mkdir(parents=True, exist_ok=True)
            (root / name / "blur" / f"{i:06d}.png").write_bytes(b"")
    return root


def test_frames_per_blur_rule():
    assert frames_per_blur_for("NN*8", "GOPR0384_11_00") == 88
    assert frames_per_blur_for("NN*8", "GOPR0372_07_00") == 56
    assert frames_per_blur_for(40, "anything") == 40
    with pytest.raises(AlignLogError, match="needs NN from a name like GOPR0384_11_00"):
        frames_per_blur_for("NN*8", "sequence")
    with pytest.raises(AlignLogError, match="expected an integer or 'NN\\*k'"):
        frames_per_blur_for("NN+8", "GOPR0384_11_00")


def test_build_write_read_round_trip(tmp_path):
    root = make_per_frame_dataset(tmp_path)
    log = build_align_log(root, PerFrameFiles("NN*8"), G)
    assert len(log.entries) == 6
    assert log.windows("test", "GOPR0002_11_00")[1] == ("test/GOPR0002_11_00/spike/000001.dat", 0.0, 88.0)
    write_align_log(log, tmp_path / "align.csv")
    back = read_align_log(tmp_path / "align.csv")
    assert back.header == log.header and back.entries == log.entries
    assert back.header.rule == "per-frame-files frames_per_blur=NN*8"
    validate_align_log(back, root)


def test_floats_survive_exactly(tmp_path):
    t = [0.1, 1 / 3, 83.33333333333333, 1e-17 + 5]
    entries = [AlignEntry("", "s", i, "s/spike/x.dat", v, v + 2 / 7) for i, v in enumerate(t)]
    write_align_log(AlignLog(AlignHeader(20000.0, 8, 16, True), entries), tmp_path / "a.csv")
    back = read_align_log(tmp_path / "a.csv").entries
    assert [(e.t0, e.t1) for e in back] == [(e.t0, e.t1) for e in entries]


def test_rule_mismatch_is_an_error_not_a_cut(tmp_path):
    root = make_per_frame_dataset(tmp_path)
    with pytest.raises(AlignLogError, match=r"000000\.dat: 56 spike frames, but rule .* gives 80"):
        build_align_log(root, PerFrameFiles(80), G, splits=["train"])
    log = build_align_log(root, PerFrameFiles("file"), G)
    assert {e.t1 for e in log.entries} == {56.0, 88.0}


@pytest.mark.parametrize(
    "body,match",
    [
        ("train,s,0,a.dat,0,x\n", r"line 9: t0 and t1 must be numbers, got '0', 'x'"),
        ("train,s,zero,a.dat,0,1\n", r"line 9: frame must be an integer"),
        ("train,s,0,a.dat,0\n", r"line 9: expected 6 fields"),
    ],
)
def test_parse_errors_name_the_line(tmp_path, body, match):
    head = "# svrt-align-log\n# format_version: 1\n# rate_hz: 20000\n# height: 8\n# width: 16\n# flip: true\n"
    (tmp_path / "a.csv").write_text(head + "# rule: x\nsplit,sequence,frame,spike_file,t0,t1\n" + body)
    with pytest.raises(AlignLogError, match=match):
        read_align_log(tmp_path / "a.csv")


def test_header_errors(tmp_path):
    (tmp_path / "a.csv").write_text("split,sequence\n")
    with pytest.raises(AlignLogError, match="line 1: expected the header '# svrt-align-log'"):
        read_align_log(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("# svrt-align-log\n# format_version: 2\n# rate_hz: 1\n# height: 8\n"
                                    "# width: 8\n# flip: true\nsplit,sequence,frame,spike_file,t0,t1\n")
    with pytest.raises(AlignLogError, match="format_version 2 is not supported"):
        read_align_log(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("# svrt-align-log\n# format_version: 1\n# height: 8\n")
    with pytest.raises(AlignLogError, match="header lacks rate_hz, width, flip"):
        read_align_log(tmp_path / "c.csv")


def test_validation_lists_every_problem(tmp_path):
    root = make_per_frame_dataset(tmp_path, sequences=("train/GOPR0001_07_00",))
    f = "train/GOPR0001_07_00/spike/"
    entries = [
        AlignEntry("train", "GOPR0001_07_00", 0, f + "000000.dat", 0, 56),
        AlignEntry("train", "GOPR0001_07_00", 1, f + "000001.dat", 10, 60),  # outside (56 frames)
        AlignEntry("train", "GOPR0001_07_00", 3, f + "missing.dat", 0, 5),  # no file, frame 2 missing
        AlignEntry("train", "GOPR0001_07_00", 4, f + "000000.dat", 5, 5),  # empty; also out of order
    ]
    with pytest.raises(AlignLogError) as info:
        validate_align_log(AlignLog(AlignHeader(20000.0, 8, 16, True), entries), root)
    msg = str(info.value)
    assert "window [10, 60) lies outside train/GOPR0001_07_00/spike/000001.dat (frames [0, 56))" in msg
    assert "missing.dat: no such spike file" in msg
    assert "missing [2]" in msg
    assert "is empty or reversed" in msg
    assert "windows must be ordered" in msg
    assert "3 blurry images" in msg


def test_centred_exposure_rule(tmp_path):
    rng = np.random.default_rng(1)
    for seq in ("a", "b"):
        write_dat(tmp_path / "x4k" / seq / "spike" / "stream.dat", (rng.random((500, 8, 16)) < 0.1).astype(np.uint8))
        (tmp_path / "x4k" / seq / "blur").mkdir(parents=True)
        for i in range(4):
            (tmp_path / "x4k" / seq / "blur" / f"{i:04d}.png").write_bytes(b"")
    log = build_align_log(tmp_path / "x4k", CentredExposure(length=83.5, step=100, first_centre=60), G)
    win = log.windows("", "a")
    assert win[0] == ("a/spike/stream.dat", 60 - 41.75, 60 + 41.75)
    assert win[3][1:] == (360 - 41.75, 360 + 41.75)
    with pytest.raises(AlignLogError, match=r"frame 4.* lies outside"):
        build_align_log(tmp_path / "x4k", CentredExposure(83.5, 100, 60, n_frames=5), G)


def test_timestamps_rule(tmp_path):
    root = make_per_frame_dataset(tmp_path / "raw", sequences=("train/GOPR0001_07_00",), frames=1)
    csv = tmp_path / "times.csv"
    csv.write_text("split,sequence,frame,spike_file,start,end\n"
                   "train,GOPR0001_07_00,0,train/GOPR0001_07_00/spike/000000.dat,0.0001,0.0025\n")
    log = build_align_log(root, Timestamps(str(csv), unit="s"), G, validate=False)
    assert (log.entries[0].t0, log.entries[0].t1) == pytest.approx((2.0, 50.0))
    validate_align_log(log, root)
