"""Decode throughput of svrt's .dat reader against a gather-based decoder in the style of common loaders.

The common loaders build a per-pixel byte index and bit mask once, then for every frame gather the
byte of each pixel and test its bit (one fancy-indexing gather + compare per pixel per frame). svrt
flips packed rows and unpacks whole chunks with ``np.unpackbits``. Both decode the same file from the
page cache into upright uint8 frames; results are checked equal before timing.

Usage: python benchmarks/bench_spike_io.py [--frames 2000] [--repeat 3]
Prints one table: frames/s and x real time at 20 kHz, single thread.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svrt_data import read_dat, write_dat  # noqa: E402

RATE_HZ = 20000.0


def gather_decoder(path: Path, height: int, width: int, flip: bool, start: int, stop: int) -> np.ndarray:
    """Per-frame gather + bit test, as the loaders shipped with common spike codebases decode .dat files."""
    frame_bytes = height * width // 8
    # Only the requested frames are read, so the comparison is about decoding, not I/O.
    raw = np.fromfile(path, dtype=np.uint8, count=(stop - start) * frame_bytes, offset=start * frame_bytes)
    pix = np.arange(height * width).reshape(height, width)
    byte_of_pixel = pix // 8
    bit_of_pixel = np.left_shift(1, np.mod(pix, 8)).astype(np.uint8)
    out = np.empty((stop - start, height, width), np.uint8)
    for i in range(stop - start):
        frame = raw[i * frame_bytes + byte_of_pixel]
        spikes = np.bitwise_and(frame, bit_of_pixel) == bit_of_pixel
        out[i] = np.flipud(spikes) if flip else spikes
    return out


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=2000, help="frames decoded per measurement at 250x400")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for (h, w), n in (((250, 400), args.frames), ((1000, 1000), max(50, args.frames // 10))):
            frames = (np.random.default_rng(0).random((n, h, w)) < 0.2).astype(np.uint8)
            path = Path(tmp) / f"{h}x{w}.dat"
            write_dat(path, frames, flip=True)
            stream = read_dat(path, height=h, width=w, flip=True)
            chunk = 256
            n_gather = max(20, n // 20)

            def ours_unpacked(stream=stream, n=n, chunk=chunk):
                for s in range(0, n, chunk):
                    stream[s : min(n, s + chunk)]

            def ours_packed(stream=stream, n=n, chunk=chunk):
                for s in range(0, n, chunk):
                    stream.packed(s, min(n, s + chunk))

            def gather(path=path, h=h, w=w, n_gather=n_gather):
                gather_decoder(path, h, w, True, 0, n_gather)

            np.testing.assert_array_equal(stream[0:n_gather], gather_decoder(path, h, w, True, 0, n_gather))
            np.testing.assert_array_equal(stream[:], frames)
            t_gather = best_time(gather, args.repeat) / n_gather
            for name, fn in (("gather-based (common loaders)", gather),
                             ("svrt read_dat: stream[a:b] (unpacked)", ours_unpacked),
                             ("svrt read_dat: stream.packed(a, b)", ours_packed)):
                per = t_gather if fn is gather else best_time(fn, args.repeat) / n
                rows.append((f"{h}x{w}", name, 1 / per, 1 / per / RATE_HZ, t_gather / per))
    print(f"\nDecode throughput, single thread, page cache (numpy {np.__version__}, {os.cpu_count()} cores)")
    print(f"{'geometry':<10} {'decoder':<40} {'frames/s':>12} {'x real time':>12} {'vs gather':>10}")
    for g, name, fps, xrt, speedup in rows:
        print(f"{g:<10} {name:<40} {fps:>12,.0f} {xrt:>12.2f} {speedup:>9.1f}x")
    target = next(r for r in rows if r[0] == "250x400" and "unpacked" in r[1])
    verdict = "met" if target[2] >= 40000 else "MISSED"
    print(f"\ntarget: >= 40,000 frames/s per core at 250x400 (unpacked): {target[2]:,.0f} -> {verdict}")


if __name__ == "__main__":
    main()
