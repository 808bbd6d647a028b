"""The Zarr store: layout, writer, reader, verify, HDF5 export, resume and the Dask executor."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from pipelines.voxelize_job import voxelize_dataset
from svrt_data import IncompleteSequenceError, StoreError, StoreLayoutError, read_dat
from svrt_data.align import read_align_log
from svrt_data.store import layout as L
from svrt_data.store import open_store, verify_store
from svrt_data.store.h5 import export_store_h5, import_store_h5
from svrt_data.voxelize import voxelize
from tests.store_helpers import assert_same_store, make_raw

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return make_raw(tmp_path_factory.mktemp("raw") / "raw")


@pytest.fixture(scope="module")
def store(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "s.zarr"
    voxelize_dataset(raw, raw / "align.csv", out, bins=8, backend="numpy", progress=False)
    return out


def test_store_holds_exactly_the_raw_data(raw, store):
    s = open_store(store)
    log = read_align_log(raw / "align.csv")
    assert s.voxel == {"bins": 8, "mode": "count", "dtype": "uint8"}
    keys = s.sequence_keys()
    assert len(keys) == 3 and {k[0] for k in keys} == {"train", "test"}
    for split, name in keys:
        seq = s.sequence(split, name)
        entries = log.sequences()[(split, name)]
        # spikes: the per-frame files concatenated, packed upright
        packed = np.concatenate([read_dat(raw / e.spike_file, height=32, width=64).packed() for e in entries])
        np.testing.assert_array_equal(seq.spikes[...], packed)
        # windows: each file's [0, 56) moved to its place in the concatenation
        np.testing.assert_array_equal(seq.windows, [[56 * i, 56 * (i + 1)] for i in range(len(entries))])
        blur = np.stack([np.asarray(Image.open(p)) for p in sorted((raw / split / name / "blur").glob("*.png"))])
        np.testing.assert_array_equal(seq.blur[...], blur)
        assert seq.sharp is not None and seq.sharp.shape == blur.shape
        np.testing.assert_array_equal(seq.voxels[...], voxelize(packed, seq.windows, bins=8, backend="numpy"))
        assert seq.blur.metadata.dimension_names == ("frame", "y", "x", "channel")
        assert seq.voxels.metadata.dimension_names == ("frame", "bin", "spike_y", "spike_x")
        prov = seq.attrs[L.SEQUENCE_ATTR]["provenance"]
        assert [p["file"] for p in prov["spike_sources"]] == [e.spike_file for e in entries]
        assert all(len(p["sha256"]) == 64 and p["bytes"] == 56 * 32 * 64 // 8 for p in prov["spike_sources"])


def test_chunks_and_shards_follow_the_layout(store):
    seq = open_store(store).sequences("train")[0]
    # 5 frames: the shard shrinks to the sequence instead of padding to 8 frames
    assert seq.voxels.chunks == (1, 8, 32, 64) and seq.voxels.shards == (5, 8, 32, 64)
    assert seq.blur.chunks == (1, 64, 128, 3)
    chunks, shards = L.chunking("voxels", (100, 32, 360, 640))
    assert chunks == (1, 32, 64, 64) and shards == (8, 32, 384, 640)
    chunks, shards = L.chunking("blur", (100, 720, 1280, 3))
    assert chunks == (1, 256, 256, 3) and shards == (8, 768, 1280, 3)
    chunks, shards = L.chunking("spikes", (8800, 360, 80))
    assert chunks == (256, 128, 16) and shards == (1024, 384, 80)


def test_verify_passes_then_catches_corruption(store, tmp_path):
    report = verify_store(store)
    assert report.ok, report.problems
    assert (report.sequences, report.frames) == (3, 15)
    bad = tmp_path / "bad.zarr"
    shutil.copytree(store, bad)
    seq = open_store(bad).sequences("test")[0]
    import zarr

    arr = zarr.open_array(str(bad / "test" / seq.name / "voxels"), mode="r+")
    arr[0, 0, 0, 0] = arr[0, 0, 0, 0] + 1
    report = verify_store(bad)
    assert not report.ok and any("voxels: checksum" in p for p in report.problems)


def test_reader_refuses_other_layouts_and_incomplete_sequences(store, tmp_path):
    other = tmp_path / "other.zarr"
    shutil.copytree(store, other)
    meta = json.loads((other / "zarr.json").read_text())
    meta["attributes"][L.ROOT_ATTR]["version"] = 99
    (other / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreLayoutError, match=f"layout version 99; this svrt reads version {L.LAYOUT_VERSION}"):
        open_store(other)
    inc = tmp_path / "inc.zarr"
    shutil.copytree(store, inc)
    name = open_store(inc).sequences("train")[0].name
    seq_meta = inc / "train" / name / "zarr.json"
    meta = json.loads(seq_meta.read_text())
    del meta["attributes"][L.COMPLETE_ATTR]
    seq_meta.write_text(json.dumps(meta))
    s = open_store(inc)
    assert s.incomplete() == [f"train/{name}"]
    with pytest.raises(IncompleteSequenceError, match=f"train/{name} is incomplete"):
        s.sequence("train", name)
    with pytest.raises(IncompleteSequenceError, match="1 incomplete sequence"):
        s.sequences()
    assert len(s.sequences("test")) == 1
    with pytest.raises(StoreError, match="not a Zarr store"):
        open_store(tmp_path)


def test_xarray_and_dask_open_the_arrays(store):
    xr = pytest.importorskip("xarray")
    import dask.array as da

    seq = open_store(store).sequences("train")[0]
    ds = xr.open_zarr(str(store), group=f"train/{seq.name}", consolidated=False)
    assert ds["voxels"].dims == ("frame", "bin", "spike_y", "spike_x")
    assert ds.sizes["frame"] == seq.n_frames and ds.sizes["spike_y"] == 32 and ds.sizes["y"] == 64
    assert ds["blur"].dims == ("frame", "y", "x", "channel")
    np.testing.assert_array_equal(ds["voxels"].values, seq.voxels[...])
    arr = da.from_zarr(str(store), component=f"train/{seq.name}/voxels")
    assert int(arr.sum().compute()) == int(seq.voxels[...].sum(dtype=np.int64))


def test_h5_round_trip_bit_exact(store, tmp_path):
    export_store_h5(store, tmp_path / "s.h5", progress=False)
    import_store_h5(tmp_path / "s.h5", tmp_path / "back.zarr", progress=False)
    assert_same_store(store, tmp_path / "back.zarr")
    assert verify_store(tmp_path / "back.zarr").ok


def test_resume_skips_complete_and_rebuilds_interrupted(raw, store, tmp_path, monkeypatch):
    out = tmp_path / "r.zarr"
    vx = importlib.import_module("svrt_data.voxelize")  # the package re-exports a function of that name

    real = vx.voxelize
    calls = {"n": 0}

    def failing(spikes, windows, **kwargs):
        calls["n"] += "first_frame" in kwargs  # the writer's calls (not the backend probe)
        if calls["n"] == 2:  # dies inside the second sequence, after its arrays were created
            raise RuntimeError("simulated crash")
        return real(spikes, windows, **kwargs)

    monkeypatch.setattr(vx, "voxelize", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        voxelize_dataset(raw, raw / "align.csv", out, bins=8, backend="numpy", progress=False)
    monkeypatch.setattr(vx, "voxelize", real)
    s = open_store(out)
    # the failed sequence never reached its place, and its writer deleted its own temporary build
    assert len(s.sequence_keys(include_incomplete=True)) == 1 and s.incomplete() == []
    assert not list(out.rglob(".*.svrt-*"))
    report = voxelize_dataset(raw, raw / "align.csv", out, bins=8, backend="numpy", progress=False)
    assert len(report.plan.skipped) == 1
    assert sorted(a for _, _, a, _, _ in report.plan.table()) == ["write", "write"]
    assert_same_store(store, out)
    again = voxelize_dataset(raw, raw / "align.csv", out, bins=8, backend="numpy", progress=False)
    assert again.plan.tasks == () and len(again.plan.skipped) == 3


def test_settings_mismatch_needs_overwrite(raw, store, tmp_path):
    out = tmp_path / "m.zarr"
    shutil.copytree(store, out)
    with pytest.raises(StoreLayoutError, match="pass --overwrite"):
        voxelize_dataset(raw, raw / "align.csv", out, bins=16, backend="numpy", progress=False)
    voxelize_dataset(raw, raw / "align.csv", out, bins=16, backend="numpy", overwrite=True, progress=False)
    assert open_store(out).voxel["bins"] == 16


def test_bad_inputs_fail_before_anything_is_written(raw, tmp_path):
    broken = tmp_path / "raw"
    shutil.copytree(raw, broken)
    victim = sorted((broken / "train").iterdir())[0] / "blur"
    sorted(victim.glob("*.png"))[-1].unlink()
    out = tmp_path / "x.zarr"
    with pytest.raises(StoreError, match=r"4 images in .* but 5 frames in the align log"):
        voxelize_dataset(broken, broken / "align.csv", out, bins=8, backend="numpy", progress=False)
    assert not out.exists()


def _run_cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-c", "from cli.data import main; main()", *map(str, args)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_same_store(tmp_path):
    raw = make_raw(tmp_path / "raw", sequences=5, test_sequences=1, frames=8, seed=3)
    clean = tmp_path / "clean.zarr"
    p = _run_cli("voxelize", raw, "--out", clean, "--bins", "8", "--backend", "numpy")
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 0, out
    killed = tmp_path / "killed.zarr"
    p = _run_cli("voxelize", raw, "--out", killed, "--bins", "8", "--backend", "numpy")
    deadline = time.time() + 120
    # Kill as soon as the first sequence is complete and the next one has started.
    while time.time() < deadline and p.poll() is None:
        markers = list(killed.glob("*/*/zarr.json")) if killed.exists() else []
        done = [m for m in markers if L.COMPLETE_ATTR in m.read_text()]
        if done and len(markers) > len(done):
            break
        time.sleep(0.01)
    p.kill()
    p.communicate()
    s = open_store(killed)
    interrupted = len(s.sequence_keys()) < 6
    p = _run_cli("voxelize", raw, "--out", killed, "--bins", "8", "--backend", "numpy")
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 0, out
    assert_same_store(clean, killed)
    assert verify_store(killed).ok
    if interrupted:
        assert "skipped" in out and not out.startswith("wrote 6")


@pytest.mark.slow
def test_dask_local_cluster_equals_serial(raw, store, tmp_path):
    pytest.importorskip("distributed")
    out = tmp_path / "d.zarr"
    report = voxelize_dataset(raw, raw / "align.csv", out, bins=8, backend="numpy", scheduler="local", workers=2,
                              progress=False)
    assert len(report.written) == 3
    assert_same_store(store, out)



@pytest.mark.slow
def test_dask_worker_killed_mid_run_loses_nothing(tmp_path):
    """A worker SIGKILLed while writing: its task reruns elsewhere and the store equals the serial one."""
    distributed = pytest.importorskip("distributed")
    import os
    import signal
    import threading

    raw = make_raw(tmp_path / "raw", sequences=4, test_sequences=0, frames=16, seed=5)
    serial = tmp_path / "serial.zarr"
    voxelize_dataset(raw, raw / "align.csv", serial, bins=8, backend="numpy", progress=False)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    out = tmp_path / "dask.zarr"
    try:
        address = cluster.scheduler_address
        with distributed.Client(address) as client:
            pids = list(client.run(os.getpid).values())
        result: dict = {}

        def run() -> None:
            result["report"] = voxelize_dataset(raw, raw / "align.csv", out, bins=8, backend="numpy",
                                                scheduler=address, progress=False)

        t = threading.Thread(target=run)
        t.start()
        deadline = time.time() + 60
        while time.time() < deadline and not list(out.glob("train/*/voxels")):
            time.sleep(0.005)
        os.kill(pids[0], signal.SIGKILL)  # the nanny restarts it; the scheduler reruns its task
        t.join(timeout=240)
        assert not t.is_alive() and len(result["report"].written) == 4
    finally:
        cluster.close()
    assert_same_store(serial, out)
    assert verify_store(out).ok


def test_a_split_group_made_by_another_worker_meanwhile_is_opened(raw, store, tmp_path, monkeypatch):
    """The race behind a failure of the test above: two Dask workers found ``train`` missing and both created
    it; the loser's ``require_group`` raised ContainsGroupError. Replayed here deterministically: the first
    ``require_group`` of a split creates it through another handle and then fails as the loser's did."""
    import zarr
    from zarr.errors import ContainsGroupError

    original = zarr.Group.require_group
    raced = []

    def lose_the_race(self, name, **kwargs):
        if name == "train" and not raced:
            raced.append(name)
            original(zarr.open_group(self.store_path.store.root, mode="r+"), name)  # the winner
            raise ContainsGroupError(f"A group exists in store at path {name!r}.")
        return original(self, name, **kwargs)

    monkeypatch.setattr(zarr.Group, "require_group", lose_the_race)
    out = tmp_path / "raced.zarr"
    voxelize_dataset(raw, raw / "align.csv", out, bins=8, backend="numpy", progress=False)
    assert raced == ["train"]
    assert_same_store(store, out)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("scheduler", ["none", "local"])
def test_cupy_backend_store_equals_cpu_store(raw, store, tmp_path, scheduler):
    """GPU voxelization (in-process, and on a Dask worker holding the GPU resource) writes the same store."""
    if scheduler == "local":
        pytest.importorskip("distributed")
    out = tmp_path / "gpu.zarr"
    report = voxelize_dataset(raw, raw / "align.csv", out, bins=8, backend="cupy", scheduler=scheduler,
                              workers=1, progress=False)
    assert all(t.needs_gpu for t in report.plan.tasks)
    a, b = open_store(store), open_store(out)
    for split, name in a.sequence_keys():
        np.testing.assert_array_equal(a.sequence(split, name).voxels[...], b.sequence(split, name).voxels[...])
    assert verify_store(out).ok
