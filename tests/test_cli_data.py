"""CliRunner tests of the svrt-data commands owned by the I/O layer (inspect, align, export/import-h5)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.data import main
from svrt_data import read_dat, write_dat
from tests.test_align import make_per_frame_dataset

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", ["cli.data", "cli.model"])
def test_help_is_fast_and_does_not_import_torch(module):
    code = (f"import sys; from {module} import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout


def test_inspect_fixture_with_png(fixtures_dir, tmp_path):
    png = tmp_path / "p.png"
    res = CliRunner().invoke(main, ["inspect", str(fixtures_dir / "spk_gopro_000226_88x360x640.dat"),
                                    "--geometry", "360x640", "--png", str(png)])
    assert res.exit_code == 0, res.output
    assert "frames       88" in res.output and "firing rate  0.2062" in res.output
    img = np.asarray(Image.open(png))
    gt = np.asarray(Image.open(fixtures_dir / "spk_gopro_000226_gt.png").convert("L").resize((640, 360)), float)
    assert img.shape == (360, 640) and np.corrcoef(img.ravel(), gt.ravel())[0, 1] > 0.95


def test_inspect_errors(tmp_path):
    write_dat(tmp_path / "x.dat", np.zeros((3, 250, 400), np.uint8))
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "x.dat"), "--geometry", "360x640"])
    assert res.exit_code == 1 and "not a whole number of 360x640 frames" in res.output
    assert "vidar-250x400" in res.output
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "x.dat")])
    assert res.exit_code == 2 and "give --geometry HxW" in res.output
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "x.dat"), "--geometry", "huge"])
    assert res.exit_code == 2 and "expected 'HxW'" in res.output


def test_align_writes_then_validates(tmp_path):
    root = make_per_frame_dataset(tmp_path / "raw")
    runner = CliRunner()
    res = runner.invoke(main, ["align", str(root), "--geometry", "8x16", "--frames-per-blur", "NN*8"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "6 frames in 2 sequences" in res.output
    res = runner.invoke(main, ["align", str(root), "--geometry", "8x16"])
    assert res.exit_code == 1 and "pass --overwrite" in res.output
    res = runner.invoke(main, ["align", str(root), "--validate", str(root / "align.csv")])
    assert res.exit_code == 0 and "valid (6 frames in 2 sequences" in res.output
    # Corrupt one stream: validation must now fail and name it.
    (root / "train/GOPR0001_07_00/spike/000001.dat").write_bytes(b"\x00" * 5)
    res = runner.invoke(main, ["align", str(root), "--validate", str(root / "align.csv")])
    assert res.exit_code == 1 and "000001.dat: size 5 bytes" in res.output


def test_export_import_h5_commands(tmp_path):
    frames = (np.random.default_rng(2).random((20, 8, 24)) < 0.25).astype(np.uint8)
    write_dat(tmp_path / "a.dat", frames)
    runner = CliRunner()
    res = runner.invoke(main, ["export-h5", str(tmp_path / "a.dat"), str(tmp_path / "a.h5"), "--geometry", "8x24"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["inspect", str(tmp_path / "a.h5")])
    assert res.exit_code == 0 and "frames       20" in res.output
    res = runner.invoke(main, ["import-h5", str(tmp_path / "a.h5"), str(tmp_path / "b.dat")])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(read_dat(tmp_path / "b.dat", height=8, width=24)[:], frames)
    assert (tmp_path / "a.dat").read_bytes() == (tmp_path / "b.dat").read_bytes()
