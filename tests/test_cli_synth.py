"""CliRunner tests of ``svrt-data synth``."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cli.data import main
from svrt_data.align import read_align_log, validate_align_log
from svrt_data.synth import synthesize

TINY_ARGS = ["--sequences", "1", "--test-sequences", "1", "--frames", "2", "--size", "16x32", "--source-frames", "3",
             "--seed", "4", "--noise", "0.05", "--dark-rate", "0.01", "--threshold", "1.5", "--motion", "0.5"]


def test_help_lists_the_options() -> None:
    res = CliRunner().invoke(main, ["synth", "--help"])
    assert res.exit_code == 0, res.output
    for option in ("--sequences", "--test-sequences", "--frames", "--size", "--spike-scale", "--seed",
                   "--source-frames", "--threshold", "--noise", "--dark-rate", "--motion", "--images", "--overwrite"):
        assert option in res.output
    assert "Spk-GoPro layout" in res.output


def test_synth_writes_what_the_library_writes(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    res = CliRunner().invoke(main, ["synth", str(out), *TINY_ARGS])
    assert res.exit_code == 0, res.output
    assert "1 train + 1 test sequences x 2 frames (16x32 RGB, 8x16 spikes, 24 spike frames per blurry frame)" \
        in res.output
    assert f"align log {out / 'align.csv'}" in res.output
    validate_align_log(read_align_log(out / "align.csv"), out)
    params = json.loads((out / "synth.json").read_text())["parameters"]
    assert (params["noise_std"], params["dark_rate"], params["threshold"], params["motion"]) == (0.05, 0.01, 1.5, 0.5)
    # every option reached the library: the same call from Python gives the same bytes
    lib = synthesize(tmp_path / "lib", sequences=1, test_sequences=1, frames=2, size=(16, 32), source_frames=3,
                     seed=4, noise_std=0.05, dark_rate=0.01, threshold=1.5, motion=0.5, progress=False).out_dir
    files = sorted(p.relative_to(lib) for p in lib.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert all((lib / f).read_bytes() == (out / f).read_bytes() for f in files)


def test_synth_errors_are_clean_messages(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["synth", str(tmp_path / "a"), "--size", "16x20"])
    assert res.exit_code == 1
    assert "Error: spike width must be a multiple of 8" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["synth", str(tmp_path / "a"), "--size", "16by32"])
    assert res.exit_code == 2 and "expected HxW such as 128x256, got '16by32'" in res.output

    out = tmp_path / "b"
    assert runner.invoke(main, ["synth", str(out), *TINY_ARGS]).exit_code == 0
    res = runner.invoke(main, ["synth", str(out), *TINY_ARGS])
    assert res.exit_code == 1 and "folder is not empty" in res.output and "--overwrite" in res.output
    res = runner.invoke(main, ["synth", str(out), *TINY_ARGS, "--overwrite", "--seed", "5"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "synth.json").read_text())["parameters"]["seed"] == 5
