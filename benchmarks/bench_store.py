"""End-to-end `svrt-data voxelize` throughput, serial vs local Dask clusters, and clip reads.

Builds (once, cached under --work) a synthetic raw dataset, then voxelizes it into a fresh store with
the in-process scheduler and with `--scheduler local --workers N` for each N of `--workers` (default 2),
checks every store is identical to the serial one,
and reports frames/s and MB/s (raw spike+image bytes read; store bytes written). Then times random
clip reads from the store through zarr: T=5 frames of blur+sharp+voxels, full frames and 256-px crops.

Usage: python benchmarks/bench_store.py [--work bench_out/store] [--sequences 4] [--frames 16]
       [--size 256x512] [--bins 32] [--backend numba] [--workers 2 4 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.voxelize_job import voxelize_dataset  # noqa: E402
from svrt_data.store import open_store  # noqa: E402
from tests.store_helpers import assert_same_store  # noqa: E402


def build_raw(work: Path, sequences: int, frames: int, size: tuple[int, int]) -> Path:
    from svrt_data.synth import synthesize

    raw = work / f"raw_{sequences}x{frames}_{size[0]}x{size[1]}"
    if not (raw / "align.csv").exists():
        t0 = time.perf_counter()
        synthesize(raw, sequences=sequences, test_sequences=0, frames=frames, size=size, seed=1, overwrite=True)
        print(f"built raw dataset {raw} in {time.perf_counter() - t0:.1f} s")
    return raw


def clip_reads(store: Path, n: int, crop: int | None) -> list[float]:
    rng = np.random.default_rng(0)
    seqs = open_store(store).sequences()
    out = []
    for _ in range(n):
        seq = seqs[int(rng.integers(len(seqs)))]
        f = int(rng.integers(0, seq.n_frames - 5 + 1))
        h, w = seq.rgb_shape
        t0 = time.perf_counter()
        if crop is None:
            seq.blur[f : f + 5], seq.sharp[f : f + 5], seq.voxels[f : f + 5]
        else:
            y, x = 2 * int(rng.integers(0, (h - crop) // 2 + 1)), 2 * int(rng.integers(0, (w - crop) // 2 + 1))
            seq.blur[f : f + 5, y : y + crop, x : x + crop]
            seq.sharp[f : f + 5, y : y + crop, x : x + crop]
            seq.voxels[f : f + 5, :, y // 2 : (y + crop) // 2, x // 2 : (x + crop) // 2]
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("bench_out/store"))
    ap.add_argument("--sequences", type=int, default=4)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", default="256x512")
    ap.add_argument("--bins", type=int, default=32)
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--reads", type=int, default=30)
    ap.add_argument("--workers", type=int, nargs="+", default=[2], help="local Dask cluster sizes to time")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    args.work.mkdir(parents=True, exist_ok=True)
    raw = build_raw(args.work, args.sequences, args.frames, size)
    rows = []
    stores = {}
    # Warm-up: compile/cache the numba kernels outside the timed runs.
    voxelize_dataset(raw, raw / "align.csv", args.work / "warmup.zarr", bins=args.bins, backend=args.backend,
                     overwrite=True, progress=False)
    runs = [("serial (in-process)", "none", 1)] + [(f"local Dask, {n} workers", "local", n) for n in args.workers]
    for label, scheduler, workers in runs:
        out = args.work / f"{scheduler}{workers}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        report = voxelize_dataset(raw, raw / "align.csv", out, bins=args.bins, backend=args.backend,
                                  scheduler=scheduler, workers=workers, progress=False)
        wall = time.perf_counter() - t0
        run = report.seconds  # after the cluster is up
        stores[label] = out
        rows.append((label, report.frames, report.spike_frames, wall, report.startup_seconds, run,
                     report.frames / run, report.bytes_in / run / 1e6, report.bytes_out / run / 1e6))
    for label, _, _ in runs[1:]:
        assert_same_store(stores[runs[0][0]], stores[label])
    print(f"\nvoxelize {raw.name}: K={args.bins}, backend {args.backend}, {os.cpu_count()} cores "
          "(stores identical: yes)")
    print("(frames/s and MB/s over the writing time, after the cluster is up; wall includes validation "
          "and start-up)")
    print(f"{'scheduler':<24} {'frames':>7} {'spike fr':>9} {'wall s':>7} {'startup s':>9} {'write s':>8} "
          f"{'frames/s':>9} {'MB/s in':>8} {'MB/s out':>9}")
    for r in rows:
        print(f"{r[0]:<24} {r[1]:>7} {r[2]:>9} {r[3]:>7.2f} {r[4]:>9.2f} {r[5]:>8.2f} {r[6]:>9.1f} {r[7]:>8.1f} "
              f"{r[8]:>9.1f}")
    print(f"\nclip reads through zarr ({args.reads} random T=5 clips: blur + sharp + voxels)")
    print(f"{'read':<24} {'median ms':>10} {'p95 ms':>8}")
    for label, crop in (("full frames", None), ("256 px crop", 256)):
        ms = clip_reads(stores[runs[0][0]], args.reads, crop)
        print(f"{label:<24} {statistics.median(ms):>10.1f} {np.percentile(ms, 95):>8.1f}")


if __name__ == "__main__":
    main()
