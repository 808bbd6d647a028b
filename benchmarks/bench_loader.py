"""Training-data loading: clips/s from the Zarr store (voxels or raw bits) against a naive per-sample loader.

One run builds (once, cached under ``--cache-dir``) a synthetic raw dataset and its store, then times, in
the same run, DataLoaders with 0, 1 and 2 workers over:

- ``store/voxels``: ``SpikeDeblurDataset(spike_input="voxels")``, T=5, 256x256 RGB crops (128x128 spikes),
  K=32, random flips/transposition, the recommended loader (:func:`svrt_data.loader.recipe.make_loader`);
- ``store/raw``: the same with packed spike bits + windows (re-binned later on the GPU);
- ``store/zarr``: voxels read through zarr-python (``reader="zarr"``, the reference) instead of the
  chunk-aligned shard reader;
- ``store fresh shm``: ``store`` with ``make_loader(..., reuse_buffers=False)``: every batch in fresh shared
  memory, as torch's default collate does, instead of the default recycled worker buffers (reused once
  the loop has dropped their batch); with workers only;
- ``store crc off``: ``store`` with the chunk checksums not checked (``ShardedArrayReader(...,
  verify_checksums=False)``, set on the in-process readers; 0 workers only): what checking every chunk's
  crc32c costs, measured against the ``store`` row of the same run;
- ``store+cache``: voxels with a decoded-chunk cache large enough for the split, timed once warm (the
  ceiling, reached when the decoded split fits in each worker's memory);
- ``naive``: what common S-VRT code does per item, from the RAW dataset folder: decode T blurry and T
  sharp PNGs, read T ``.dat`` files, unpack them to float32 and bin them into K float32 voxels, crop, flip.

A clip is blur + sharp + spikes of T frames. The store files are read once before timing (page cache).
"clips/s/core" divides by the worker processes (by 1 for 0 workers). ``--gpu`` adds a short training run
of the VRT backbone (``svrt_model`` presets) fed by the loader, reporting the share of step time spent
waiting for data (blocked on the next batch + the host-to-device copy).

    python benchmarks/bench_loader.py --cache-dir bench_out/loader
    python3 benchmarks/bench_loader.py --cache-dir /tmp/loader --gpu --frames 12 --sequences 2 --workers 0 4
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from svrt_data.loader import ClipKey, ClipSampler, SpikeDeblurDataset, make_loader, move_batch  # noqa: E402

T, CROP, BINS = 5, 256, 32
PREFETCH = 4  # make_loader's default prefetch_factor


# -- data ------------------------------------------------------------------------------------------
def build(cache: Path, sequences: int, frames: int, size: tuple[int, int]) -> tuple[Path, Path, dict]:
    """The raw dataset and its store under ``cache`` (rebuilt when the parameters change)."""
    from pipelines.voxelize_job import voxelize_dataset
    from svrt_data.synth import synthesize

    # version 2: stores with 64 px voxel tiles; 3: store layout v2 (chunk checksums)
    params = {"sequences": sequences, "frames": frames, "size": list(size), "bins": BINS, "version": 3}
    raw, store, stamp = cache / "raw", cache / "store.zarr", cache / "params.json"
    times = {"synth_s": None, "voxelize_s": None}
    if stamp.is_file() and json.loads(stamp.read_text()) == params and (store / "zarr.json").is_file():
        return raw, store, times
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    synthesize(raw, sequences=sequences, test_sequences=1, frames=frames, size=size, spike_scale=0.5, seed=0,
               overwrite=True)
    times["synth_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    voxelize_dataset(raw, raw / "align.csv", store, bins=BINS, overwrite=True)
    times["voxelize_s"] = time.perf_counter() - t0
    stamp.write_text(json.dumps(params))
    return raw, store, times


def warm_page_cache(*folders: Path) -> int:
    total = 0
    for folder in folders:
        for f in folder.rglob("*"):
            if f.is_file():
                total += len(f.read_bytes())
    return total


class NaiveClips(Dataset):
    """The baseline: one file at a time from the raw folder, float32 voxels computed per item."""

    def __init__(self, raw: Path, store_ds: SpikeDeblurDataset) -> None:
        self.raw, self.plan = raw, store_ds.plan
        self.keys = [i.key for i in store_ds.infos]
        self.spike_shape = store_ds.infos[0].spike_shape
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, key: ClipKey) -> dict:
        spec = self.plan.spec(key.index, key.epoch)
        folder = self.raw / self.keys[spec.seq]
        y0, x0, h, w = spec.box
        ys, xs, hs, ws = spec.spike_box
        blur, sharp, vox = [], [], []
        for f in spec.frames:
            for name, out in (("blur", blur), ("sharp", sharp)):
                img = np.asarray(Image.open(folder / name / f"{f:06d}.png").convert("RGB"), np.float32) / 255.0
                out.append(img[y0 : y0 + h, x0 : x0 + w].transpose(2, 0, 1))
            bits = np.unpackbits(np.fromfile(folder / "spike" / f"{f:06d}.dat", np.uint8), bitorder="little")
            frames = bits.reshape(-1, *self.spike_shape)[:, ::-1].astype(np.float32)  # S Hs Ws, upright
            edges = np.linspace(0, len(frames), BINS + 1).astype(np.int64)
            v = np.add.reduceat(frames, edges[:-1], axis=0)  # K Hs Ws float32 counts
            vox.append(v[:, ys : ys + hs, xs : xs + ws])
        out = {"blur": np.stack(blur), "sharp": np.stack(sharp), "spikes": np.stack(vox)}
        out = {k: np.ascontiguousarray(spec.dihedral.apply(v, 2, 3)) for k, v in out.items()}
        return {k: torch.from_numpy(v) for k, v in out.items()}


# -- timing ------------------------------------------------------------------------------------------
def clips_per_second(dataset: Dataset, workers: int, clips: int, batch: int, naive: bool, warm: int,
                     reuse: bool = True) -> float:
    """Clips/s over ``clips`` clips, in the steady state: after ``warm`` clips and at least enough batches
    for every worker to have started and filled its buffer ring (prefetch_factor + 2 batches each)."""
    warm = max(warm, batch * (PREFETCH + 3) * max(1, workers))
    epochs = math.ceil((clips + warm + 2 * batch) / len(dataset)) + 1
    if naive:
        loader = DataLoader(dataset, batch_size=batch, sampler=ClipSampler(dataset, seed=0, epochs=epochs),
                            num_workers=workers, persistent_workers=workers > 0, drop_last=True,
                            prefetch_factor=PREFETCH if workers else None)
    else:
        loader = make_loader(dataset, batch_size=batch, num_workers=workers, epochs=epochs, reuse_buffers=reuse,
                             prefetch_factor=PREFETCH)
    it = iter(loader)
    n = 0
    while n < warm:
        n += next(it)["blur"].shape[0]
    n, t0 = 0, time.perf_counter()
    while n < clips:
        b = next(it)
        n += b["blur"].shape[0]
    dt = time.perf_counter() - t0
    del it, loader
    return n / dt


def shared_memory_cost(shape: tuple[int, ...], repeats: int = 10) -> tuple[float, float]:
    """ms to allocate and fill one clip's bytes in fresh shared memory (how every DataLoader worker ships a
    batch: torch's default collate does the same) and in private memory."""
    from svrt_data.loader.batch_buffers import empty_tensor

    out = []
    for shared in (True, False):
        t0 = time.perf_counter()
        for _ in range(repeats):
            empty_tensor(shape, torch.uint8, shared).numpy()[...] = 1
        out.append(1000 * (time.perf_counter() - t0) / repeats)
    return out[0], out[1]


def unchecked(ds: SpikeDeblurDataset) -> SpikeDeblurDataset:
    """``ds`` with in-process fast readers that skip the crc32c check (the measurement of its cost only).

    The loader has no switch for this (the library always checks), so the benchmark fills the
    :class:`~svrt_data.loader.clip_reader.ClipReader`'s per-process reader cache itself, and makes sure the
    reader really hands those out: a row labelled "crc off" that still checked would measure nothing."""
    from svrt_data.store.fast_reader import ShardedArrayReader

    reader = ds.reader
    for i, info in enumerate(reader.sequences):
        for name, meta in info.arrays.items():
            reader._readers[(i, name)] = ShardedArrayReader(meta, reader.cache, verify_checksums=False)
            if reader._array(i, name).verify_checksums:
                raise RuntimeError("ClipReader no longer reads through its _readers cache; adapt unchecked()")
    return ds


def run_cpu(args: argparse.Namespace, raw: Path, store: Path) -> list[dict]:
    kw = {"clip_len": T, "stride": 1, "crop": CROP, "seed": 0}
    vox = SpikeDeblurDataset(store, "train", spike_input="voxels", **kw)
    decoded = sum(i.n_frames for i in vox.infos) * 6 << 20  # ~5.4 MB of decoded chunks per 360x640 frame
    raw_ds = SpikeDeblurDataset(store, "train", spike_input="raw", **kw)
    configs = [
        ("store", "voxels", vox, False, 1),
        ("store", "raw", raw_ds, False, 1),
        ("store crc off", "voxels", unchecked(SpikeDeblurDataset(store, "train", spike_input="voxels", **kw)), False,
         1),
        ("store crc off", "raw", unchecked(SpikeDeblurDataset(store, "train", spike_input="raw", **kw)), False, 1),
        ("store fresh shm", "voxels", vox, False, 1),
        ("store fresh shm", "raw", raw_ds, False, 1),
        ("store/zarr", "voxels", SpikeDeblurDataset(store, "train", spike_input="voxels", reader="zarr", **kw), False,
         0.5),
        ("store+cache", "voxels", SpikeDeblurDataset(store, "train", spike_input="voxels", cache_bytes=decoded, **kw),
         False, 1),
        ("naive", "voxels", NaiveClips(raw, vox), True, args.naive_fraction),
    ]
    rows = []
    for source, spikes, ds, naive, frac in configs:
        for w in args.workers:
            n = max(args.batch_size, int(args.clips * frac))
            warm = 2 * len(ds) if source == "store+cache" else 1  # the cache row measures a warm cache
            if source == "store fresh shm" and w == 0:
                continue  # no workers, no hand-off: the "store" row
            if source == "store crc off" and w:
                continue  # its readers live in this process; workers would build checked ones
            rate = clips_per_second(ds, w, n, args.batch_size, naive, warm, reuse=source != "store fresh shm")
            rows.append({"source": source, "spikes": spikes, "workers": w, "clips_s": rate,
                         "per_core": rate / max(1, w)})
            print(f"  {source:<13} {spikes:<7} workers={w}: {rate:7.1f} clips/s", flush=True)
    return rows


def run_crc(args: argparse.Namespace, store: Path) -> str:
    """The chunk checksums' cost: ``store`` and ``store crc off`` alternated ``--crc-repeats`` times in this
    process (0 workers: the per-clip CPU cost, which does not depend on the hand-off), medians compared."""
    kw = {"clip_len": T, "stride": 1, "crop": CROP, "seed": 0}
    lines = ["| spikes | checked clips/s (median) | unchecked clips/s (median) | cost of the check | runs |",
             "| --- | --- | --- | --- | --- |"]
    for spikes in ("voxels", "raw"):
        on, off = [], []
        for _ in range(args.crc_repeats):
            for checked, out in ((True, on), (False, off)):
                ds = SpikeDeblurDataset(store, "train", spike_input=spikes, **kw)
                out.append(clips_per_second(ds if checked else unchecked(ds), 0, args.clips, args.batch_size, False, 1))
        a, b = float(np.median(on)), float(np.median(off))
        lines.append(f"| {spikes} | {a:.1f} | {b:.1f} | {100 * (b - a) / b:+.1f}% | {args.crc_repeats} each, "
                     "alternated |")
        print(f"  {spikes}: checked {[round(v, 1) for v in on]}, unchecked {[round(v, 1) for v in off]}", flush=True)
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    naive = {r["workers"]: r["clips_s"] for r in rows if r["source"] == "naive"}
    lines = ["| source | spikes | workers | clips/s | clips/s per worker core | ms/clip/core | x naive |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        x = r["clips_s"] / naive[r["workers"]] if naive.get(r["workers"]) else float("nan")
        lines.append(f"| {r['source']} | {r['spikes']} | {r['workers']} | {r['clips_s']:.1f} | {r['per_core']:.1f} | "
                     f"{1000 / r['per_core']:.1f} | {x:.1f}x |")
    return "\n".join(lines)


# -- GPU: data wait during training ------------------------------------------------------------------
def run_gpu(args: argparse.Namespace, store: Path) -> list[dict]:
    import warnings

    warnings.simplefilter("ignore")  # untrained SpyNet: irrelevant to data wait
    dev = torch.device("cuda")
    rows = []
    for model_name in args.gpu_models:
        for spike_input in ("voxels", "raw"):
            try:
                rows.append(_gpu_row(args, store, model_name, spike_input, dev))
            except Exception as exc:  # report and go on: one failing model must not lose the table
                error = f"{type(exc).__name__}: {exc}"[:300]
                rows.append({"model": model_name, "spikes": spike_input, "error": error})
                print(f"  gpu {model_name} {spike_input}: {rows[-1]['error']}", flush=True)
            torch.cuda.empty_cache()
    return rows


def _gpu_row(args: argparse.Namespace, store: Path, model_name: str, spike_input: str, dev: torch.device) -> dict:
    """One short training run: per step, time blocked on the next batch + its host-to-device copy vs the whole step."""
    from svrt_data.loader import SpikeTransform
    from svrt_model import VRT, svrt_baseline, tiny

    torch.manual_seed(0)
    model = VRT(tiny() if model_name == "tiny" else svrt_baseline()).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ds = SpikeDeblurDataset(store, "train", clip_len=T, stride=1, crop=CROP, spike_input=spike_input, seed=0)
    transform = SpikeTransform.from_store(store, "train", spike_input=spike_input,
                                          bins=BINS if spike_input == "raw" else None, max_frames=16).to(dev)
    steps = args.gpu_steps if model_name == "tiny" else args.gpu_steps_large
    batch_size = args.gpu_batch if model_name == "tiny" else args.gpu_batch_large
    epochs = math.ceil((steps + 8) * batch_size / len(ds)) + 1
    loader = make_loader(ds, batch_size=batch_size, num_workers=args.gpu_workers, epochs=epochs, pin_memory=True)
    it = iter(loader)
    fetch = copy = total = 0.0
    warm = 3
    for step in range(steps + warm):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        batch = move_batch(batch, dev)
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        x = transform(batch)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.gpu_precision == "bf16"):
            out = model(x["blur"])
            loss = torch.sqrt((out.float() - x["sharp"]) ** 2 + 1e-6).mean()  # Charbonnier
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # the step is over when the GPU is
        t3 = time.perf_counter()
        if step >= warm:
            fetch += t1 - t0
            copy += t2 - t1
            total += t3 - t0
    del it, loader
    wait = fetch + copy
    row = {"model": model_name, "spikes": spike_input, "batch": batch_size, "precision": args.gpu_precision,
           "workers": args.gpu_workers, "steps": steps, "step_ms": 1000 * total / steps,
           "fetch_ms": 1000 * fetch / steps, "h2d_ms": 1000 * copy / steps, "wait_ms": 1000 * wait / steps,
           "wait_pct": 100 * wait / total, "clips_s": steps * batch_size / total}
    print(f"  gpu {model_name} {spike_input}: step {row['step_ms']:.1f} ms, data wait {row['wait_ms']:.2f} ms "
          f"({row['wait_pct']:.2f} %)", flush=True)
    return row


def format_gpu(rows: list[dict]) -> str:
    lines = ["| model | precision | spikes | batch | workers | steps | step ms | blocked on batch ms | H2D ms | "
             "data wait % | clips/s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | | {r['spikes']} | failed: {r['error']} |")
            continue
        lines.append(f"| {r['model']} | {r['precision']} | {r['spikes']} | {r['batch']} | {r['workers']} | "
                     f"{r['steps']} | "
                     f"{r['step_ms']:.1f} | {r['fetch_ms']:.2f} | {r['h2d_ms']:.2f} | {r['wait_pct']:.2f} | "
                     f"{r['clips_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache-dir", type=Path, default=Path("bench_out/loader"), help="where the dataset is built once")
    p.add_argument("--sequences", type=int, default=3, help="train sequences (plus one test sequence)")
    p.add_argument("--frames", type=int, default=20, help="blurry frames per sequence")
    p.add_argument("--size", default="360x640", help="RGB HxW (spikes at half)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--clips", type=int, default=480, help="clips timed per store row")
    p.add_argument("--naive-fraction", type=float, default=0.25, help="the naive rows time this share of --clips")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU table")
    p.add_argument("--crc-repeats", type=int, default=0,
                   help="instead of the CPU table: the chunk checksums' cost, checked and unchecked alternated N times")
    p.add_argument("--gpu", action="store_true", help="also time data wait in VRT training on CUDA")
    p.add_argument("--gpu-models", nargs="+", default=["svrt", "tiny"], choices=["tiny", "svrt"])
    p.add_argument("--gpu-precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--gpu-workers", type=int, default=6)
    p.add_argument("--gpu-batch", type=int, default=4, help="batch of the tiny VRT")
    p.add_argument("--gpu-batch-large", type=int, default=1, help="batch of the S-VRT baseline VRT")
    p.add_argument("--gpu-steps", type=int, default=40)
    p.add_argument("--gpu-steps-large", type=int, default=10)
    p.add_argument("--json", type=Path, help="write all figures here")
    args = p.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    raw, store, times = build(args.cache_dir, args.sequences, args.frames, (h, w))
    if times["synth_s"] is not None:
        print(f"built: synth {times['synth_s']:.1f} s, voxelize {times['voxelize_s']:.1f} s")
    mb = warm_page_cache(raw, store) / 1e6
    print(f"dataset: {args.sequences} train sequences x {args.frames} frames, RGB {h}x{w}, spikes {h // 2}x{w // 2}, "
          f"K={BINS}; {mb:.0f} MB read into the page cache; T={T}, crop {CROP} (spikes {CROP // 2}), "
          f"batch {args.batch_size}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    result: dict = {"build": times}
    if args.crc_repeats:
        print(run_crc(args, store))
    elif not args.no_cpu:
        rows = run_cpu(args, raw, store)
        result["cpu"] = rows
        clip_bytes = T * (2 * 3 * CROP * CROP + BINS * (CROP // 2) ** 2)
        shm, private = shared_memory_cost((clip_bytes,))
        result["shm_ms_per_clip"], result["private_ms_per_clip"] = shm, private
        print(format_table(rows))
        print(f"allocating + filling one voxel clip ({clip_bytes / 1e6:.1f} MB): {shm:.2f} ms in fresh shared memory "
              f"(the worker -> main hand-off), {private:.2f} ms in private memory")
    if args.gpu:
        gpu = run_gpu(args, store)
        result["gpu"] = gpu
        print(f"GPU: {torch.cuda.get_device_name()}")
        print(format_gpu(gpu))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
