"""What the spikes are worth: train the same small VRT+Spike with ``fusion="cross_attention"``, ``"early"`` and
``"rgb_only"`` for the same number of steps and compare them on test sequences made from other photographs.

    python benchmarks/train_quality.py --out OUT [--steps 1000 --size 192x320 --crop 128 --clip-len 6 ...]

1. Two synthetic raw datasets (``svrt_data.synth.synthesize``): ``train`` from four of scikit-image's
   bundled photographs (``--gray-photos``: and its eight grayscale ones; ``--dead-leaves N``: and N dead-leaves
   scenes coloured from the training photographs), ``test`` from the other two (so
   no test scene was seen in training), each voxelized into its own store (K=32 count voxels; ``--bins``).
2. Per variant: ``svrt_model.train.train`` (the ``tiny`` preset's recipe with the size and step overrides
   below, identical for all three; ``--spike-input intervals`` feeds the model inter-spike-interval voxels
   computed from the store's packed bits instead of the stored counts; ``--spike-base intervals`` adds the
   spikes' interval luminance to the spike variants' output, ``VRTSpikeConfig.spike_base`` (``--base-chroma
   colorline``: recoloured along the blurry frames' colour lines); ``--centre-rates``
   gives the cross-attention encoder that luminance for several m as extra channels, ``centre_rates``), then the last
   checkpoint restores
   every test sequence in clips of the training length over whole frames (``svrt_model.restore.evaluate_split``,
   the validation tiling).
3. One table, printed and written to ``OUT/train_quality.md`` (and ``OUT/train_quality.json``): PSNR/SSIM of
   the blurry input and the output on the test split, the gain over the input and over ``rgb_only``,
   training throughput (clips/s, median over the logged intervals) and the share of the step spent
   waiting for data.
4. Reference points on the same test frames, no training (:func:`reference_points`): the blurry frame
   corrected by the sharp-minus-blurry difference at the spikes' resolution (what perfect information at
   that resolution adds), and the blurry frame with its luminance replaced by a spike count over a
   centred window (the best of a few window lengths) or by the rate from the inter-spike intervals around
   the centre (the best of 1-4 spikes each side): what the spikes give without learning.

Targets (issue 14): cross-attention >= +6 dB over the blurry input and >= +1 dB over ``rgb_only``.
The datasets are built once under ``OUT/data`` and reused by later runs with the same parameters
(``--rebuild`` forces it). Progress goes to stderr (tqdm) and one line per phase to stdout.

``--jobs N`` trains up to N variants at once, each in its own process on the same device (log in
``OUT/runs/VARIANT.log``); each row's clips/s is then that run's share, and the table says so. Measured on
an H200 with three variants: +30% steps per second in total over one after another, not the near 3x a
purely host-bound step would give (``benchmarks/RESULTS.md``, "Training quality").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.voxelize_job import voxelize_dataset  # noqa: E402
from svrt_data.preview import save_png  # noqa: E402
from svrt_data.synth import synthesize  # noqa: E402
from svrt_data.synth.photos import Photo, dead_leaves, load_photos  # noqa: E402

VARIANTS = ("cross_attention", "early", "rgb_only")
TEST_PHOTOS = ("chelsea", "rocket")
"""Held out: test sequences are made from these photographs only, training sequences from the other four."""
GRAY_PHOTOS = ("camera", "brick", "grass", "gravel", "coins", "moon", "page", "text")
"""scikit-image's bundled grayscale photographs (in its wheel, no download): with ``--gray-photos`` they join the
training photographs as gray RGB, for more textures than four colour photographs hold."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder (data, runs, table)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps per variant")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    p.add_argument("--size", default="192x320", help="RGB frame size HxW of the synthetic data")
    p.add_argument("--train-sequences", type=int, default=32,
                   help="training sequences (each its own crop and camera path; 8 overfit: RESULTS.md)")
    p.add_argument("--test-sequences", type=int, default=2)
    p.add_argument("--gray-photos", action="store_true",
                   help="also draw training sequences from scikit-image's 8 grayscale photographs (as gray RGB)")
    p.add_argument("--dead-leaves", type=int, default=0, metavar="N",
                   help="also draw training sequences from N dead-leaves scenes (svrt_data.synth.photos.dead_leaves), "
                        "coloured from the training photographs")
    p.add_argument("--frames", type=int, default=12, help="blurry frames per sequence")
    p.add_argument("--motion", type=float, default=4.0, help="camera motion scale (svrt-data synth --motion)")
    p.add_argument("--source-frames", type=int, default=13, help="exposure length NN (svrt-data synth)")
    p.add_argument("--bins", type=int, default=32,
                   help="K, count voxels per blurry frame (model.spike_bins); the exposure's spike frames "
                        "(8 per source frame: 104 by default) give one frame per bin, exact spike times")
    p.add_argument("--spike-input", default="voxels", choices=("voxels", "raw", "intervals"),
                   help="model.spike_input: the stored count voxels, or the store's packed bits accumulated "
                        "(raw) or read as inter-spike-interval voxels (intervals)")
    p.add_argument("--interval-spikes", type=int, default=2,
                   help="model.interval_spikes (--spike-input intervals, --spike-base intervals)")
    p.add_argument("--spike-base", default="none", choices=("none", "intervals", "refined"),
                   help="model.spike_base of the spike variants (needs --spike-input raw or intervals): the output "
                        "adds the spikes' interval luminance (gain: the synthetic sensor's threshold, 2.0); refined: "
                        "corrected by a small learned CNN (model.refine_rates)")
    p.add_argument("--refine-bins", action="store_true",
                   help="model.refine_bins (--spike-base refined): the refiner also reads the interval luminance at "
                        "each of the K bins' centres, the readings across the exposure")
    p.add_argument("--base-into", default="output", choices=("output", "input"),
                   help="model.base_into: add the spike base to the backbone's output or to the frames it reads")
    p.add_argument("--base-chroma", default="blurry", choices=("blurry", "colorline"),
                   help="model.base_chroma: the spike base keeps the blurry chroma, or recolours along the blurry "
                        "frame's local colour lines (model.colorline_radius)")
    p.add_argument("--centre-rates", default="", metavar="M,M,...",
                   help="model.centre_rates of the cross-attention variant (needs --spike-input raw or intervals): the "
                        "encoder also reads the interval luminance at each exposure centre for each m, e.g. 1,2,3,4,6")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="another run-config override for every variant (e.g. data.normalize=false); repeatable")
    p.add_argument("--crop", type=int, default=128, help="training crop (a multiple of 8, >= 64)")
    p.add_argument("--clip-len", type=int, default=6, help="T of training clips (and of the attention window)")
    p.add_argument("--batch", type=int, default=4, help="clips per step")
    p.add_argument("--dims", type=int, default=32, help="channels of every VRT stage and spike scale")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--init", default="identity", choices=("identity", "default"),
                   help="train.init: identity starts every variant as output = blurry input")
    p.add_argument("--workers", type=int, default=6, help="DataLoader workers")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--device", default="auto", help="auto, cuda, cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (CPU runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rebuild", action="store_true", help="rebuild the datasets even if present")
    p.add_argument("--jobs", type=int, default=1, help="variants trained at once, one process each")
    p.add_argument("--cuda-graph", action="store_true", help="train.cuda_graph: replay each step from a CUDA graph")
    p.add_argument("--curve-every", type=int, default=0,
                   help="also score the test split every N steps during training (a learning curve in the JSON and "
                        "the run's log; the table still scores the last weights)")
    p.add_argument("--ensemble", type=int, default=1, choices=(1, 2, 4, 8),
                   help="also score the last weights with the test-time self-ensemble over this many flips / "
                        "transpositions (svrt-model eval --ensemble; its own columns, the plain score stays)")
    p.add_argument("--row-json", type=Path, default=None, help=argparse.SUPPRESS)  # a --jobs child's result
    return p.parse_args(argv)


def _size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def photo_folder(data: Path, split: str, gray: bool, leaves: int = 0) -> Path:
    """Where a split's photographs are written (one folder per choice: a rebuild never mixes the sets)."""
    if split != "train":
        return data / f"photos_{split}"
    return data / ("photos_train" + ("_gray" if gray else "") + (f"_leaves{leaves}" if leaves else ""))


def build_data(args: argparse.Namespace) -> tuple[Path, Path]:
    """Train and test stores from disjoint photographs (reused when ``data/params.json`` matches)."""
    data = args.out / "data"
    params = {k: getattr(args, k) for k in ("size", "train_sequences", "test_sequences", "frames", "motion",
                                             "source_frames", "seed", "gray_photos", "dead_leaves", "bins")}
    stamp = data / "params.json"
    train_store, test_store = data / "train.zarr", data / "test.zarr"
    if not args.rebuild and stamp.exists() and json.loads(stamp.read_text()) == params:
        print(f"data: reusing {data}", flush=True)
        return train_store, test_store
    photos = {p.name: p for p in load_photos()}
    if args.gray_photos:
        from skimage import data as skdata

        for name in GRAY_PHOTOS:
            photos[name] = Photo(name, np.repeat(getattr(skdata, name)()[..., None], 3, axis=2))
    train_names = [n for n in photos if n not in TEST_PHOTOS]
    if args.dead_leaves:  # coloured from the training photographs' pixels only: the test scenes stay unseen
        palette = np.concatenate([photos[n].pixels.reshape(-1, 3)[::97] for n in train_names])
        for leaves in dead_leaves(args.dead_leaves, seed=args.seed, palette=palette):
            photos[leaves.name] = leaves
            train_names.append(leaves.name)
    for split, names in (("train", train_names), ("test", list(TEST_PHOTOS))):
        folder = photo_folder(data, split, args.gray_photos, args.dead_leaves)
        for name in names:
            save_png(photos[name].pixels, folder / f"{name}.png")
    start = time.perf_counter()
    common = {"frames": args.frames, "size": _size(args.size), "spike_scale": 0.5, "motion": args.motion,
              "source_frames": args.source_frames, "overwrite": True, "workers": max(os.cpu_count() or 1, 1)}
    synthesize(data / "raw_train", sequences=args.train_sequences, test_sequences=0, seed=args.seed,
               images=photo_folder(data, "train", args.gray_photos, args.dead_leaves), **common)
    synthesize(data / "raw_test", sequences=0, test_sequences=args.test_sequences, seed=args.seed + 1,
               images=photo_folder(data, "test", args.gray_photos), **common)
    for raw, store in ((data / "raw_train", train_store), (data / "raw_test", test_store)):
        voxelize_dataset(raw, raw / "align.csv", store, bins=args.bins, mode="count", backend="auto", overwrite=True)
    stamp.write_text(json.dumps(params))
    print(f"data: built in {time.perf_counter() - start:.0f} s under {data}", flush=True)
    return train_store, test_store


REFERENCE_WINDOWS = (8, 16, 26, 40, 52, 78)
"""Spike frames counted around the exposure's centre for the no-learning spike reference."""
REFERENCE_INTERVALS = (1, 2, 3, 4)
"""Spikes on each side of the centre for the no-learning inter-spike-interval reference."""


def reference_points(raw: Path) -> dict[str, float]:
    """Mean PSNR (dB, RGB 0-255) over the test frames of ``raw`` (a synthetic raw dataset) of:

    - ``blurry``: the blurry frame;
    - ``oracle``: the blurry frame corrected by ``sharp - blurry`` averaged down to the spike resolution and
      brought back (bicubic);
    - ``spikes_N``: the blurry frame whose luminance at spike resolution is replaced by ``threshold`` times
      the spike rate over the centred N spike frames (the simulator's expected rate inverted);
    - ``intervals_K``: the same with the rate read from inter-spike intervals, K spikes on each side of
      the centre (:func:`svrt_data.reconstruct.interval_rate`);
    - ``colorline_2``: ``intervals_2`` recoloured along the blurry frame's local colour lines at the spike size
      (:func:`svrt_model.spike.base.colorline_chroma`, radius 1: ``VRTSpikeConfig.base_chroma="colorline"``).
    """
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from svrt_data.reconstruct import interval_rate
    from svrt_data.spike_io import read_dat
    from svrt_data.synth.photos import luminance
    from svrt_model.metrics import psnr
    from svrt_model.spike.base import colorline_chroma

    meta = json.loads((raw / "synth.json").read_text())
    (hs, ws), (h, w) = meta["layout"]["spike_size"], meta["layout"]["rgb_size"]
    theta, flip = meta["parameters"]["threshold"], meta["layout"]["spike_flip"]

    def image(path: Path) -> torch.Tensor:
        return torch.from_numpy(np.asarray(Image.open(path), np.float32)).permute(2, 0, 1)[None]

    def gray(x: torch.Tensor) -> torch.Tensor:  # (1, 3, H, W) RGB levels -> (1, 1, H, W) luminance levels
        return torch.from_numpy(luminance(x[0].permute(1, 2, 0).numpy()) * 255.0)[None, None]

    def down(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(hs, ws), mode="area")

    def up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)

    scores: dict[str, list[float]] = {}
    for seq in sorted(p for p in (raw / "test").iterdir() if p.is_dir()):
        for sharp_png in sorted((seq / "sharp").glob("*.png")):
            sharp, blur = image(sharp_png), image(seq / "blur" / sharp_png.name)
            frames = read_dat(seq / "spike" / f"{sharp_png.stem}.dat", height=hs, width=ws, flip=flip)[:]
            found = {"blurry": blur, "oracle": blur + up(down(sharp) - down(blur))}
            centre, blur_luma = len(frames) // 2, down(gray(blur))
            rates = {f"spikes_{n}": frames[centre - n // 2:centre - n // 2 + n].mean(0, dtype=np.float32)
                     for n in REFERENCE_WINDOWS}
            rates.update({f"intervals_{k}": interval_rate(frames, centre, k) for k in REFERENCE_INTERVALS})
            for name, rate in rates.items():
                found[name] = blur + up(torch.from_numpy(rate * theta * 255.0)[None, None] - blur_luma)
            small = down(blur) / 255.0
            recoloured = colorline_chroma(small, torch.from_numpy(rates["intervals_2"] * theta)[None, None], 1)
            found["colorline_2"] = blur + up((recoloured - small) * 255.0)
            for name, out in found.items():
                scores.setdefault(name, []).append(float(psnr(out.clamp(0, 255), sharp)))
    return {name: float(np.mean(v)) for name, v in scores.items()}


def reference_text(ref: dict[str, float]) -> str:
    count = max((k for k in ref if k.startswith("spikes_")), key=ref.get)
    interval = max((k for k in ref if k.startswith("intervals_")), key=ref.get)
    return (f"reference points (no training, same test frames): blurry {ref['blurry']:.2f} dB; blurry "
            f"corrected to the sharp frame at the spike resolution {ref['oracle']:.2f} dB; blurry with spike "
            f"luminance: counted over the centred {count.split('_')[1]} spike frames {ref[count]:.2f} dB, "
            f"from the intervals of {interval.split('_')[1]} spikes each side {ref[interval]:.2f} dB"
            + (f"; the 2-spike reading recoloured along the blurry colour lines {ref['colorline_2']:.2f} dB"
               if "colorline_2" in ref else ""))


def overrides(args: argparse.Namespace, fusion: str) -> list[str]:
    """The same recipe for every variant; only ``model.fusion`` differs."""
    t, d, c = args.clip_len, args.dims, args.crop
    return [
        f"model.fusion={fusion}", f"model.spike_bins={args.bins}", f"model.channels_per_scale=[{d}, {d}, {d}, {d}]",
        f"model.vrt.img_size=[{t}, {c}, {c}]", f"model.vrt.window_size=[{t}, 8, 8]",
        f"model.vrt.embed_dims={[d] * 11}", f"model.vrt.num_heads={[max(d // 16, 1)] * 11}",
        f"data.clip_len={t}", f"data.crop={c}", f"data.batch_size={args.batch}", f"data.num_workers={args.workers}",
        f"data.seed={args.seed}", f"train.seed={args.seed}", f"train.steps={args.steps}", f"train.lr={args.lr}",
        f"train.warmup_steps={max(args.steps // 20, 1)}", f"train.precision={args.precision}",
        f"train.device={args.device}", f"train.checkpoint_every={args.steps}", f"train.init={args.init}",
        "train.fix_iter=0",
        "train.fix_keys=[]", f"model.spike_input={args.spike_input}",
        *(["data.spike_input=raw"] if args.spike_input != "voxels" else []),
        *([f"model.interval_spikes={args.interval_spikes}"]
          if "intervals" in (args.spike_input, args.spike_base) else []),
        *([f"model.spike_base={args.spike_base}"] if fusion != "rgb_only" else []),  # rgb_only has no spikes
        *(["model.refine_bins=true"] if args.refine_bins and fusion != "rgb_only" else []),
        *([f"model.base_into={args.base_into}", f"model.base_chroma={args.base_chroma}"]
          if args.spike_base != "none" and fusion != "rgb_only" else []),
        *([f"model.centre_rates=[{args.centre_rates}]"] if args.centre_rates and fusion == "cross_attention" else []),
        f"log.every={max(args.steps // 30, 1)}", "log.image_every=0",
        *(["log.val_split=test", f"log.val_store={args.out.resolve() / 'data' / 'test.zarr'}",
           f"log.val_every={args.curve_every}"] if args.curve_every else ["log.val_split=null"]),
        "log.tensorboard=false", *([f"train.threads={args.threads}"] if args.threads else []),
        *(["train.cuda_graph=true"] if args.cuda_graph else []), *args.set,
    ]


def run_variant(args: argparse.Namespace, fusion: str, train_store: Path, test_store: Path) -> dict:
    from svrt_model.restore import SelfEnsemble, evaluate_split
    from svrt_model.train import build_transform, load_model, load_run_config, train
    from svrt_model.train.loop import validation_tile

    run_dir = args.out / "runs" / fusion  # a fresh --out per invocation: an existing run is refused
    cfg = load_run_config("tiny", overrides(args, fusion))
    start = time.perf_counter()
    result = train(cfg, store=train_store, run_dir=run_dir)
    wall = time.perf_counter() - start
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if r["kind"] == "train"][1:] or [r for r in lines if r["kind"] == "train"]
    curve = [(r["step"], r["psnr_output"]) for r in lines if r["kind"] == "val"]
    device = "cuda" if args.device != "cpu" and _cuda() else "cpu"
    model, run_cfg = load_model(result.last, map_location=device)
    precision = args.precision if device == "cuda" else "fp32"
    score = dict(tile=validation_tile(run_cfg), transform=build_transform(run_cfg), device=device,
                 precision=precision)
    overall = evaluate_split(model, test_store, "test", **score).to_json()["overall"]
    if args.ensemble > 1:
        ens = evaluate_split(SelfEnsemble(model, args.ensemble), test_store, "test", **score).to_json()["overall"]
        overall.update(psnr_ensemble=ens["psnr_output"], ssim_ensemble=ens["ssim_output"])
    if run_cfg.train.ema_decay:  # the scores above are the EMA weights'; the trained weights' too
        trained, _ = load_model(result.last, map_location=device, use_ema=False)
        plain = evaluate_split(trained, test_store, "test", **score).to_json()["overall"]
        overall.update(psnr_trained=plain["psnr_output"], ssim_trained=plain["ssim_output"])
    row = {"fusion": fusion, **{k: float(v) for k, v in overall.items()},
           "clips_per_s": statistics.median(r["clips_per_s"] for r in train_lines),
           "data_wait": statistics.median(r["data_wait"] for r in train_lines), "train_s": wall,
           "final_loss": result.loss, "curve": curve}
    ens = f" (x{args.ensemble} self-ensemble {row['psnr_ensemble']:.2f})" if args.ensemble > 1 else ""
    ens += f" (EMA weights; the trained weights {row['psnr_trained']:.2f})" if "psnr_trained" in row else ""
    print(f"{fusion}: PSNR {row['psnr_input']:.2f} -> {row['psnr_output']:.2f} dB{ens}, "
          f"{row['clips_per_s']:.1f} clips/s, data wait {100 * row['data_wait']:.1f}%, {wall:.0f} s", flush=True)
    return row


def run_parallel(args: argparse.Namespace, variants: list[str], argv: list[str]) -> list[dict]:
    """Each variant in its own process (this script, ``--variants V --row-json``), ``args.jobs`` at a time;
    a variant that fails is reported with the end of its log and left out of the table."""
    rows, pending, running = {}, list(variants), []
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    base, skip = [], False
    for a in argv:  # this run's arguments without --jobs / --variants (and their values)
        if skip or a.startswith(("--jobs", "--variants")):
            skip = a in ("--jobs", "--variants")
            continue
        base.append(a)
    while pending or running:
        while pending and len(running) < args.jobs:
            fusion = pending.pop(0)
            log = (args.out / "runs" / f"{fusion}.log").open("w")
            cmd = [sys.executable, __file__, *base, "--variants", fusion, "--row-json",
                   str(args.out / "runs" / f"{fusion}.json")]
            running.append((fusion, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(1)
        for item in [r for r in running if r[1].poll() is not None]:
            fusion, proc, log = item
            running.remove(item)
            log.close()
            row_file = args.out / "runs" / f"{fusion}.json"
            if proc.returncode == 0 and row_file.exists():
                rows[fusion] = json.loads(row_file.read_text())
                print(f"{fusion}: done", flush=True)
            else:
                tail = (args.out / "runs" / f"{fusion}.log").read_text().splitlines()[-5:]
                print(f"{fusion}: failed (exit {proc.returncode}); end of its log:\n  " + "\n  ".join(tail), flush=True)
    return [rows[v] for v in variants if v in rows]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def table(rows: list[dict], args: argparse.Namespace) -> str:
    base = next((r for r in rows if r["fusion"] == "rgb_only"), None)
    head = ("| fusion | PSNR in | PSNR out | SSIM in | SSIM out | gain over blurry (dB) | gain over rgb_only (dB) "
            "| clips/s | data wait |")
    shared = f"; {args.jobs} runs at once on one device (clips/s per run)" if args.jobs > 1 else ""
    shared += "; steps replayed from a CUDA graph" if args.cuda_graph else ""
    spikes = f"K={args.bins} " + ("count voxels" if args.spike_input == "voxels" else
                                  "accumulated bits" if args.spike_input == "raw" else
                                  f"interval voxels ({args.interval_spikes} spikes each side)")
    if args.spike_base != "none":
        spikes += f", output plus the spikes' interval luminance ({args.interval_spikes} spikes each side" + (
            ", refined by a learned CNN" + (" that also reads the readings at the K bins' centres)" if args.refine_bins
                                             else ")") if args.spike_base == "refined" else ")")
    if args.spike_base != "none":
        spikes += ", recoloured along the blurry frames' local colour lines" if args.base_chroma == "colorline" else ""
        spikes += ", the backbone reading the frames plus that luminance" if args.base_into == "input" else ""
    if args.centre_rates:
        spikes += f", encoder also reads the centre interval luminance for m = {args.centre_rates}"
    ens = args.ensemble > 1
    if ens:
        head += f" PSNR out x{args.ensemble} | SSIM out x{args.ensemble} | gain x{args.ensemble} over blurry (dB) |"
    out = [f"train_quality: {args.steps} steps, batch {args.batch}, T={args.clip_len}, crop {args.crop}, "
           f"{args.dims} channels, {spikes}, {args.precision}; test photos {', '.join(TEST_PHOTOS)} "
           f"(unseen in training){shared}",
           "", head, "| --- " * (12 if ens else 9) + "|"]
    for r in rows:
        over_rgb = f"{r['psnr_output'] - base['psnr_output']:+.2f}" if base is not None else "-"
        out.append(f"| {r['fusion']} | {r['psnr_input']:.2f} | {r['psnr_output']:.2f} | {r['ssim_input']:.4f} | "
                   f"{r['ssim_output']:.4f} | {r['psnr_output'] - r['psnr_input']:+.2f} | {over_rgb} | "
                   f"{r['clips_per_s']:.1f} | {100 * r['data_wait']:.1f}% |"
                   + (f" {r['psnr_ensemble']:.2f} | {r['ssim_ensemble']:.4f} | "
                      f"{r['psnr_ensemble'] - r['psnr_input']:+.2f} |" if ens else ""))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.jobs < 1:
        raise SystemExit(f"--jobs: expected >= 1, got {args.jobs}")
    train_store, test_store = build_data(args)
    if args.row_json is not None:  # a --jobs child: one variant, its row for the parent
        row = run_variant(args, variants[0], train_store, test_store)
        args.row_json.write_text(json.dumps(row))
        return 0
    if args.jobs > 1 and len(variants) > 1:
        rows = run_parallel(args, variants, argv)
    else:
        rows = [run_variant(args, v, train_store, test_store) for v in variants]
    ref = reference_points(args.out / "data" / "raw_test")
    text = table(rows, args) + "\n\n" + reference_text(ref)
    print(text, flush=True)
    (args.out / "train_quality.md").write_text(text + "\n")
    (args.out / "train_quality.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                             "rows": rows, "references": ref}, indent=1))
    cross = next((r for r in rows if r["fusion"] == "cross_attention"), None)
    if cross is not None:
        gain = cross["psnr_output"] - cross["psnr_input"]
        if args.ensemble > 1:
            gain_ens = cross["psnr_ensemble"] - cross["psnr_input"]
            print(f"with the x{args.ensemble} self-ensemble: {gain_ens:+.2f} dB over blurry", flush=True)
        print(f"target: cross_attention gain {gain:+.2f} dB over blurry (>= +6)"
              + (f", {cross['psnr_output'] - rows[[r['fusion'] for r in rows].index('rgb_only')]['psnr_output']:+.2f}"
                 " dB over rgb_only (>= +1)" if any(r["fusion"] == "rgb_only" for r in rows) else ""), flush=True)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
