"""Measure chunk, shard and codec choices for the store on realistic data (what docs/store.md reports).

Data: the Spk-GoPro fixture (360x640 spikes, 88 frames) voxelized at K=32 over its whole window, and
its 1280x720 ground-truth photograph as RGB; 16 frames made by shifting them (so content varies
while statistics stay real). For every candidate: compression ratio, write MB/s, and the latency of
the two reads training does: a random T=5 clip cropped to 256x256 RGB / 128x128 spikes, and a full
T=5 clip (evaluation). Reads go through zarr's own API, from the page cache.

Usage: python benchmarks/bench_store_layout.py [--shared ../shared] [--reads 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svrt_data import read_dat  # noqa: E402
from svrt_data.spike_io import pack_frames  # noqa: E402
from svrt_data.synth.simulator import integrate_and_fire  # noqa: E402
from svrt_data.voxelize import voxelize  # noqa: E402

N = 16


def load_data(shared: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    spk = read_dat(shared / "fixtures/spike/spk_gopro_000226_88x360x640.dat", height=360, width=640)
    packed = spk.packed()
    vox = voxelize(packed, np.array([[0.0, 88.0]]), bins=32, backend="numpy")[0]
    rgb = np.asarray(Image.open(shared / "fixtures/spike/spk_gopro_000226_gt.png").convert("RGB"))
    # Spikes: shifted copies of one stream would let zstd find repeats across copies, so simulate a
    # fresh stream of the photograph moving 1 px per frame (integrate-and-fire, threshold 2, as Spk-GoPro).
    gray = np.asarray(Image.fromarray(rgb).convert("L").resize((640, 360)), np.float64) / 255.0
    charge = np.random.default_rng(0).uniform(0, 2.0, gray.shape)
    frames = [integrate_and_fire(charge, np.roll(gray, t // 4, 1)[None], 2.0)[0] for t in range(N * 88)]
    return {
        "blur": np.stack([np.roll(rgb, (7 * i, 13 * i), (0, 1)) for i in range(N)]),
        "voxels": np.stack([np.roll(vox, (3 * i, 5 * i), (1, 2)) for i in range(N)]),
        "spikes": pack_frames(np.stack(frames).astype(np.uint8)),
    }


def codecs(name: str):
    from zarr.codecs import BloscCodec, ZstdCodec

    return {
        "none": None,
        "zstd-1": [ZstdCodec(level=1)],
        "zstd-3": [ZstdCodec(level=3)],
        "blosc-lz4": [BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")],
        "blosc-lz4-bitshuffle": [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")],
        "blosc-zstd1-bitshuffle": [BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")],
    }[name]


CANDIDATES = [
    # array, label, chunks, shards, codec
    ("blur", "frame chunk", (1, 720, 1280, 3), (8, 720, 1280, 3), "zstd-1"),
    ("blur", "tile 256", (1, 256, 256, 3), (8, 768, 1280, 3), "zstd-1"),
    ("blur", "tile 256 (v1)", (1, 256, 256, 3), (8, 768, 1280, 3), "blosc-lz4"),
    ("blur", "tile 128", (1, 128, 128, 3), (8, 768, 1280, 3), "zstd-1"),
    ("blur", "tile 256 raw", (1, 256, 256, 3), (8, 768, 1280, 3), "none"),
    ("blur", "tile 256 zstd-3", (1, 256, 256, 3), (8, 768, 1280, 3), "zstd-3"),
    ("voxels", "frame chunk", (1, 32, 360, 640), (8, 32, 360, 640), "blosc-zstd1-bitshuffle"),
    ("voxels", "tile 128", (1, 32, 128, 128), (8, 32, 384, 640), "blosc-zstd1-bitshuffle"),
    ("voxels", "tile 64", (1, 32, 64, 64), (8, 32, 384, 640), "blosc-zstd1-bitshuffle"),
    ("voxels", "tile 128 raw", (1, 32, 128, 128), (8, 32, 384, 640), "none"),
    ("voxels", "tile 128 zstd-1", (1, 32, 128, 128), (8, 32, 384, 640), "zstd-1"),
    ("voxels", "tile 128 (v1)", (1, 32, 128, 128), (8, 32, 384, 640), "blosc-lz4-bitshuffle"),
    ("spikes", "256 frames, full", (256, 360, 80), (1024, 360, 80), "zstd-1"),
    ("spikes", "256 fr, tile 128 (v1)", (256, 128, 16), (1024, 384, 80), "zstd-1"),
    ("spikes", "256 fr, tile 128 raw", (256, 128, 16), (1024, 384, 80), "none"),
]


def decode_speeds(data: dict[str, np.ndarray]) -> list[tuple[str, str, float, float]]:
    """Codec-only decode speed of one tile, single thread (what the loader's shard reader pays)."""
    import numcodecs
    from numcodecs import Blosc, Zstd

    numcodecs.blosc.set_nthreads(1)
    tiles = {
        "blur": [np.ascontiguousarray(data["blur"][0, y : y + 256, x : x + 256]) for y in (0, 256) for x in (0, 512)],
        "voxels": [np.ascontiguousarray(data["voxels"][0, :, y : y + 128, x : x + 128]) for y in (0, 128)
                   for x in (0, 256)],
        "spikes": [np.ascontiguousarray(data["spikes"][:256, y : y + 128, x : x + 16]) for y in (0, 128)
                   for x in (0, 32)],
    }
    codecs_ = {"zstd-1": Zstd(level=1), "blosc-lz4": Blosc("lz4", 5, Blosc.NOSHUFFLE),
               "blosc-lz4-bitshuffle": Blosc("lz4", 5, Blosc.BITSHUFFLE),
               "blosc-zstd1-bitshuffle": Blosc("zstd", 1, Blosc.BITSHUFFLE)}
    rows = []
    for name, ts in tiles.items():
        for cname, codec in codecs_.items():
            enc = [codec.encode(t) for t in ts]
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < 0.3:
                for e in enc:
                    codec.decode(e)
                    n += 1
            dt = (time.perf_counter() - t0) / n
            rows.append((name, cname, sum(t.nbytes for t in ts) / sum(len(e) for e in enc), ts[0].nbytes / dt / 1e9))
    return rows


def files_and_bytes(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file() and p.name != "zarr.json"]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> None:
    import zarr

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--reads", type=int, default=20)
    args = ap.parse_args()
    data = load_data(args.shared)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, label, chunks, shards, codec) in enumerate(CANDIDATES):
            arr = data[name]
            path = Path(tmp) / f"{i}.zarr"
            z = zarr.create_array(str(path), shape=arr.shape, dtype=arr.dtype, chunks=chunks, shards=shards,
                                  compressors=codecs(codec), fill_value=0)
            t0 = time.perf_counter()
            z[...] = arr
            write = arr.nbytes / (time.perf_counter() - t0) / 1e6
            n_files, size = files_and_bytes(path)
            z = zarr.open_array(str(path), mode="r")
            crop_ms, full_ms = [], []
            for _ in range(args.reads):
                if name == "spikes":
                    f = int(rng.integers(0, arr.shape[0] - 440))  # 5 windows of 88 frames
                    y, xb = int(rng.integers(0, 360 - 128)), int(rng.integers(0, 80 - 16))
                    sl_crop = (slice(f, f + 440), slice(y, y + 128), slice(xb, xb + 16))
                    sl_full = (slice(f, f + 440),)
                else:
                    f = int(rng.integers(0, N - 5))
                    size_c = 256 if name == "blur" else 128
                    hy, wx = (arr.shape[1], arr.shape[2]) if name == "blur" else (arr.shape[2], arr.shape[3])
                    y, x = int(rng.integers(0, hy - size_c)), int(rng.integers(0, wx - size_c))
                    sl_crop = ((slice(f, f + 5), slice(y, y + size_c), slice(x, x + size_c)) if name == "blur"
                               else (slice(f, f + 5), slice(None), slice(y, y + size_c), slice(x, x + size_c)))
                    sl_full = (slice(f, f + 5),)
                t0 = time.perf_counter()
                z[sl_crop]
                crop_ms.append((time.perf_counter() - t0) * 1e3)
                t0 = time.perf_counter()
                z[sl_full]
                full_ms.append((time.perf_counter() - t0) * 1e3)
            rows.append((name, label, codec, arr.nbytes / size, write, statistics.median(crop_ms),
                         statistics.median(full_ms), n_files))
    print(f"\nStore layout candidates (zarr {zarr.__version__}, numpy {np.__version__}, {os.cpu_count()} cores; "
          f"{N} frames; clip = 5 frames / 440 spike frames)")
    print(f"{'array':<7} {'chunking':<22} {'codec':<23} {'ratio':>6} {'write MB/s':>10} "
          f"{'crop ms':>8} {'full ms':>8} {'files':>6}")
    for r in rows:
        print(f"{r[0]:<7} {r[1]:<22} {r[2]:<23} {r[3]:>6.2f} {r[4]:>10.0f} {r[5]:>8.1f} {r[6]:>8.1f} {r[7]:>6}")
    print("\nCodec alone: decode speed of one tile, one thread (RGB 256x256x3, voxels 32x128x128, spikes 256x128x16)")
    print(f"{'array':<7} {'codec':<23} {'ratio':>6} {'decode GB/s':>12}")
    for name, cname, ratio, gbs in decode_speeds(data):
        print(f"{name:<7} {cname:<23} {ratio:>6.2f} {gbs:>12.2f}")


if __name__ == "__main__":
    main()
