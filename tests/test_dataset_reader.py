"""The chunk-aligned shard reader against zarr-python itself: bit-exact over random boxes and edge cases."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle

import numpy as np
import pytest

from svrt_data.store.fast_reader import (
    ChunkCache,
    ShardedArrayReader,
    ZarrArrayReader,
    _zstd_content_size,
    parse_array_meta,
)
from svrt_errors import StoreError, StoreLayoutError

zarr = pytest.importorskip("zarr")
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec  # noqa: E402

# (name, shape, chunks, shards, dtype, compressor, fill)
CASES = [
    ("rgb", (11, 70, 90, 3), (1, 32, 32, 3), (4, 64, 96, 3), "uint8", "zstd", 0),
    ("voxels", (9, 6, 40, 56), (1, 6, 16, 16), (8, 6, 48, 64), "uint8", "blosc-lz4", 0),
    ("spikes", (300, 30, 7), (64, 16, 4), (128, 32, 8), "uint8", "zstd", 0),
    ("linear", (5, 4, 20, 24), (1, 4, 8, 8), (2, 4, 16, 24), "float16", "blosc-zstd", 0),
    ("plain", (7, 33, 2), (3, 8, 2), (6, 16, 2), "float64", None, 1.5),
    ("unsharded", (13, 21), (4, 8), None, "int16", "zstd", -3),
]


def _compressors(name, checksum=True):
    crc = [Crc32cCodec()] if checksum else []
    if name is None:
        return crc or None
    if name == "zstd":
        return [ZstdCodec(level=1), *crc]
    if name == "blosc-lz4":
        return [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"), *crc]
    return [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"), *crc]


def _make(tmp_path, case, seed=0):
    """Every chunk stored (as svrt writers do), with a block equal to the fill value among them."""
    name, shape, chunks, shards, dtype, comp, fill = case
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 200, shape).astype(dtype) if dtype != "float16" else rng.random(shape).astype(dtype)
    sl = tuple(slice(0, min(c * 2, n)) for c, n in zip(chunks, shape, strict=True))
    data[sl] = fill
    path = tmp_path / name
    arr = zarr.create_array(str(path), shape=shape, chunks=chunks, shards=shards, dtype=dtype,
                            compressors=_compressors(comp), fill_value=fill, config={"write_empty_chunks": True})
    cut = shape[0] - shape[0] // 3  # two writes, the second a partial shard
    arr[:cut] = data[:cut]
    arr[cut:] = data[cut:]
    return path, data


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    root = tmp_path_factory.mktemp("arrays")
    return {case[0]: (case, *_make(root, case)) for case in CASES}


def _random_boxes(shape, n, rng):
    for _ in range(n):
        box = []
        for size in shape:
            a = int(rng.integers(0, size))
            b = int(rng.integers(a, size + 1))
            box.append((a, b))
        yield box
    yield [(0, s) for s in shape]  # the whole array: every edge chunk
    yield [(s - 1, s) for s in shape]  # the last element


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_fast_reader_equals_zarr_on_random_boxes(arrays, name):
    case, path, data = arrays[name]
    meta = parse_array_meta(path)
    fast, ref = ShardedArrayReader(meta), ZarrArrayReader(meta)
    assert meta.sharded == (case[3] is not None)
    rng = np.random.default_rng(1)
    for box in _random_boxes(case[1], 40, rng):
        sl = tuple(slice(a, b) for a, b in box)
        got, want = fast.read(box), ref.read(box)
        assert got.dtype == want.dtype == data.dtype
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, data[sl])


def test_read_into_flipped_and_transposed_views(arrays):
    _, path, data = arrays["rgb"]
    fast = ShardedArrayReader(parse_array_meta(path))
    box = [(2, 6), (5, 69), (7, 71), (0, 3)]
    out = np.empty((4, 3, 64, 64), np.uint8)  # T C H W, written through a transposed, flipped view
    dst = out.transpose(0, 3, 2, 1)[:, ::-1, ::-1]  # T h w C with h/w swapped and both flipped
    fast.read_into(box, dst)
    crop = data[2:6, 5:69, 7:71]  # T H W C
    np.testing.assert_array_equal(out, crop.transpose(0, 3, 2, 1)[:, :, ::-1, ::-1])


def test_cache_hits_are_identical_and_bounded(arrays):
    case, path, data = arrays["voxels"]
    meta = parse_array_meta(path)
    cache = ChunkCache(3 * meta.chunk_nbytes)
    fast = ShardedArrayReader(meta, cache)
    box = [(3, 4), (0, 6), (10, 30), (10, 30)]  # touches 4 chunks: more than the cache holds
    for _ in range(3):
        np.testing.assert_array_equal(fast.read(box), data[3:4, :, 10:30, 10:30])
        assert cache.nbytes <= cache.max_bytes and len(cache) <= 3
    small = [(5, 6), (0, 6), (20, 30), (20, 30)]  # one chunk
    fast.read(small)
    hits = cache.hits
    np.testing.assert_array_equal(fast.read(small), data[5:6, :, 20:30, 20:30])
    assert cache.hits == hits + 1
    cached = cache.get((meta.path, (5, 0, 1, 1)))
    assert cached is not None and not cached.flags.writeable
    with pytest.raises(StoreError, match="max_bytes must be an integer >= 0"):
        ChunkCache(-1)


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_every_chunk_is_stored_and_checksummed(arrays, name):
    case, path, data = arrays[name]
    meta = parse_array_meta(path)
    assert meta.checksum and ShardedArrayReader(meta).missing_chunks() == []


def test_missing_shards_and_empty_chunks_are_errors_never_fill(tmp_path):
    path = tmp_path / "holes"
    arr = zarr.create_array(str(path), shape=(7, 33, 2), chunks=(3, 8, 2), shards=(6, 16, 2), dtype="float64",
                            compressors=[Crc32cCodec()], fill_value=1.5)  # zarr's default: fill chunks unstored
    arr[:5] = 2.0
    arr[0:3, 0:8] = 1.5  # one inner chunk equal to the fill value: an empty index entry
    meta = parse_array_meta(path)
    fast = ShardedArrayReader(meta)
    missing = fast.missing_chunks()
    assert any("chunk (0, 0, 0) (file c/0/0/0): the shard index marks it empty" in m for m in missing)
    assert any("chunk (2, 0, 0) (file c/1/0/0): its file c/1/0/0 is missing" in m for m in missing)
    with pytest.raises(StoreError, match=r"chunk \(0, 0, 0\).*marks it empty.*svrt-data verify"):
        fast.read([(0, 1), (0, 1), (0, 1)])
    with pytest.raises(StoreError, match=r"chunk \(2, 1, 0\).*is missing.*svrt-data verify"):
        fast.read([(6, 7), (10, 11), (0, 2)])
    with pytest.raises(StoreError, match="marks it empty"):
        ZarrArrayReader(meta).read([(3, 4), (0, 1), (0, 1)])  # zarr alone would return 1.5 here
    np.testing.assert_array_equal(fast.read([(3, 5), (8, 33), (0, 2)]), 2.0)  # intact chunks still read


def _flip_chunk_byte(array_dir, meta, coords):
    """Flip one byte in the middle of chunk ``coords``'s stored bytes (found through the shard index)."""
    per = meta.chunks_per_file
    shard = array_dir / meta.file_of(coords)
    raw = bytearray(shard.read_bytes())
    n = int(np.prod(per))
    index = np.frombuffer(bytes(raw[-(16 * n + 4) : -4]), "<u8").reshape(n, 2)
    row = int(np.ravel_multi_index(tuple(c % p for c, p in zip(coords, per, strict=True)), per))
    offset, nbytes = (int(v) for v in index[row])
    raw[offset + nbytes // 2] ^= 0x10
    shard.write_bytes(bytes(raw))


@pytest.mark.parametrize("name", ["rgb", "voxels", "spikes", "linear"])
def test_checksums_catch_a_flipped_byte_in_both_readers(arrays, tmp_path, name):
    import shutil

    case, path, data = arrays[name]
    bad = tmp_path / name
    shutil.copytree(path, bad)
    coords = tuple(max(0, g - 2) for g in parse_array_meta(bad).chunk_grid)  # random data, no edge padding
    _flip_chunk_byte(bad, parse_array_meta(bad), coords)
    meta = parse_array_meta(bad)
    box = [(0, n) for n in case[1]]
    pattern = rf"chunk \({', '.join(map(str, coords))}\).*checksum mismatch.*svrt-data verify"
    with pytest.raises(StoreError, match=pattern):
        ShardedArrayReader(meta).read(box)
    with pytest.raises(StoreError, match=pattern):
        ZarrArrayReader(meta).read(box)
    # off (only to measure the check's cost), the same damage is no longer caught by a checksum
    try:
        got = ShardedArrayReader(meta, verify_checksums=False).read(box)
    except StoreError as exc:
        assert "checksum" not in str(exc)
    else:
        assert not np.array_equal(got, data)


def _write_meta(path, edit):
    meta = json.loads((path / "zarr.json").read_text())
    edit(meta)
    (path / "zarr.json").write_text(json.dumps(meta))


def test_unsupported_layouts_are_refused(tmp_path):
    path = tmp_path / "g"
    zarr.create_array(str(path), shape=(4, 4), chunks=(2, 2), shards=(4, 4), dtype="uint8",
                      compressors=[ZstdCodec(level=1)])
    _write_meta(path, lambda m: m["codecs"][0]["configuration"]["codecs"][1].update(name="gzip"))
    with pytest.raises(StoreLayoutError, match=r"codec chain \['bytes', 'gzip'\] is not supported.*Rebuild the store"):
        parse_array_meta(path)
    with pytest.raises(StoreLayoutError, match="no readable zarr.json"):
        parse_array_meta(tmp_path / "absent")
    path2 = tmp_path / "t"
    zarr.create_array(str(path2), shape=(4, 4), chunks=(2, 2), dtype="uint8")
    _write_meta(path2, lambda m: m["codecs"].insert(0, {"name": "transpose", "configuration": {"order": [1, 0]}}))
    with pytest.raises(StoreLayoutError, match="codec chain"):
        parse_array_meta(path2)


def test_damaged_shards_raise(tmp_path):
    path = tmp_path / "d"
    arr = zarr.create_array(str(path), shape=(4, 8), chunks=(2, 4), shards=(4, 8), dtype="uint8",
                            compressors=[ZstdCodec(level=1)])
    arr[:] = np.arange(32, dtype=np.uint8).reshape(4, 8) + 1
    shard = path / "c" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0xFF  # inside the index: the checksum no longer matches
    shard.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="shard index checksum mismatch"):
        ShardedArrayReader(parse_array_meta(path)).read([(0, 1), (0, 1)])
    raw[-5] ^= 0xFF
    raw[0:4] = b"\0\0\0\0"  # the first chunk's zstd magic
    shard.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match=r"chunk \(0, 0\) \(file c/0/0\): cannot be decoded.*damaged"):
        ShardedArrayReader(parse_array_meta(path)).read([(0, 1), (0, 1)])
    with pytest.raises(StoreError, match="outside the array"):
        ShardedArrayReader(parse_array_meta(path)).read([(0, 5), (0, 1)])


def test_zstd_header_size_is_checked():
    from numcodecs import zstd

    for n in (0, 1, 255, 256, 300, 70000):
        assert _zstd_content_size(zstd.compress(bytes(n), 1)) == n
    with pytest.raises(ValueError, match="not a zstd frame"):
        _zstd_content_size(b"garbage!")


def _child_read(payload):
    reader, box = pickle.loads(payload)
    return reader.read(box)


def test_readers_pickle_without_open_files_and_work_under_fork_forkserver_spawn(arrays):
    case, path, data = arrays["rgb"]
    fast = ShardedArrayReader(parse_array_meta(path), ChunkCache(1 << 20))
    box = [(1, 3), (10, 60), (20, 80), (0, 3)]
    fast.read(box)  # opens files in this process
    assert fast._files
    state = fast.__getstate__()
    assert set(state) == {"meta", "cache", "verify_checksums"}
    payload = pickle.dumps((fast, box))
    for method in ("fork", "forkserver", "spawn"):
        with multiprocessing.get_context(method).Pool(1) as pool:
            np.testing.assert_array_equal(pool.apply(_child_read, (payload,)), data[1:3, 10:60, 20:80])
    # a forked child that inherits an opened reader (no cache: it must read) reopens its own files
    fast = ShardedArrayReader(parse_array_meta(path))
    fast.read(box)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=lambda: q.put((os.getpid(), fast.read(box).sum(), fast._pid)))
    p.start()
    pid, total, reader_pid = q.get(timeout=60)
    p.join()
    assert total == data[1:3, 10:60, 20:80].sum() and reader_pid == pid
