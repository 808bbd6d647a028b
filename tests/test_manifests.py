from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from cli.data import main
from svrt_data import ManifestError, read_dat, write_dat
from svrt_data.align import CentredExposure, PerFrameFiles, build_align_log
from svrt_data.manifests import list_manifests, load_manifest


def test_every_shipped_manifest_parses():
    names = list_manifests()
    assert {"spk-gopro", "spk-x4k1000fps", "sreds", "svrt-synth"} <= set(names)
    for name in names:
        m = load_manifest(name)
        assert m.name == name and m.splits == ("train", "test")
        assert m.blur_dir == "blur"
        for field in m.unverified:
            section, key = field.split(".")
            assert key in getattr(m, section), f"{name}: unverified {field} is not a field"


def test_spk_gopro_manifest_matches_the_real_file(fixtures_dir):
    m = load_manifest("spk-gopro")
    g = m.geometry()
    assert (g.height, g.width, g.flip, g.frame_bytes) == (360, 640, True, 28800)
    assert m.rule() == PerFrameFiles("NN*8")
    assert len(read_dat(fixtures_dir / "spk_gopro_000226_88x360x640.dat", height=g.height, width=g.width)) == 88
    assert m.layout["blur_variants"] == ["blur", "blur_gamma"]


def test_sreds_manifest_geometry_fits_the_fixture(fixtures_dir):
    g = load_manifest("sreds").geometry()
    size = (fixtures_dir / "sreds_200_part1_301x250x400.dat").stat().st_size
    assert size % g.frame_bytes == 0 and size // g.frame_bytes == 301


def test_x4k_manifest_needs_the_exposure_from_the_user():
    m = load_manifest("spk-x4k1000fps")
    with pytest.raises(ManifestError, match="pass --exposure VALUE --step VALUE --first-centre VALUE"):
        m.rule()
    assert m.rule(exposure=80, step=100, first_centre=50) == CentredExposure(80.0, 100.0, 50.0, "spike/stream.dat")
    assert m.geometry().flip is False


def test_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="unknown manifest 'nope'; shipped: spk-gopro"):
        load_manifest("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("manifest_version: 7\nname: x\n")
    with pytest.raises(ManifestError, match="manifest_version 7 is not supported"):
        load_manifest(bad)
    bad.write_text("manifest_version: 1\nname: x\nsplits: [a]\n")
    with pytest.raises(ManifestError, match="missing layout, spike, align"):
        load_manifest(bad)


def test_align_from_manifest_cli(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "raw"
    for i in range(2):
        write_dat(root / "train" / "GOPR0001_07_00" / "spike" / f"{i:06d}.dat",
                  (rng.random((56, 360, 640)) < 0.01).astype(np.uint8))
    res = CliRunner().invoke(main, ["align", str(root), "--manifest", "spk-gopro"])
    assert res.exit_code == 0, res.output
    assert "2 frames in 1 sequences (per-frame-files frames_per_blur=NN*8)" in res.output
    expected = build_align_log(root, PerFrameFiles("NN*8"), load_manifest("spk-gopro").geometry())
    from svrt_data.align import read_align_log

    assert read_align_log(root / "align.csv").entries == expected.entries
    res = CliRunner().invoke(main, ["align", str(root), "--manifest", "sreds", "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 1 and "not a whole number of 250x400 frames" in res.output
