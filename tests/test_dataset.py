"""SpikeDeblurDataset end to end, on stores whose pixels and spikes encode their own coordinates.

The raw dataset written here has RGB pixels holding ``(frame, y, x)`` (R = y & 255, G = x & 255,
B = high bits and the frame) and spike frames whose bits spell ``(frame, ys, xs)`` (bin k holds bit k
of ``xs | ys << 8 | frame << 16``, one spike frame per bin), sharp = 255 - blur. ``svrt-data voxelize``
turns it into a store; decoding every delivered pixel tells exactly where it came from.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipelines.voxelize_job import voxelize_dataset  # noqa: E402
from svrt_data.align import PerFrameFiles, build_align_log, write_align_log  # noqa: E402
from svrt_data.geometry import Geometry  # noqa: E402
from svrt_data.loader.assemble import SequenceAssembler  # noqa: E402
from svrt_data.loader.clip_geometry import Dihedral  # noqa: E402
from svrt_data.loader.collate import collate_clips, move_batch  # noqa: E402
from svrt_data.loader.dataset import SpikeDeblurDataset  # noqa: E402
from svrt_data.loader.recipe import make_loader  # noqa: E402
from svrt_data.loader.sampler import ClipKey, ClipSampler  # noqa: E402
from svrt_data.spike_io import write_dat  # noqa: E402
from svrt_data.voxelize import voxelize  # noqa: E402
from svrt_errors import IncompleteSequenceError, StoreError, StoreLayoutError, SvrtValueError  # noqa: E402

BINS = 24


# -- the coordinate store ------------------------------------------------------------------------------
def rgb_code(frame: int, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return np.stack([y & 255, x & 255, (y >> 8) | ((x >> 8) << 1) | (frame << 2)], axis=-1).astype(np.uint8)


def decode_rgb(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(..., 3, h, w)`` uint8 -> frame, y, x of every pixel."""
    v = img.astype(np.int64)
    r, g, b = v[..., 0, :, :], v[..., 1, :, :], v[..., 2, :, :]
    return b >> 2, r | ((b & 1) << 8), g | (((b >> 1) & 1) << 8)


def spike_code(frame: int, hs: int, ws: int) -> np.ndarray:
    ys, xs = np.mgrid[:hs, :ws]
    code = xs | (ys << 8) | (frame << 16)
    return ((code[None] >> np.arange(BINS)[:, None, None]) & 1).astype(np.uint8)  # BINS spike frames


def decode_voxels(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(..., K, hs, ws)`` counts (0/1) -> frame, ys, xs of every spike pixel."""
    code = (v.astype(np.int64) << np.arange(BINS)[:, None, None]).sum(axis=-3)
    return code >> 16, (code >> 8) & 255, code & 255


def build_coord_store(root: Path, *, rgb=(288, 320), spike=(144, 160), frames=(7, 9), sharp=True) -> Path:
    """Raw dataset + store of coordinate-coded sequences ``train/SEQ<i>`` (see the module docstring)."""
    from PIL import Image

    raw = root / "raw"
    (h, w), (hs, ws) = rgb, spike
    for i, n in enumerate(frames):
        folder = raw / "train" / f"SEQ{i}"
        for d in ("blur", "sharp", "spike"):
            (folder / d).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            im = rgb_code(j, h, w)
            Image.fromarray(im).save(folder / "blur" / f"{j:06d}.png", compress_level=0)
            if sharp:
                Image.fromarray(255 - im).save(folder / "sharp" / f"{j:06d}.png", compress_level=0)
            write_dat(folder / "spike" / f"{j:06d}.dat", spike_code(j, hs, ws), flip=True)
    log = build_align_log(raw, PerFrameFiles(frames_per_blur=BINS), Geometry(hs, ws, flip=True, name="coords"))
    write_align_log(log, raw / "align.csv")
    out = root / "s.zarr"
    voxelize_dataset(raw, raw / "align.csv", out, bins=BINS, backend="numpy", progress=False,
                     sharp_dir="sharp" if sharp else None)
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return build_coord_store(tmp_path_factory.mktemp("coords"))


def _expected_grid(box, d: Dihedral, scale=1):
    """Coordinates ``(y, x)`` that an output crop must hold: the region of ``box``, transformed by ``d``."""
    y0, x0, h, w = (v // scale for v in box)
    y, x = np.mgrid[y0 : y0 + h, x0 : x0 + w]
    return d.apply(y, 0, 1), d.apply(x, 0, 1)


def check_item(item, *, scale=2, raw=False):
    """Every pixel of every array comes from the place, frame and transform the item claims."""
    frames = item["frames"].numpy()
    d = Dihedral(*map(bool, item["augment"].tolist()))
    box = item["crop"].tolist()
    ey, ex = _expected_grid(box, d)
    for key, flip in (("blur", False), ("sharp", True)):
        if key not in item:
            continue
        img = item[key].numpy()
        f, y, x = decode_rgb(255 - img if flip else img)
        assert (f == frames[:, None, None]).all(), key
        assert (y == ey).all() and (x == ex).all(), key
    if raw:
        bits = np.unpackbits(item["spike_bits"].numpy(), axis=-1, bitorder="little")
        win = item["spike_windows"].numpy()
        assert (bits[item["spike_len"] :] == 0).all() and win.max() <= item["spike_len"]
        vox = voxelize(item["spike_bits"].numpy()[: item["spike_len"]], win, bins=BINS, backend="numpy")
    else:
        vox = item["spikes"].numpy()
    fs, ys, xs = decode_voxels(vox)
    sy, sx = _expected_grid(item["spike_crop"].tolist(), d)
    assert (fs == frames[:, None, None]).all() and (ys == sy).all() and (xs == sx).all()
    if "blur" in item:  # RGB pixel (2p + a, 2q + b) lies on spike pixel (p, q), whatever the transform
        t, hs, ws = ys.shape
        _, y, x = decode_rgb(item["blur"].numpy())
        assert (y.reshape(t, hs, scale, ws, scale) // scale == ys[:, :, None, :, None]).all()
        assert (x.reshape(t, hs, scale, ws, scale) // scale == xs[:, :, None, :, None]).all()


# -- shapes, crops, augmentation -----------------------------------------------------------------------
def test_item_shapes_and_dtypes(store):
    ds = SpikeDeblurDataset(store, "train", clip_len=3, crop=(64, 96), augment="dihedral", seed=0)
    assert ds.bins == BINS and ds.has_sharp and ds.sequences == ["train/SEQ0", "train/SEQ1"]
    it = ds[0]
    assert it["blur"].shape == it["sharp"].shape == (3, 3, 64, 96) and it["blur"].dtype == torch.uint8
    assert it["spikes"].shape == (3, BINS, 32, 48) and it["spikes"].dtype == torch.uint8
    assert it["frames"].dtype == torch.int64 and it["crop"].shape == (4,) and it["augment"].shape == (3,)
    assert it["sequence"] == "train/SEQ0" and it["index"] == 0 and it["epoch"] == 0
    raw = SpikeDeblurDataset(store, "train", clip_len=3, crop=64, spike_input="raw", seed=0)
    r = raw[1]
    assert r["spike_bits"].shape == (raw.max_spike_frames, 32, 4) and r["spike_bits"].dtype == torch.uint8
    assert r["spike_windows"].shape == (3, 2) and r["spike_windows"].dtype == torch.float64
    assert raw.max_spike_frames == 3 * BINS and r["spike_len"] == 3 * BINS
    none = SpikeDeblurDataset(store, "train", clip_len=2, crop=64, spike_input="none", sharp=False)
    assert set(none[0]) == {"blur", "sequence", "frames", "crop", "spike_crop", "augment", "index", "epoch"}


@pytest.mark.parametrize("spike_input", ["voxels", "raw"])
def test_every_crop_and_transform_maps_exactly(store, spike_input):
    ds = SpikeDeblurDataset(store, "train", clip_len=3, stride=1, crop=(64, 96), spike_input=spike_input,
                            augment="dihedral", seed=5)
    seen = set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            check_item(item, raw=spike_input == "raw")
            seen.add(tuple(item["augment"].tolist()))
            if item["augment"][2]:
                assert item["crop"][2:].tolist() == [96, 64]  # a transposed clip reads a 96x64 region
    assert len(seen) == 8


def test_crops_reach_the_edge_tiles(store):
    # 288x320 frames are 2x2 chunks of 256 (edge chunks of 32 and 64 rows/columns): crops must cross them
    ds = SpikeDeblurDataset(store, "train", clip_len=2, stride=1, crop=(128, 128), augment="flips", seed=1)
    boxes = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            check_item(item)
            boxes.append(item["crop"].tolist())
    assert any(y + h > 256 for y, x, h, w in boxes) and any(x + w > 256 for y, x, h, w in boxes)


def test_full_frames_and_equal_resolution(tmp_path):
    s = build_coord_store(tmp_path, rgb=(96, 128), spike=(96, 128), frames=(4,), sharp=False)
    ds = SpikeDeblurDataset(s, "train", clip_len=2, crop=(40, 24), augment="dihedral", seed=2)
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            check_item(ds[i], scale=1)
    full = SpikeDeblurDataset(s, "train", clip_len=2, crop=None, augment="flips", seed=0)
    item = full[0]
    assert item["blur"].shape == (2, 3, 96, 128) and "sharp" not in item
    check_item(item, scale=1)


# -- evaluation -------------------------------------------------------------------------------------------
def test_eval_covers_every_frame_deterministically(store):
    ds = SpikeDeblurDataset(store, "train", clip_len=3, stride=2, mode="eval")
    assert ds.plan.augment == "none"
    covered = {k: set() for k in ds.sequences}
    assembler = SequenceAssembler(ds)
    for i in range(len(ds)):
        item = ds[i]
        assert item["blur"].shape == (3, 3, 288, 320) and item["augment"].tolist() == [0, 0, 0]
        check_item(item)
        frames = item["frames"].tolist()
        assert frames == list(range(frames[0], frames[0] + 3))
        covered[item["sequence"]].update(frames)
        assembler.add(item["blur"][None].float(), [item["sequence"]], item["frames"][None])
    assert covered == {"train/SEQ0": set(range(7)), "train/SEQ1": set(range(9))}
    for key, n in (("train/SEQ0", 7), ("train/SEQ1", 9)):
        whole = assembler.result(key)
        f, _, _ = decode_rgb(whole.round().to(torch.uint8).numpy())
        assert whole.shape == (n, 3, 288, 320) and (f == np.arange(n)[:, None, None]).all()
    again = SpikeDeblurDataset(store, "train", clip_len=3, stride=2, mode="eval", seed=99)
    assert all(torch.equal(ds[i]["blur"], again[i]["blur"]) for i in range(len(ds)))
    with pytest.raises(SvrtValueError, match=r"has outputs for 0 of its 7 frames"):
        SequenceAssembler(ds).result("train/SEQ0")


def test_eval_centre_crop(store):
    ds = SpikeDeblurDataset(store, "train", clip_len=3, crop=64, mode="eval")
    item = ds[0]
    assert item["crop"].tolist() == [112, 128, 64, 64]
    check_item(item)


# -- determinism ------------------------------------------------------------------------------------------
def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def test_seed_epoch_and_keys(store):
    a = SpikeDeblurDataset(store, "train", clip_len=3, crop=64, seed=11)
    b = SpikeDeblurDataset(store, "train", clip_len=3, crop=64, seed=11)
    c = SpikeDeblurDataset(store, "train", clip_len=3, crop=64, seed=12)
    for i in range(len(a)):
        _same(a[i], b[i])
    assert any(a.spec(i) != c.spec(i) for i in range(len(a)))
    a.set_epoch(3)
    _same(a[1], b[ClipKey(3, 1)])
    assert any(a.spec(i) != b.spec(i) for i in range(len(a)))
    with pytest.raises(SvrtValueError, match="epoch must be an integer >= 0"):
        a.set_epoch(-1)


def test_getitems_equals_getitem_and_collates_without_copy(store):
    ds = SpikeDeblurDataset(store, "train", clip_len=3, crop=64, spike_input="raw", seed=4)
    keys = [ClipKey(1, i) for i in range(len(ds))]
    items = ds.__getitems__(keys)
    for k, it in zip(keys, items, strict=True):
        _same(it, ds[k])
    batch = collate_clips(items)
    assert batch["blur"].shape == (len(keys), 3, 3, 64, 64)
    assert batch["blur"].data_ptr() == items[0]["blur"].data_ptr()  # the items were rows of this buffer
    assert batch["spike_len"].tolist() == [it["spike_len"] for it in items]
    assert batch["sequence"] == [it["sequence"] for it in items]
    separate = collate_clips([ds[k] for k in keys])
    for key in ("blur", "sharp", "spike_bits", "spike_windows", "frames", "crop"):
        assert torch.equal(batch[key], separate[key])
    moved = move_batch(batch, "cpu")
    assert moved["spike_windows"] is batch["spike_windows"]


def test_worker_count_does_not_change_batches(store):
    ds = SpikeDeblurDataset(store, "train", clip_len=2, stride=1, crop=(64, 64), seed=8)

    def batches(workers, context=None):
        loader = make_loader(ds, batch_size=3, num_workers=workers, pin_memory=False, multiprocessing_context=context,
                             prefetch_factor=2 if workers else None)
        out = []
        for epoch in (0, 1):
            loader.sampler.set_epoch(epoch)
            out += list(loader)
        return out

    serial = batches(0)
    assert len(serial) == 2 * (len(ds) // 3)
    assert serial[0]["epoch"].tolist() == [0, 0, 0] and serial[-1]["epoch"].tolist() == [1, 1, 1]
    for parallel in (batches(2), batches(1, "spawn")):
        assert len(parallel) == len(serial)
        for a, b in zip(serial, parallel, strict=True):
            _same(a, b)


@pytest.mark.parametrize("spike_input", ["voxels", "raw"])
def test_worker_batches_are_their_shared_ring_buffers(store, monkeypatch, spike_input):
    """Inside a worker every tensor of a batch must already live in shared memory (sending it then copies
    nothing) and be a ring buffer, reused once its flag is cleared; while every slot is held, batches go
    to fresh buffers. (A batch tensor that collate_clips stacked into private memory instead would be
    copied into fresh shared memory by the sender.)"""
    from types import SimpleNamespace

    from svrt_data.loader import batch_buffers as D

    ds = SpikeDeblurDataset(store, "train", clip_len=2, stride=1, crop=(64, 64), spike_input=spike_input, seed=8)
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: SimpleNamespace(id=0, dataset=ds))
    keys = [ClipKey(0, i) for i in range(2)]
    ints = {"index", "epoch", "spike_len", "spike_first"}  # ints in items, batched by collate_clips

    def batch():
        b = collate_clips(ds.__getitems__(keys))
        return b, {k: v.data_ptr() for k, v in b.items() if isinstance(v, torch.Tensor) and k not in ints}

    ring = ds._buffer_ring = D.BufferRing(2, tracked=True)
    (b0, p0), (b1, p1) = batch(), batch()
    p0.pop(D.RELEASE_KEY), p1.pop(D.RELEASE_KEY)
    assert {"blur", "sharp", "frames", "crop", "augment"} <= set(p0)
    assert all(b0[k].is_shared() for k in p0) and all(p0[k] != p1[k] for k in p0)
    assert ring.in_use.tolist() == [1, 1]
    b2, p2 = batch()  # both slots held: fresh buffers, the held batches stay intact
    assert D.RELEASE_KEY not in b2 and all(p2[k] not in (p0[k], p1[k]) for k in p0)
    b0[D.RELEASE_KEY].zero_()  # what the main process does once it dropped b0
    b3, p3 = batch()
    assert p3.pop(D.RELEASE_KEY) == b0[D.RELEASE_KEY].data_ptr() and p3 == p0  # slot 0 again
    serial = collate_clips([ds[k] for k in keys])
    for b in (b1, b2, b3):
        b.pop(D.RELEASE_KEY, None)
        _same(serial, b)

    ds._buffer_ring = D.BufferRing(2, tracked=False)  # pinned loaders: round robin, no flag sent
    u = [batch() for _ in range(3)]
    assert u[0][1] == u[2][1] != u[1][1] and D.RELEASE_KEY not in u[0][0]


def test_main_process_releases_a_buffer_when_its_batch_is_gone():
    import gc

    from svrt_data.loader import batch_buffers as D

    flags = D.empty_tensor((2,), torch.int32, True).fill_(1)
    shared = D.empty_tensor((3, 4), torch.float32, True).fill_(1)
    batch = {"x": shared, "y": shared[1], "meta": torch.zeros(3), "name": ["a"], D.RELEASE_KEY: flags[1:2]}
    del shared
    out = D.release_when_dropped(batch)
    assert out is batch and D.RELEASE_KEY not in out
    kept = out["x"][2:].numpy()  # a numpy view keeps the storage alive
    del out, batch
    gc.collect()
    assert flags.tolist() == [1, 1]
    del kept
    gc.collect()
    assert flags.tolist() == [1, 0]
    # a worker sends such a batch as a RecycledBatch: unpickling it (in the main process) registers this
    sent = D.RecycledBatch({"x": torch.ones(2), D.RELEASE_KEY: torch.ones(1, dtype=torch.int32)})
    got = pickle.loads(pickle.dumps(sent))
    assert type(got) is dict and set(got) == {"x"}


def test_reused_worker_buffers_give_the_same_batches(store):
    """Workers recycling prefetch_factor + 2 shared buffers without pinning: a loop that keeps every
    batch (no clones) still sees exactly the batches of a serial loader (workers fall back to fresh
    buffers while all of theirs are held), and a loop that drops them sees them too."""
    ds = SpikeDeblurDataset(store, "train", clip_len=2, stride=1, crop=(64, 64), seed=8)
    loader = make_loader(ds, batch_size=2, num_workers=2, pin_memory=False, prefetch_factor=2, epochs=4)
    kept = list(loader)
    assert all(b["blur"].is_shared() and "_svrt_release" not in b for b in kept)  # no copy on the way
    serial = list(make_loader(ds, batch_size=2, num_workers=0, pin_memory=False, epochs=4))
    assert len(kept) == len(serial) > 2 * (2 + 2) * 2
    for a, b in zip(serial, kept, strict=True):
        _same(a, b)
    for a, b in zip(serial, loader, strict=True):  # each batch dropped at once: the rings turn
        _same(a, b)
    fresh = list(make_loader(ds, batch_size=2, num_workers=2, pin_memory=False, prefetch_factor=2, epochs=1,
                             reuse_buffers=False))
    assert fresh and all(b["blur"].is_shared() for b in fresh)  # handed over as sent: nothing to copy
    for a, b in zip(serial, fresh, strict=False):
        _same(a, b)


@pytest.mark.needs_cuda
def test_pinned_loader_reuses_buffers_safely(store):
    """With pin_memory (reuse_buffers on by default) every yielded batch is a pinned copy: keeping all of
    them (no clones) while the workers recycle their buffers many times must not change any."""
    ds = SpikeDeblurDataset(store, "train", clip_len=2, stride=1, crop=(64, 64), seed=8)
    loader = make_loader(ds, batch_size=2, num_workers=2, prefetch_factor=2, epochs=6)
    assert loader.pin_memory
    kept = list(loader)
    serial = list(make_loader(ds, batch_size=2, num_workers=0, pin_memory=False, epochs=6))
    assert len(kept) == len(serial) > 3 * (2 + 2) * 2
    for a, b in zip(serial, kept, strict=True):
        _same(a, b)


def test_sampler_permutes_and_splits_across_replicas():
    data = list(range(10))
    s = ClipSampler(data, shuffle=True, seed=1)
    first = [k.index for k in s]
    s.set_epoch(1)
    second = [k.index for k in s]
    assert sorted(first) == sorted(second) == data and first != second
    parts = [[k.index for k in ClipSampler(data, seed=1, num_replicas=3, rank=r)] for r in range(3)]
    assert [len(p) for p in parts] == [4, 4, 4] and set(sum(parts, [])) == set(data)
    dropped = [[k.index for k in ClipSampler(data, seed=1, num_replicas=3, rank=r, drop_last=True)] for r in range(3)]
    assert [len(p) for p in dropped] == [3, 3, 3] and len(set(sum(dropped, []))) == 9
    assert [k.index for k in ClipSampler(data, shuffle=False)] == data
    many = ClipSampler(data, seed=1, epochs=3)
    many.set_epoch(2)
    keys = list(many)
    assert len(many) == len(keys) == 30 and [k.epoch for k in keys] == [2] * 10 + [3] * 10 + [4] * 10
    s.set_epoch(3)
    assert keys[10:20] == list(s)
    with pytest.raises(SvrtValueError, match=r"rank must be in \[0, 2\)"):
        ClipSampler(data, num_replicas=2, rank=2)


def test_dataset_pickles_before_and_after_reading(store):
    ds = SpikeDeblurDataset(store, "train", clip_len=3, crop=64, seed=3, cache_bytes=1 << 24)
    first = ds[0]
    assert ds.reader._readers and ds.reader.cache.nbytes > 0
    clone = pickle.loads(pickle.dumps(ds))
    assert not clone.reader._readers and clone.reader.cache.nbytes == 0
    _same(clone[0], first)
    _same(ds[0], first)  # from the cache this time
    assert ds.reader.cache.hits > 0


# -- the fast reader against zarr ---------------------------------------------------------------------------
@pytest.mark.parametrize("spike_input", ["voxels", "raw"])
def test_fast_reader_items_equal_zarr_items(store, spike_input):
    kw = {"clip_len": 3, "stride": 2, "crop": (64, 96), "spike_input": spike_input, "seed": 6}
    fast = SpikeDeblurDataset(store, "train", reader="fast", cache_bytes=1 << 22, **kw)
    ref = SpikeDeblurDataset(store, "train", reader="zarr", **kw)
    for epoch in range(3):
        for i in range(len(fast)):
            _same(fast[ClipKey(epoch, i)], ref[ClipKey(epoch, i)])


# -- errors at construction ----------------------------------------------------------------------------------
def _copy(store, tmp_path) -> Path:
    out = tmp_path / "copy.zarr"
    shutil.copytree(store, out)
    return out


def _edit_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def test_store_errors(store, tmp_path):
    with pytest.raises(StoreError, match=r"no split 'val'; the store has splits \['train'\]"):
        SpikeDeblurDataset(store, "val", clip_len=3, crop=64)
    with pytest.raises(StoreError, match=r"split 'train' has no sequence\(s\) \['NOPE'\]"):
        SpikeDeblurDataset(store, "train", clip_len=3, crop=64, sequences=["NOPE"])
    with pytest.raises(StoreError, match="not a Zarr store"):
        SpikeDeblurDataset(tmp_path, "train", clip_len=3, crop=64)
    bad = _copy(store, tmp_path)
    _edit_json(bad / "train" / "SEQ1" / "zarr.json", lambda m: m["attributes"].pop("svrt_complete"))
    with pytest.raises(IncompleteSequenceError, match=r"1 incomplete sequence\(s\): train/SEQ1; .*--resume"):
        SpikeDeblurDataset(bad, "train", clip_len=3, crop=64)
    ok = SpikeDeblurDataset(bad, "train", clip_len=3, crop=64, sequences=["SEQ0"])
    assert ok.sequences == ["train/SEQ0"]
    shutil.rmtree(bad / "train" / "SEQ0" / "voxels")
    with pytest.raises(StoreLayoutError, match=r"train/SEQ0: missing array\(s\) \['voxels'\]"):
        SpikeDeblurDataset(bad, "train", clip_len=3, crop=64, sequences=["SEQ0"])
    SpikeDeblurDataset(bad, "train", clip_len=3, crop=64, sequences=["SEQ0"], spike_input="raw")  # raw needs no voxels
    shutil.rmtree(bad / "train" / "SEQ0" / "spikes")
    with pytest.raises(StoreLayoutError, match=r"missing array\(s\) \['spikes'\]"):
        SpikeDeblurDataset(bad, "train", clip_len=3, crop=64, sequences=["SEQ0"], spike_input="raw")
    _edit_json(bad / "zarr.json", lambda m: m["attributes"]["svrt_layout"].update(version=99))
    with pytest.raises(StoreLayoutError, match=r"layout version 99; this svrt reads version 2"):
        SpikeDeblurDataset(bad, "train", clip_len=3, crop=64)


def test_array_and_codec_errors(store, tmp_path):
    bad = _copy(store, tmp_path)
    _edit_json(bad / "train" / "SEQ0" / "blur" / "zarr.json",
               lambda m: m["codecs"][0]["configuration"]["codecs"].__setitem__(1, {"name": "gzip",
                                                                                  "configuration": {"level": 1}}))
    with pytest.raises(StoreLayoutError, match=r"blur: codec chain \['bytes', 'gzip', 'crc32c'\] is not supported"):
        SpikeDeblurDataset(bad, "train", clip_len=3, crop=64)
    _edit_json(bad / "train" / "SEQ1" / "zarr.json", lambda m: m["attributes"]["svrt_sequence"]["voxel"].update(bins=8))
    with pytest.raises(StoreLayoutError, match=r"train/SEQ1: array 'voxels' is uint8 \(9, 24, 144, 160\), expected "
                                               r"uint8 \(9, 8, 144, 160\)"):
        SpikeDeblurDataset(bad, "train", clip_len=3, crop=64, reader="zarr")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"clip_len": 8}, SvrtValueError, r"sequence train/SEQ0: clip_len=8 is longer than its 7 frames"),
        ({"clip_len": 0}, SvrtValueError, r"clip_len must be a positive integer, got 0"),
        ({"stride": 0}, SvrtValueError, r"stride must be a positive integer"),
        ({"crop": 512}, SvrtValueError, r"crop 512x512 is larger than its 288x320 frames"),
        ({"crop": (63, 64)}, SvrtValueError, r"crop height 63 does not map to whole spike pixels"),
        ({"crop": (40, 40), "spike_input": "raw"}, SvrtValueError, r"spike crop 20x20"),
        ({"crop": None}, SvrtValueError, r"full 288x320 frames cannot be transposed"),
        ({"mode": "eval", "augment": True}, SvrtValueError, r"evaluation is deterministic"),
        ({"mode": "test"}, SvrtValueError, r"mode must be 'train' or 'eval'"),
        ({"spike_input": "events"}, SvrtValueError, r"spike_input must be one of"),
        ({"reader": "mmap"}, SvrtValueError, r"reader must be one of"),
        ({"reader": "zarr", "cache_bytes": 10}, SvrtValueError, r"cache_bytes needs reader='fast'"),
        ({"sequences": "SEQ0"}, SvrtValueError, r"sequences must be a list of names"),
        ({"seed": -1}, SvrtValueError, r"seed must be an integer >= 0"),
    ],
)
def test_argument_errors(store, kwargs, error, message):
    args = {"clip_len": 3, "crop": 64}
    args.update(kwargs)
    with pytest.raises(error, match=message):
        SpikeDeblurDataset(store, "train", **args)


def test_sharp_policy(tmp_path):
    s = build_coord_store(tmp_path, rgb=(64, 64), spike=(32, 32), frames=(3,), sharp=False)
    with pytest.raises(StoreLayoutError, match=r"sharp=True but 1 sequence\(s\) have no 'sharp' array: train/SEQ0"):
        SpikeDeblurDataset(s, "train", clip_len=2, crop=32, sharp=True)
    assert not SpikeDeblurDataset(s, "train", clip_len=2, crop=32).has_sharp


def test_svrt_data_exports_the_dataset_lazily():
    import subprocess
    import sys

    code = ("import sys, svrt_data, svrt_data.loader, svrt_data.loader.clip_reader, svrt_data.store.fast_reader; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "from svrt_data import SpikeDeblurDataset, SpikeTransform, make_loader; "
            "import svrt_data.loader.dataset as d; assert SpikeDeblurDataset is d.SpikeDeblurDataset; print('ok')")
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
    import svrt_data

    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        svrt_data.Nope  # noqa: B018


def test_assembler_averages_overlapping_frames(store):
    ds = SpikeDeblurDataset(store, "train", clip_len=4, stride=4, mode="eval", sequences=["SEQ0"], spike_input="none")
    assert [ds.spec(i).start for i in range(len(ds))] == [0, 3]  # 7 frames: the second clip is aligned to the end
    asm = SequenceAssembler(ds)
    for i, value in ((0, 1.0), (1, 3.0)):
        frames = ds.spec(i).frames
        asm.add(torch.full((1, 4, 2), value), ["train/SEQ0"], torch.from_numpy(frames)[None])
    np.testing.assert_array_equal(asm.result("train/SEQ0")[:, 0].numpy(), [1, 1, 1, 2, 3, 3, 3])
    with pytest.raises(SvrtValueError, match="unknown sequence 'x'"):
        asm.add(torch.zeros(1, 4, 2), ["x"], torch.zeros(1, 4, dtype=torch.int64))
    with pytest.raises(SvrtValueError, match=r"need frames \(B, T\)"):
        asm.add(torch.zeros(1, 4, 2), ["train/SEQ0"], torch.zeros(1, 3, dtype=torch.int64))
