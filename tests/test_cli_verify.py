"""``svrt-data verify`` through CliRunner: a good store, damaged ones (each problem names its array, then the
rebuild command), --help."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from cli.data import main
from pipelines.voxelize_job import voxelize_dataset
from svrt_data.store import open_store
from tests.store_helpers import make_raw


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    raw = make_raw(tmp_path_factory.mktemp("raw") / "raw", sequences=1, test_sequences=1, frames=4)
    out = tmp_path_factory.mktemp("store") / "s.zarr"
    voxelize_dataset(raw, raw / "align.csv", out, bins=4, backend="numpy", progress=False)
    return out


def _copy(store, tmp_path):
    bad = tmp_path / "bad.zarr"
    shutil.copytree(store, bad)
    return bad, open_store(bad).sequences("test")[0].key


def test_verify_a_good_store(store) -> None:
    res = CliRunner().invoke(main, ["verify", str(store)])
    assert res.exit_code == 0, res.output
    assert res.output == f"{store}: 2 sequences, 8 frames: all well\n"


def test_verify_names_a_damaged_array(store, tmp_path) -> None:
    import zarr

    bad, key = _copy(store, tmp_path)
    arr = zarr.open_array(str(bad / key / "voxels"), mode="r+")
    arr[1, 0, 0, 0] = arr[1, 0, 0, 0] + 1
    res = CliRunner().invoke(main, ["verify", str(bad)])
    assert res.exit_code == 1
    lines = res.output.splitlines()
    assert len(lines) == 3 and lines[0].startswith(f"PROBLEM: {key}/voxels: checksum sha256:")
    assert lines[1] == f"{bad}: 2 sequences, 8 frames: 1 problem(s)"
    assert lines[2] == (f"rebuild the damaged sequences from the raw data: svrt-data voxelize RAW --out {bad} "
                        f"--sequences {key} --no-resume")
    # the damage is in the content only: without checksums the store looks whole
    assert CliRunner().invoke(main, ["verify", str(bad), "--no-checksums"]).exit_code == 0


def test_verify_names_an_array_of_the_wrong_shape(store, tmp_path) -> None:
    import zarr

    bad, key = _copy(store, tmp_path)
    group = zarr.open_group(str(bad / key), mode="r+")
    good = np.asarray(group["windows"][...])
    group.create_array("windows", shape=(3, 2), dtype="float64", dimension_names=("frame", "bound"),
                       overwrite=True)[...] = good[:3]
    res = CliRunner().invoke(main, ["verify", str(bad), "--no-checksums"])
    assert res.exit_code == 1
    assert f"PROBLEM: {key}/windows: float64 (3, 2), expected float64 (4, 2)" in res.output.splitlines()


def test_verify_something_that_is_no_store(tmp_path) -> None:
    res = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert res.exit_code == 1
    assert "not a Zarr store" in res.output and "Traceback" not in res.output


def test_verify_help() -> None:
    res = CliRunner().invoke(main, ["verify", "--help"])
    assert res.exit_code == 0
    assert res.output.startswith("Usage: main verify [OPTIONS] STORE")
    text = " ".join(res.output.split())  # click wraps the help text
    assert ("Check a store: completeness, metadata, every chunk (present, crc32c, decodable), shapes, windows and "
            "array checksums. Lists every damaged array and chunk; exit status 1 if anything is wrong") in text
    assert "--no-checksums Only check that every chunk exists (shard indexes), without decoding (faster)." in text
