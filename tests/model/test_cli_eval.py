"""``svrt-model eval`` and ``svrt-model infer`` on a checkpoint of a (one-step) micro training run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from cli.model import main
from svrt_errors import SvrtValueError
from svrt_model.inference import load_checkpoint, resolve_tile
from svrt_model.restore import METRIC_KEYS, evaluate_split, restore_raw, restore_split
from tests.train.conftest import MICRO

SEQ = "SYN0001_07_00"
FRAMES = 3


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 train + 1 test sequence of 3 frames, RGB 64x64, spikes 32x32: the micro model runs it in seconds."""
    from svrt_data.synth import synthesize

    raw = tmp_path_factory.mktemp("small") / "raw"
    synthesize(raw, sequences=1, test_sequences=1, frames=FRAMES, size=(64, 64), spike_scale=0.5, seed=1,
               source_frames=7, progress=False)
    return raw


@pytest.fixture(scope="module")
def small_store(small_raw: Path) -> Path:
    from pipelines.voxelize_job import voxelize_dataset

    out = small_raw.parent / "store.zarr"
    voxelize_dataset(small_raw, small_raw / "align.csv", out, bins=8, backend="numpy", progress=False)
    return out


@pytest.fixture(scope="module")
def checkpoint(small_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUN_DIR/last.pt of a micro VRT+Spike trained one step on the small store (K=8)."""
    from svrt_model.train import load_run_config, train

    root = tmp_path_factory.mktemp("run")
    (root / "micro.yaml").write_text(yaml.safe_dump(MICRO))
    cfg = load_run_config(root / "micro.yaml", ["train.steps=1", "train.checkpoint_every=1"])
    train(cfg, store=small_store, run_dir=root / "run")
    return root / "run" / "last.pt"


def run(*args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, text: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and text in lines[0], result.output


def test_eval_prints_and_writes_the_contract(checkpoint, small_store, tmp_path):
    result = run("eval", checkpoint, "--store", small_store, "--split", "test", "--json", tmp_path / "e.json",
                 "--csv", tmp_path / "e.csv", "--tile", "none", "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["sequence", "frames"] and lines[2].split()[:2] == [SEQ, str(FRAMES)]
    assert lines[4].startswith("overall (mean of frames)")
    j = json.loads((tmp_path / "e.json").read_text())
    assert set(j) == {"overall", "sequences"} and set(j["overall"]) == set(METRIC_KEYS)
    assert set(j["sequences"]) == {SEQ} and j["sequences"][SEQ]["frames"] == FRAMES
    # the numbers are those of the library on the checkpoint's model and transform
    ck = load_checkpoint(checkpoint, device="cpu")
    report = evaluate_split(ck.model, small_store, "test", tile=None, transform=ck.transform, progress=False)
    assert j == json.loads(json.dumps(report.to_json()))
    assert f"{j['overall']['psnr_output']:.2f}" in lines[4]
    rows = list(csv.reader((tmp_path / "e.csv").open()))
    assert len(rows) == 1 + FRAMES + 1 + 1 and rows[-1][:2] == ["overall", "mean"]


def test_eval_tiles_by_default(checkpoint, small_store, tmp_path):
    result = run("eval", checkpoint, "--store", small_store, "--split", "test", "--device", "cpu", "--tile", "3x40x64",
                 "--batch", "4", "--json", tmp_path / "t.json")
    assert result.exit_code == 0, result.output
    ck = load_checkpoint(checkpoint, device="cpu")
    from svrt_model.restore import Tile

    # the same batch as the CLI: float32 GEMMs over another number of rows may round differently in the last
    # bits (the packed GEGLU projection does on the CPU: 3e-7 of the PSNR with batch 1)
    report = evaluate_split(ck.model, small_store, "test", tile=Tile(3, 40, 64, 2, 20), transform=ck.transform,
                            batch_size=4, progress=False)
    assert json.loads((tmp_path / "t.json").read_text()) == json.loads(json.dumps(report.to_json()))


def test_eval_tile_clip_is_the_training_clip_length(checkpoint, small_store, tmp_path):
    """``--tile clip``: whole frames in clips of the run's ``data.clip_len`` overlapping by one (as validation)."""
    ck = load_checkpoint(checkpoint, device="cpu")
    from svrt_model.restore import Tile

    t = ck.config.data.clip_len
    assert resolve_tile("clip", ck.config) == Tile(frames=t, height=0, width=0, frame_overlap=min(1, t - 1), overlap=0)
    result = run("eval", checkpoint, "--store", small_store, "--split", "test", "--device", "cpu", "--tile", "clip",
                 "--json", tmp_path / "c.json")
    assert result.exit_code == 0, result.output
    report = evaluate_split(ck.model, small_store, "test", tile=Tile.clip(t), transform=ck.transform, progress=False)
    assert json.loads((tmp_path / "c.json").read_text()) == json.loads(json.dumps(report.to_json()))
    with pytest.raises(SvrtValueError, match="expected a Tile, None or 'clip', got 'clips'"):
        resolve_tile("clips", ck.config)


def test_eval_ensemble_is_the_library_self_ensemble(checkpoint, small_store, tmp_path):
    """``--ensemble 8``: the model averaged over the eight views (``SelfEnsemble``), not the plain score."""
    from svrt_model.restore import SelfEnsemble

    result = run("eval", checkpoint, "--store", small_store, "--split", "test", "--device", "cpu", "--tile", "none",
                 "--ensemble", "8", "--json", tmp_path / "x8.json")
    assert result.exit_code == 0, result.output
    ck = load_checkpoint(checkpoint, device="cpu")
    ens = evaluate_split(SelfEnsemble(ck.model, 8), small_store, "test", tile=None, transform=ck.transform,
                         progress=False)
    plain = evaluate_split(ck.model, small_store, "test", tile=None, transform=ck.transform, progress=False)
    got = json.loads((tmp_path / "x8.json").read_text())
    assert got == json.loads(json.dumps(ens.to_json()))
    assert got["overall"]["psnr_output"] != plain.overall()["psnr_output"]
    assert got["overall"]["psnr_input"] == plain.overall()["psnr_input"]


@pytest.mark.parametrize(("args", "message"), [
    (["--split", "val"], "no split 'val'; the store has splits ['test', 'train']"),
    (["--split", "test", "--tile", "18x192"], "expected 'none', 'default' or TxHxW"),
    (["--split", "test", "--tile", "2x41x40"], "the patch height 41 does not map to whole spike pixels"),
    (["--split", "test", "--tile", "2x32x32"], "patch heights that are multiples of 8 and at least 40, got 32"),
    (["--split", "test", "--sequences", "nope"], "has no sequence(s) ['nope']"),
])
def test_eval_bad_inputs_are_one_line(checkpoint, small_store, args, message):
    one_line_error(run("eval", checkpoint, "--store", small_store, "--device", "cpu", *args), message)


def test_eval_bad_checkpoint_and_store(checkpoint, small_store, tmp_path):
    one_line_error(run("eval", tmp_path / "missing.pt", "--store", small_store), "does not exist")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    one_line_error(run("eval", tmp_path / "junk.pt", "--store", small_store), "cannot be read as a torch file")
    one_line_error(run("eval", checkpoint, "--store", tmp_path, "--device", "cpu"), "not a Zarr store")


def test_help_lists_the_flags():
    for command, flags in (("eval", ["--store", "--split", "--json", "--csv", "--tile", "--device", "--precision",
                                     "--ensemble"]),
                           ("infer", ["--store", "--split", "--raw", "--align", "--out", "--tile", "--overwrite",
                                      "--ensemble"])):
        result = run(command, "--help")
        assert result.exit_code == 0
        for flag in flags:
            assert flag in result.output


def png_frames(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / f"{i:06d}.png")) for i in range(FRAMES)])


def test_infer_from_the_store_and_from_raw_give_the_same_frames(checkpoint, small_store, small_raw, tmp_path):
    out = tmp_path / "out"
    result = run("infer", checkpoint, "--store", small_store, "--split", "test", "--out", out, "--device", "cpu",
                 "--tile", "none")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote {out / SEQ} ({FRAMES} frames)"
    ck = load_checkpoint(checkpoint, device="cpu")
    (seq,) = restore_split(ck.model, small_store, "test", tile=None, transform=ck.transform, progress=False)
    from_store = png_frames(out / SEQ)
    np.testing.assert_array_equal(from_store, seq.output.permute(0, 2, 3, 1).numpy())
    raw_out = tmp_path / "raw_out"
    result = run("infer", checkpoint, "--raw", small_raw, "--align", small_raw / "align.csv", "--out", raw_out,
                 "--device", "cpu", "--tile", "none", "--sequences", f"test/{SEQ}")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(png_frames(raw_out / SEQ), from_store)  # voxelized on the fly == the store


def test_infer_raw_with_ensemble_is_the_library_self_ensemble(checkpoint, small_raw, tmp_path):
    from svrt_model.restore import SelfEnsemble

    out = tmp_path / "x4"
    result = run("infer", checkpoint, "--raw", small_raw, "--align", small_raw / "align.csv", "--out", out,
                 "--device", "cpu", "--tile", "none", "--sequences", f"test/{SEQ}", "--ensemble", "4")
    assert result.exit_code == 0, result.output
    ck = load_checkpoint(checkpoint, device="cpu")
    (seq,) = restore_raw(SelfEnsemble(ck.model, 4), small_raw, small_raw / "align.csv", bins=ck.model.config.spike_bins,
                         tile=None, transform=ck.transform, sequences=[f"test/{SEQ}"], progress=False)
    np.testing.assert_array_equal(png_frames(out / SEQ), seq.output.permute(0, 2, 3, 1).numpy())


def test_infer_refuses_before_working_and_replaces_only_its_own(checkpoint, small_store, small_raw, tmp_path):
    out = tmp_path / "out"
    store_args = ["--store", small_store, "--split", "test", "--out", out, "--device", "cpu", "--tile", "none"]
    assert run("infer", checkpoint, *store_args).exit_code == 0
    before = png_frames(out / SEQ)
    one_line_error(run("infer", checkpoint, *store_args), "already exists; pass --overwrite")
    result = run("infer", checkpoint, *store_args, "--overwrite")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(png_frames(out / SEQ), before)
    (out / SEQ / "mine.txt").write_text("keep")
    one_line_error(run("infer", checkpoint, *store_args, "--overwrite"), "was not written by svrt-model infer")
    assert (out / SEQ / "mine.txt").read_text() == "keep"


@pytest.mark.parametrize(("args", "message"), [
    ([], "give exactly one of the two pairs"),
    (["--store", "S", "--raw", "R", "--align", "A", "--split", "test"], "give exactly one of the two pairs"),
    (["--store", "S"], "give exactly one of the two pairs"),
    (["--raw", "R"], "give exactly one of the two pairs"),
])
def test_infer_source_errors_are_one_line(checkpoint, tmp_path, args, message):
    one_line_error(run("infer", checkpoint, "--out", tmp_path / "o", *args), message)
    assert not (tmp_path / "o").exists()


def test_infer_raw_errors_are_one_line(checkpoint, small_raw, tmp_path):
    one_line_error(run("infer", checkpoint, "--raw", small_raw, "--align", tmp_path / "none.csv", "--out",
                       tmp_path / "o", "--device", "cpu"), "align log not found")
    assert torch.get_num_threads() >= 1  # the runs above left the process usable
