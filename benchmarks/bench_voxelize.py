"""Voxelization throughput: svrt's backends against the common event-list practice, in one table.

Streams of 250x400 and 1000x1000 spike frames at 20 kHz with 5% and 20% firing; K = 32 bins per window,
one window per 1/240 s (83.33 frames, back to back), mode ``count`` (``--mode linear`` times the svrt rows
in float32 mode instead). Rows:

- ``event list (NumPy)``: the E2VID/tonic habit, re-implemented here: per window unpack the frames,
  ``np.nonzero`` them into an event list, ``np.add.at`` each event into its bin;
- ``NumPy reference``: :mod:`kernels.voxelize_ref`;
- ``Numba``: :mod:`kernels.voxelize_numba` through :func:`svrt_data.voxelize` (all cores), into a
  preallocated ``out=`` (a fresh output array costs page faults on first touch, up to ~2x here);
- ``torch GPU event list``: the same habit on the GPU (bit unpack, ``torch.nonzero``, ``index_add_``);
- ``CuPy``: :mod:`kernels.voxelize_cupy` through :func:`svrt_data.voxelize`, all windows in one launch,
  into a preallocated ``out=``; timed over back-to-back calls (host-side planning included).

Columns: time per window, x real time (1/240 s over that time), and GB/s counting the packed bytes of
the window's frames read plus the voxel bytes written. On a GPU the run also measures device-to-device
copy bandwidth (bytes read + written) and gives CuPy's fraction of it. Every row's first window is
checked against the NumPy reference before it is timed. GPU rows are skipped without CUDA.

    python benchmarks/bench_voxelize.py [--mode count|linear] [--no-gpu] [--no-cpu] [--variants] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svrt_data.voxelize import bin_frame_ranges, voxelize  # noqa: E402

RATE_HZ = 20000.0
WINDOW_S = 1 / 240
K = 32
GEOMETRIES = [(250, 400), (1000, 1000)]
FIRING = [0.05, 0.20]
# windows timed per row: (250x400, 1000x1000); slow rows time few windows
WINDOWS = {"event list (NumPy)": (4, 2), "NumPy reference": (4, 2), "Numba": (48, 12),
           "torch GPU event list": (96, 16), "CuPy": (240, 48), "CuPy kernel, staged stores": (240, 48),
           "CuPy kernel, direct stores": (240, 48)}
DTYPES = {"count": np.uint8, "linear": np.float32}
GPU_VARIANTS = ["CuPy kernel, staged stores", "CuPy kernel, direct stores"]


@dataclass
class Row:
    geometry: str
    firing: float
    name: str
    windows: int
    seconds_per_window: float
    bytes_per_window: float
    note: str = ""

    @property
    def realtime(self) -> float:
        return WINDOW_S / self.seconds_per_window

    @property
    def gbps(self) -> float:
        return self.bytes_per_window / self.seconds_per_window / 1e9


def make_stream(h: int, w: int, frames: int, firing: float, seed: int = 0) -> np.ndarray:
    """Packed ``uint8 (S, H, W/8)``: Bernoulli(firing) bits, frames drawn from a pool of 64 distinct ones."""
    rng = np.random.default_rng(seed)
    pool = np.packbits(rng.random((64, h, w), dtype=np.float32) < firing, axis=-1, bitorder="little")
    return pool[rng.integers(0, len(pool), frames)]


def windows_for(n: int) -> np.ndarray:
    step = RATE_HZ * WINDOW_S  # 83.33 frames
    i = np.arange(n, dtype=np.float64)
    return np.stack([i * step, (i + 1) * step], axis=1)


def useful_bytes(windows: np.ndarray, h: int, w: int, mode: str) -> float:
    """Packed bytes of the windows' frames plus voxel bytes written (uint8 or float32), per window."""
    frames = np.ceil(windows[:, 1]) - np.ceil(windows[:, 0])
    return float(frames.mean() * h * w / 8 + K * h * w * (1 if mode == "count" else 4))


# -- baselines ---------------------------------------------------------------------------------------
def event_list_numpy(packed: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """E2VID-style: unpack, nonzero -> event list, np.add.at into (K, H, W) per window."""
    n, h, w = len(windows), packed.shape[1], packed.shape[2] * 8
    out = np.zeros((n, K, h, w), np.uint8)
    for i, (t0, t1) in enumerate(windows):
        first, stop = math.ceil(t0), math.ceil(t1)
        t, y, x = np.nonzero(np.unpackbits(packed[first:stop], axis=-1, bitorder="little"))
        edges = [t0 + (k * (t1 - t0)) / K for k in range(K)]
        b = np.searchsorted(edges, t + first, side="right") - 1  # bin k: e_k <= t < e_{k+1}
        np.add.at(out[i], (b, y, x), 1)
    return out


def event_list_torch(packed, windows: np.ndarray, chunk: int):
    """The same habit on the GPU: unpack bits, torch.nonzero, index_add_, ``chunk`` windows at a time.

    Each event finds its bin by ``torch.searchsorted`` over the bins' first frames (the benchmark's windows
    are back to back, so every frame of a chunk belongs to exactly one bin).
    """
    import torch

    n, h, w = len(windows), packed.shape[1], packed.shape[2] * 8
    device = packed.device
    shifts = torch.arange(8, device=device, dtype=torch.uint8)
    ranges = bin_frame_ranges(windows, K, packed.shape[0])
    out = torch.empty((n, K, h, w), dtype=torch.uint8, device=device)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        first, stop = int(ranges[a, 0, 0]), int(ranges[b - 1, -1, 1])
        starts = torch.as_tensor(ranges[a:b, :, 0].ravel(), device=device)
        bits = ((packed[first:stop].unsqueeze(-1) >> shifts) & 1).reshape(stop - first, h, w)  # S H W
        t, y, x = torch.nonzero(bits, as_tuple=True)
        bin_of = torch.searchsorted(starts, t + first, right=True) - 1
        acc = torch.zeros((b - a) * K * h * w, dtype=torch.int32, device=device)
        acc.index_add_(0, (bin_of * h + y) * w + x, torch.ones_like(t, dtype=torch.int32))
        out[a:b] = acc.view(b - a, K, h, w).to(torch.uint8)
    return out


# -- timing ------------------------------------------------------------------------------------------
def time_cpu(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_gpu(fn: Callable[[], object], repeats: int, calls: int = 5) -> float:
    """Median over ``repeats`` of ``calls`` back-to-back calls timed with CUDA events, per call."""
    import cupy as cp

    fn()
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(repeats):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) / 1e3 / calls)
    return statistics.median(times)


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy GB/s, counting bytes read plus bytes written."""
    import cupy as cp

    a = cp.random.randint(0, 255, nbytes, dtype=cp.uint8)
    b = cp.empty_like(a)
    seconds = time_gpu(lambda: b.data.copy_from_device_async(a.data, nbytes), repeats=10)
    return 2 * nbytes / seconds / 1e9


def gpu_available() -> bool:
    try:
        import cupy as cp

        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


# -- the run -----------------------------------------------------------------------------------------
def bench(cpu: bool, gpu: bool, variants: bool, mode: str) -> tuple[list[Row], float | None]:
    rows: list[Row] = []
    counting = mode == "count"  # the event-list baselines and kernel-only variants exist for counts only
    names = ((["event list (NumPy)"] if counting else []) + ["NumPy reference", "Numba"] if cpu else []) + (
        (["torch GPU event list"] if counting else []) + ["CuPy"] + (GPU_VARIANTS if variants and counting else [])
        if gpu else [])
    copy_gbps = copy_bandwidth() if gpu else None
    progress = tqdm(total=len(GEOMETRIES) * len(FIRING) * len(names), desc="voxelize bench", file=sys.stderr)
    for gi, (h, w) in enumerate(GEOMETRIES):
        for firing in FIRING:
            most = max(WINDOWS[name][gi] for name in names)
            packed = make_stream(h, w, math.ceil(most * RATE_HZ * WINDOW_S) + 1, firing, seed=gi)
            reference = voxelize(packed, windows_for(1), bins=K, mode=mode, backend="numpy")
            device_packed = _upload(packed) if gpu else None
            for name in names:
                n = WINDOWS[name][gi]
                win = windows_for(n)
                fn, first_window, timer = _row(name, packed, win, device_packed, mode)
                got = first_window()
                if not (np.array_equal(got, reference[0]) if counting else np.allclose(got, reference[0], rtol=1e-6)):
                    raise RuntimeError(f"{name} disagrees with the NumPy reference on {h}x{w} at {firing:.0%}")
                seconds = timer(fn)
                rows.append(Row(f"{h}x{w}", firing, name, n, seconds / n, useful_bytes(win, h, w, mode)))
                progress.update()
            del device_packed
    progress.close()
    return rows, copy_gbps


def _upload(packed: np.ndarray):
    import cupy as cp

    return cp.asarray(packed)


def _row(name: str, packed: np.ndarray, win: np.ndarray, dev, mode: str) -> tuple[Callable, Callable, Callable]:
    """(the timed call, a call giving the first window's voxels as NumPy, the timer)."""
    slow = lambda fn: time_cpu(fn, 1)  # noqa: E731
    fast = lambda fn: (fn(), time_cpu(fn, 5))[1]  # noqa: E731  (warm-up: compile / caches)
    if name == "event list (NumPy)":
        return (lambda: event_list_numpy(packed, win)), (lambda: event_list_numpy(packed, win[:1])[0]), slow
    if name == "NumPy reference":
        return ((lambda: voxelize(packed, win, bins=K, mode=mode, backend="numpy")),
                (lambda: voxelize(packed, win[:1], bins=K, mode=mode, backend="numpy")[0]), slow)
    if name == "Numba":
        out = np.empty((len(win), K, packed.shape[1], packed.shape[2] * 8), DTYPES[mode])  # reused, as a loader would
        return ((lambda: voxelize(packed, win, bins=K, mode=mode, backend="numba", out=out)),
                (lambda: voxelize(packed, win[:1], bins=K, mode=mode, backend="numba")[0]), fast)
    if name == "torch GPU event list":
        import torch

        tdev = torch.from_dlpack(dev)
        return ((lambda: event_list_torch(tdev, win, chunk=16 if packed.shape[1] < 500 else 4)),
                (lambda: event_list_torch(tdev, win[:1], chunk=1)[0].cpu().numpy()),
                lambda fn: time_gpu(fn, repeats=3, calls=1))
    if name == "CuPy":
        out = __import__("cupy").empty((len(win), K, packed.shape[1], packed.shape[2] * 8), DTYPES[mode])
        return ((lambda: voxelize(dev, win, bins=K, mode=mode, out=out)),
                (lambda: voxelize(dev, win[:1], bins=K, mode=mode)[0].get()), lambda fn: time_gpu(fn, repeats=10))
    if name in GPU_VARIANTS:
        cp = __import__("cupy")
        count = count_kernel_variant(name == "CuPy kernel, staged stores")
        out = cp.empty((len(win), K, packed.shape[1], packed.shape[2] * 8), np.uint8)
        ranges = bin_frame_ranges(win, K, len(packed))

        def first() -> np.ndarray:
            one = cp.empty((1,) + out.shape[1:], np.uint8)
            count(dev, ranges[:1], one)
            return one[0].get()

        return (lambda: count(dev, ranges, out)), first, (lambda fn: time_gpu(fn, repeats=10))
    raise ValueError(f"unknown row {name!r}")


@functools.cache
def count_kernel_variant(staged: bool) -> Callable:
    """``voxelize_count`` with the store path forced (``staged`` at every V >= 4, or direct stores): the
    library picks one path per V and has no switch, so the benchmark builds the variants of the same
    ``kernels/voxelize.cu`` itself and launches them exactly as :mod:`kernels.voxelize_cupy` does."""
    import cupy as cp

    from kernels import voxelize_cupy as vc

    names = [vc.count_kernel_name(v, staged) for v in vc.COUNT_V]
    module = cp.RawModule(code=vc.CUDA_SOURCE.read_text(), options=("-std=c++17",), name_expressions=names)

    def count(frames: object, ranges: np.ndarray, out: object) -> None:
        s, h, wb = frames.shape
        f = h * wb
        v = vc.vector_bytes(f, frames.data.ptr)
        chunks = f // v
        total = ranges.shape[0] * ranges.shape[1] * chunks
        vc._launch(module.get_function(vc.count_kernel_name(v, staged)), total,
                   (frames, cp.asarray(ranges, dtype=cp.int64), out, np.int64(f), np.int64(chunks), np.int64(total)))

    return count


def table(rows: list[Row], copy_gbps: float | None) -> str:
    head = ["stream", "firing", "backend", "windows", "ms/window", "x real time", "GB/s"]
    if copy_gbps:
        head.append("% of copy")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [r.geometry, f"{r.firing:.0%}", r.name, str(r.windows), f"{r.seconds_per_window * 1e3:.4g}",
                 f"{r.realtime:.3g}", f"{r.gbps:.3g}"]
        if copy_gbps:
            cells.append(f"{100 * r.gbps / copy_gbps:.0f}%" if r.name.startswith("CuPy") else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(rows: list[Row], copy_gbps: float | None) -> list[str]:
    def get(geometry: str, firing: float, name: str) -> Row | None:
        return next((r for r in rows if (r.geometry, r.firing, r.name) == (geometry, firing, name)), None)

    lines = []
    for geometry, _ in [(f"{h}x{w}", None) for h, w in GEOMETRIES]:
        for firing in FIRING:
            numba, events = get(geometry, firing, "Numba"), get(geometry, firing, "event list (NumPy)")
            if numba and events and geometry == "250x400":
                speedup = events.seconds_per_window / numba.seconds_per_window
                ok = numba.realtime >= 2 and speedup >= 24
                lines.append(f"target Numba {geometry} {firing:.0%}: {numba.realtime:.3g}x real time (>= 2), "
                             f"{speedup:.3g}x the event list (>= 24): {'MET' if ok else 'MISSED'}")
            cupy, torch_row = get(geometry, firing, "CuPy"), get(geometry, firing, "torch GPU event list")
            if cupy and torch_row and copy_gbps:
                fraction = cupy.gbps / copy_gbps
                speedup = torch_row.seconds_per_window / cupy.seconds_per_window
                ok = fraction >= 0.6 and speedup >= 5
                lines.append(f"target CuPy {geometry} {firing:.0%}: {fraction:.0%} of copy bandwidth (>= 60%), "
                             f"{speedup:.3g}x the torch GPU event list (>= 5): {'MET' if ok else 'MISSED'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU rows")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU rows (skipped anyway without CUDA)")
    parser.add_argument("--variants", action="store_true",
                        help="add CuPy kernel-only rows (plan precomputed) with staged and with direct stores")
    parser.add_argument("--mode", choices=["count", "linear"], default="count",
                        help="voxel mode (the event-list baselines and the targets are for count)")
    parser.add_argument("--markdown", type=Path, help="also write the table and targets to this file")
    args = parser.parse_args()
    gpu = not args.no_gpu and gpu_available()
    if not args.no_gpu and not gpu:
        print("no CUDA device (or no CuPy): GPU rows skipped", file=sys.stderr)
    rows, copy_gbps = bench(cpu=not args.no_cpu, gpu=gpu, variants=args.variants, mode=args.mode)
    lines = [f"mode {args.mode}, K={K}, one window per 1/240 s of a 20 kHz stream\n", table(rows, copy_gbps)]
    if copy_gbps:
        import cupy as cp

        name = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"].decode()
        lines.append(f"\ndevice-to-device copy on {name}: {copy_gbps:.4g} GB/s (read + write)")
    lines += ["", *targets(rows, copy_gbps)]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
