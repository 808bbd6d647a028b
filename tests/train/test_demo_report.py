"""``scripts/demo_report.py``: the demo's numbers, its strip, and its verdict against the quality bar."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from svrt_data import SpikeDeblurDataset
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import demo_report  # noqa: E402


def _eval_json(path: Path, psnr_in: float, psnr_out: float) -> Path:
    seq = {"psnr_input": psnr_in, "psnr_output": psnr_out, "ssim_input": 0.8, "ssim_output": 0.85}
    path.write_text(json.dumps({"overall": seq, "sequences": {"SYN0002_07_00": seq}}))
    return path


def test_report_strip_and_verdict(train_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ds = SpikeDeblurDataset(train_store, "test", clip_len=5, mode="eval", spike_input="none", sharp=True)
    sharp = ds[0]["sharp"].permute(0, 2, 3, 1).numpy()  # T H W C
    frames = tmp_path / "frames" / "SYN0002_07_00"
    frames.mkdir(parents=True)
    for i, f in enumerate(sharp):
        Image.fromarray(255 - f).save(frames / f"{i:06d}.png")  # a recognisable stand-in for the output
    png = tmp_path / "strip.png"
    args = ["--store", str(train_store), "--frames", str(tmp_path / "frames"), "--png", str(png)]
    assert demo_report.main([str(_eval_json(tmp_path / "good.json", 28.0, 29.5)), *args]) == 0
    out = capsys.readouterr().out
    assert "gain               +1.50 dB" in out and "PASS: the output is +1.50 dB over the blurry input" in out
    strip = np.asarray(Image.open(png))
    assert strip.shape == (3 * 64, 3 * 128, 3)  # rows blurry | output | sharp; frames 0, 2, 4
    blur = ds[0]["blur"].permute(0, 2, 3, 1).numpy()
    assert np.array_equal(strip[:64, 128:256], blur[2]) and np.array_equal(strip[64:128, 256:], 255 - sharp[4])
    assert np.array_equal(strip[128:, :128], sharp[0])
    assert demo_report.main([str(_eval_json(tmp_path / "bad.json", 28.0, 28.4)), *args]) == 1
    assert "FAIL: the output is +0.40 dB over the blurry input (bar: +1 dB)" in capsys.readouterr().out
