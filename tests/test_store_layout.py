"""The store contract: ``sequence_arrays`` is the one description of a sequence's arrays, and the writer,
the verifier and the loader's checks all agree with it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines.voxelize_job import voxelize_dataset
from svrt_data.align import PerFrameFiles, build_align_log, write_align_log
from svrt_data.geometry import Geometry
from svrt_data.spike_io import read_dat, write_dat
from svrt_data.store import layout as L
from svrt_data.store import open_store
from svrt_errors import SpikeFormatError, StoreLayoutError
from tests.store_helpers import make_raw

DIMS_RGB = ("frame", "y", "x", "channel")
DIMS_VOXELS = ("frame", "bin", "spike_y", "spike_x")
DIMS_SPIKES = ("spike_frame", "spike_y", "spike_x_byte")


def _table(arrays: dict[str, L.ArrayLayout]) -> dict[str, tuple]:
    return {n: (a.shape, a.dtype, a.chunks, a.shards, a.dims) for n, a in arrays.items()}


def test_sequence_arrays_small_sequence() -> None:
    geo = L.SequenceGeometry(frames=5, rgb_shape=(64, 128), spike_shape=(32, 64), spike_frames=280, bins=8)
    assert _table(L.sequence_arrays(geo)) == {
        "blur": ((5, 64, 128, 3), "uint8", (1, 64, 128, 3), (5, 64, 128, 3), DIMS_RGB),
        "sharp": ((5, 64, 128, 3), "uint8", (1, 64, 128, 3), (5, 64, 128, 3), DIMS_RGB),
        "spikes": ((280, 32, 8), "uint8", (256, 32, 8), (512, 32, 8), DIMS_SPIKES),
        "windows": ((5, 2), "float64", (5, 2), None, ("frame", "bound")),
        "voxels": ((5, 8, 32, 64), "uint8", (1, 8, 32, 64), (5, 8, 32, 64), DIMS_VOXELS),
    }


def test_sequence_arrays_spk_gopro_linear_without_sharp() -> None:
    geo = L.SequenceGeometry(frames=20, rgb_shape=(720, 1280), spike_shape=(360, 640), spike_frames=8800, bins=32,
                             voxel_mode="linear", has_sharp=False)
    arrays = L.sequence_arrays(geo)
    assert _table(arrays) == {
        "blur": ((20, 720, 1280, 3), "uint8", (1, 256, 256, 3), (8, 768, 1280, 3), DIMS_RGB),
        "spikes": ((8800, 360, 80), "uint8", (256, 128, 16), (1024, 384, 80), DIMS_SPIKES),
        "windows": ((20, 2), "float64", (20, 2), None, ("frame", "bound")),
        "voxels": ((20, 32, 360, 640), "float16", (1, 32, 64, 64), (8, 32, 384, 640), DIMS_VOXELS),
    }
    assert arrays["spikes"].write_block == (1024, 384, 80) and arrays["windows"].write_block == (20, 2)


@pytest.mark.parametrize("change, message", [
    ({"spike_shape": (32, 60)}, r"spike width 60 is not a multiple of 8; layout v2 stores spikes as packed rows of "
                                r"whole bytes"),
    ({"frames": -1}, r"frames must be an integer >= 0, got -1"),
    ({"bins": 0}, r"bins must be an integer >= 1, got 0"),
    ({"rgb_shape": (64, 12.5)}, r"RGB width must be an integer >= 1, got 12.5"),
    ({"voxel_mode": "sum"}, r"voxel mode must be 'count' or 'linear', got 'sum'"),
])
def test_sequence_arrays_refuses_what_the_layout_cannot_hold(change: dict, message: str) -> None:
    args = {"frames": 5, "rgb_shape": (64, 128), "spike_shape": (32, 64), "spike_frames": 280, "bins": 8}
    with pytest.raises(StoreLayoutError, match=message):
        L.sequence_arrays(L.SequenceGeometry(**{**args, **change}))


def test_the_writer_stores_exactly_the_layout(tmp_path) -> None:
    raw = make_raw(tmp_path / "raw", sequences=1, test_sequences=0, frames=3)
    out = tmp_path / "s.zarr"
    voxelize_dataset(raw, raw / "align.csv", out, bins=4, mode="linear", backend="numpy", progress=False)
    (seq,) = open_store(out).sequences()
    geo = L.SequenceGeometry(seq.n_frames, seq.rgb_shape, seq.spike_shape, int(seq.spikes.shape[0]), 4, "linear",
                             seq.sharp is not None)
    want = L.sequence_arrays(geo)
    got = {name: seq.group[name] for name, _ in seq.group.arrays()}
    assert sorted(got) == sorted(want) == ["blur", "sharp", "spikes", "voxels", "windows"]
    for name, a in want.items():
        arr = got[name]
        assert (tuple(arr.shape), str(arr.dtype), tuple(arr.chunks), arr.shards,
                tuple(arr.metadata.dimension_names)) == (a.shape, a.dtype, a.chunks, a.shards, a.dims), name
        # layout v2: the layout's codecs (zarr fills in Blosc's typesize from the dtype), then every chunk's crc32c
        got_codecs = [c.to_dict() for c in arr.compressors]
        want_codecs = [c.to_dict() for c in a.compressors()]
        for c in want_codecs:
            if c["name"] == "blosc":
                c["configuration"]["typesize"] = np.dtype(a.dtype).itemsize
        assert got_codecs == want_codecs, name
        assert got_codecs[-1]["name"] == "crc32c", name


def _raw_with_width(root, width: int):
    """One sequence of 3 frames whose spike streams are 8 x ``width`` (40 spike frames per blurry frame)."""
    rng = np.random.default_rng(3)
    seq = root / "train" / "s"
    (seq / "blur").mkdir(parents=True)
    for i in range(3):
        write_dat(seq / "spike" / f"{i:06d}.dat", (rng.random((40, 8, width)) < 0.3).astype(np.uint8))
        Image.fromarray(rng.integers(0, 256, (16, 2 * width, 3), dtype=np.uint8)).save(seq / "blur" / f"{i:06d}.png")
    log = build_align_log(root, PerFrameFiles(40), Geometry(8, width))
    write_align_log(log, root / "align.csv")
    return root


def test_a_spike_width_off_the_byte_grid_is_refused_before_anything_is_written(tmp_path) -> None:
    """Packed rows are whole bytes (``Ws // 8`` and ``-(-Ws // 8)`` agree for every width the layout holds).
    An 8x12 stream is a valid .dat (96 bits a frame), but its rows cannot be packed, so the layout refuses
    it when the job is planned: no store, no half-written group."""
    raw = _raw_with_width(tmp_path / "raw", 12)
    with pytest.raises(SpikeFormatError, match="multiple of 8"):
        read_dat(raw / "train/s/spike/000000.dat", height=8, width=12).packed(0, 1)  # what the writer would call
    out = tmp_path / "s.zarr"
    with pytest.raises(StoreLayoutError, match=r"train/s: sequence geometry: spike width 12 is not a multiple of 8"):
        voxelize_dataset(raw, raw / "align.csv", out, bins=4, backend="numpy", progress=False)
    assert not out.exists()


def test_the_writer_itself_refuses_that_width_before_touching_the_store(tmp_path) -> None:
    from svrt_data.align import read_align_log
    from svrt_data.store.sources import plan_sequence_sources
    from svrt_data.store.writer import VoxelSettings, create_store, write_sequence

    raw = _raw_with_width(tmp_path / "raw", 12)
    (source,) = plan_sequence_sources(raw, read_align_log(raw / "align.csv"))
    out = tmp_path / "s.zarr"
    voxel = VoxelSettings(4, "count", "numpy")
    create_store(out, voxel, {})
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(StoreLayoutError, match="spike width 12 is not a multiple of 8"):
        write_sequence(out, source, voxel)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
