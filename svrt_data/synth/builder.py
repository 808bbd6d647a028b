"""The synthetic dataset builder: photographs in motion -> a raw dataset in the Spk-GoPro layout.

Time model (one sequence): the camera follows one continuous trajectory; time ``t`` counts source
frames. Blurry frame ``j`` is the exposure ``[j NN, (j + 1) NN)`` of ``NN`` source frames, each split
into 8 internal frames at ``t = j NN + (k + 0.5) / 8``, ``k < 8 NN``. Then

- ``blur/j``: the mean of the ``8 NN`` internal RGB frames (float64 sum), rounded once to uint8;
- ``sharp/j``: the frame at the exposure centre ``t = j NN + NN / 2`` (the middle source frame);
- ``spike/j.dat``: ``8 NN`` spike frames, one per internal frame, from the luminance of the internal
  frame at spike resolution, by one integrate-and-fire sensor whose charge carries over from file to
  file (one continuous stream cut per blurry frame), rows bottom-up (``flip=True``) as Spk-GoPro;
- ``flow/j.npy`` (``j < N - 1``): float32 ``(H, W, 2)`` exact optical flow from ``sharp/j`` to
  ``sharp/j+1`` (:func:`~svrt_data.synth.camera.true_flow`).

Randomness: sequence ``k`` (numbered across splits) draws everything from
``SeedSequence([seed, k])``, so a sequence depends only on the seed, its number and the parameters,
never on how many other sequences are built.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from svrt_data.geometry import DEFAULT_RATE_HZ, Geometry
from svrt_data.spike_io import write_dat
from svrt_data.synth.camera import true_flow, view_for
from svrt_data.synth.files import (
    MANIFEST,
    REPLACEMENT,
    STAGING,
    prepare_output,
    swap_dataset,
    write_json,
    write_npy,
    write_png,
)
from svrt_data.synth.photos import Photo, load_photos, make_canvases, photo_source
from svrt_data.synth.simulator import IntegrateAndFire
from svrt_data.synth.trajectory import random_trajectory
from svrt_data.synth.warp import render_exposure, render_frames
from svrt_errors import SvrtValueError

__all__ = ["SUBFRAMES", "SynthConfig", "SynthResult", "sequence_name", "synthesize"]

SUBFRAMES = 8  # internal frames (= spike frames) per source frame: the Spk-GoPro "NN*8" rule
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class SynthConfig:
    """Every parameter of a synthetic dataset (recorded in ``synth.json``); see :func:`synthesize`."""

    sequences: int = 2
    test_sequences: int = 1
    frames: int = 6
    size: tuple[int, int] = (128, 256)
    spike_scale: float = 0.5
    seed: int = 0
    source_frames: int = 7
    threshold: float = 2.0
    noise_std: float = 0.0
    dark_rate: float = 0.0
    motion: float = 1.0
    images: str | None = None
    rate_hz: float = DEFAULT_RATE_HZ

    @property
    def spike_size(self) -> tuple[int, int]:
        return round(self.size[0] * self.spike_scale), round(self.size[1] * self.spike_scale)

    @property
    def spike_frames_per_blur(self) -> int:
        return self.source_frames * SUBFRAMES

    def validate(self) -> None:
        """Raise :class:`SvrtValueError` naming the parameter, the value and the fix."""
        if self.sequences < 0 or self.test_sequences < 0 or self.sequences + self.test_sequences < 1:
            raise SvrtValueError(f"need at least one sequence; got sequences={self.sequences}, "
                                 f"test_sequences={self.test_sequences} (both must be >= 0)")
        if self.frames < 1:
            raise SvrtValueError(f"frames (blurry frames per sequence) must be >= 1, got {self.frames}")
        h, w = self.size
        if h < 1 or w < 1:
            raise SvrtValueError(f"size must be positive HxW, got {h}x{w}")
        if not (math.isfinite(self.spike_scale) and self.spike_scale > 0):
            raise SvrtValueError(f"spike_scale must be > 0, got {self.spike_scale}")
        hs, ws = h * self.spike_scale, w * self.spike_scale
        if abs(hs - round(hs)) > 1e-9 or abs(ws - round(ws)) > 1e-9 or round(hs) < 1:
            raise SvrtValueError(
                f"size {h}x{w} at spike scale {self.spike_scale} gives {hs:g}x{ws:g} spike pixels; both must be whole "
                "numbers: pick a size whose height and width are multiples of 1/spike_scale"
            )
        if round(ws) % 8:
            good = 8 / self.spike_scale
            raise SvrtValueError(
                f"spike width must be a multiple of 8 (.dat rows are packed 8 pixels per byte): size {h}x{w} at "
                f"spike scale {self.spike_scale} gives a spike width of {round(ws)}. Choose a width that is a "
                f"multiple of {good:g} (e.g. {h}x{max(1, round(w / good)) * good:g}) or another spike scale"
            )
        if self.source_frames < 1:
            raise SvrtValueError(f"source_frames (NN, source frames per blurry frame) must be >= 1, "
                                 f"got {self.source_frames}")
        if self.seed < 0:
            raise SvrtValueError(f"seed must be a non-negative integer, got {self.seed}")
        if not (math.isfinite(self.motion) and self.motion >= 0):
            raise SvrtValueError(f"motion must be a finite number >= 0, got {self.motion}")
        # the sensor checks threshold, noise_std and dark_rate with its own messages
        IntegrateAndFire(1, 8, threshold=self.threshold, noise_std=self.noise_std, dark_rate=self.dark_rate,
                         rng=np.random.default_rng(0))


@dataclass(frozen=True)
class SynthResult:
    """What :func:`synthesize` wrote."""

    out_dir: Path
    sequences: tuple[tuple[str, str], ...]  # (split, sequence)
    frames: int  # blurry frames per sequence
    size: tuple[int, int]
    spike_size: tuple[int, int]
    spike_frames: int  # in the whole dataset
    firing_rate: float  # spikes per pixel per spike frame, whole dataset
    align_log: Path
    seconds: float


def sequence_name(index: int, source_frames: int) -> str:
    """GoPro-style name whose middle field is NN (``SYN0003_07_00``), so ``NN*8`` finds the spike length."""
    return f"SYN{index:04d}_{source_frames:02d}_00"


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8)


def _build_sequence(cfg: SynthConfig, index: int, photos: list[Photo], seq_dir: Path, bar: tqdm | None) -> dict:
    """Write one sequence into ``seq_dir``; return its record for ``synth.json``."""
    scene_rng, sensor_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([cfg.seed, index]).spawn(2))
    h, w = cfg.size
    photo = photos[int(scene_rng.integers(len(photos)))]
    traj = random_trajectory(scene_rng, height=h, motion=cfg.motion)
    view = view_for(traj, h, w)
    canvases = make_canvases(photo, view, cfg.spike_scale, scene_rng)
    sensor = IntegrateAndFire(*cfg.spike_size, threshold=cfg.threshold, noise_std=cfg.noise_std,
                              dark_rate=cfg.dark_rate, rng=sensor_rng)
    nn, n_sub = cfg.source_frames, cfg.spike_frames_per_blur
    spikes_total = 0
    for j in range(cfg.frames):
        times = j * nn + (np.arange(n_sub) + 0.5) / SUBFRAMES
        centre = j * nn + nn / 2
        write_png(seq_dir / "blur" / f"{j:06d}.png", _to_uint8(render_exposure(canvases.rgb, traj, view, times)))
        sharp = render_frames(canvases.rgb, traj, view, np.array([centre]))[0]
        write_png(seq_dir / "sharp" / f"{j:06d}.png", _to_uint8(sharp))
        luma = render_frames(canvases.luma, traj, view, times, scale=cfg.spike_scale,
                             canvas_scale=canvases.luma_scale)  # S Hs Ws
        spikes = sensor.run(np.clip(luma, 0.0, 1.0))
        spikes_total += int(spikes.sum(dtype=np.int64))
        write_dat(seq_dir / "spike" / f"{j:06d}.dat", spikes, flip=True)
        if j:
            write_npy(seq_dir / "flow" / f"{j - 1:06d}.npy", true_flow(traj, view, centre - nn, centre))
        if bar is not None:
            bar.update(1)
    return {
        "photo": photo.name,
        "crop": list(canvases.crop),
        "canvas": [view.canvas_height, view.canvas_width],
        "trajectory": traj.to_dict(),
        "spikes": spikes_total,
    }


_worker_photos: list[Photo] = []
"""The photographs of a worker process (loaded once per process by :func:`_load_worker_photos`)."""


def _load_worker_photos(images: str | None) -> None:
    _worker_photos[:] = load_photos(images)


def _sequence_job(cfg: SynthConfig, index: int, seq_dir: str) -> dict:
    """:func:`_build_sequence` in a worker process (photographs loaded there once: they are not pickled over)."""
    return _build_sequence(cfg, index, _worker_photos, Path(seq_dir), None)


def _build_parallel(cfg: SynthConfig, plan: list[tuple[str, int]], staging_root: Path, workers: int,
                    bar: tqdm) -> list[dict]:
    """Every sequence of ``plan`` into ``staging_root/<split>/<name>``, ``workers`` processes at a time;
    records in plan order."""
    dirs = [staging_root / split / sequence_name(index, cfg.source_frames) for split, index in plan]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: the caller may hold CUDA or threads (a training script), which fork does not carry safely
    with ProcessPoolExecutor(min(workers, len(plan)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_load_worker_photos, initargs=(cfg.images,)) as pool:
        futures = [pool.submit(_sequence_job, cfg, index, str(d)) for (_, index), d in zip(plan, dirs, strict=True)]
        try:
            for done in as_completed(futures):
                done.result()  # a worker's error surfaces here, as in the serial loop
                bar.update(cfg.frames)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        return [f.result() for f in futures]


def synthesize(
    out_dir: str | os.PathLike,
    *,
    sequences: int = 2,
    test_sequences: int = 1,
    frames: int = 6,
    size: tuple[int, int] = (128, 256),
    spike_scale: float = 0.5,
    seed: int = 0,
    source_frames: int = 7,
    threshold: float = 2.0,
    noise_std: float = 0.0,
    dark_rate: float = 0.0,
    motion: float = 1.0,
    images: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 1,
) -> SynthResult:
    """Build a synthetic raw dataset in the Spk-GoPro layout under ``out_dir``.

    Layout: ``<split>/<sequence>/{blur,sharp}/NNNNNN.png`` (uint8 RGB ``H x W``), ``spike/NNNNNN.dat``
    (``8 NN`` frames of ``Hs x Ws`` each, rows bottom-up), ``flow/NNNNNN.npy``; ``align.csv`` (the align
    log, validated); ``synth.json`` (every parameter, the seed and each sequence's photo, crop and
    trajectory). Splits ``train`` (``sequences``) and ``test`` (``test_sequences``). The time model is in
    the module docstring. Same arguments and seed give byte-identical files.

    Args:
        out_dir: an empty or absent folder (or a previous synthetic dataset with ``overwrite``).
        sequences, test_sequences: sequences in ``train`` and ``test``.
        frames: blurry frames per sequence.
        size: ``(H, W)`` of the RGB frames.
        spike_scale: spike pixels per RGB pixel; ``W * spike_scale`` must be a multiple of 8.
        seed: seeds everything.
        source_frames: NN, source frames per blurry frame (the sequence names carry it).
        threshold, noise_std, dark_rate: the sensor (:class:`~svrt_data.synth.simulator.IntegrateAndFire`).
        motion: scales the camera motion (0: static scenes, blur equals sharp).
        images: folder of photographs to use instead of scikit-image's.
        overwrite: replace a synthetic dataset already in ``out_dir`` (built beside it, swapped in when
            complete; other files in ``out_dir`` are kept).
        progress: show a progress bar (per blurry frame; per sequence with ``workers``).
        workers: sequences built at once, one process each (the files are the same for any number).

    Raises:
        SvrtValueError: a bad parameter or a non-empty ``out_dir``.
        BackendUnavailableError: no ``images`` and scikit-image is not installed.
    """
    from svrt_data.align import PerFrameFiles, build_align_log, validate_align_log, write_align_log

    cfg = SynthConfig(sequences, test_sequences, frames, (int(size[0]), int(size[1])), float(spike_scale), int(seed),
                      int(source_frames), float(threshold), float(noise_std), float(dark_rate), float(motion),
                      None if images is None else str(images))
    cfg.validate()
    if workers < 1:
        raise SvrtValueError(f"workers must be >= 1, got {workers}")
    photos = load_photos(images)
    start = time.perf_counter()
    out, replacing = prepare_output(out_dir, overwrite=overwrite)
    final_out, out = out, (out / REPLACEMENT if replacing else out)  # a replacement is built beside the old one
    if replacing:
        out.mkdir()
    plan = [("train", k) for k in range(cfg.sequences)]
    plan += [("test", cfg.sequences + k) for k in range(cfg.test_sequences)]
    manifest = {
        "format": "svrt-synth",
        "version": MANIFEST_VERSION,
        "complete": False,
        "parameters": {**asdict(cfg), "size": list(cfg.size), "subframes": SUBFRAMES},
        "photo_source": photo_source(images),
        "photos": [p.name for p in photos],
        "layout": {
            "rgb_size": list(cfg.size),
            "spike_size": list(cfg.spike_size),
            "spike_frames_per_blur": cfg.spike_frames_per_blur,
            "spike_flip": True,
            "spike_rate_hz": cfg.rate_hz,
            "flow": "flow/i.npy: float32 (H, W, 2), (dx, dy) in RGB pixels from sharp/i to sharp/i+1; "
                    "sharp_i(x) = sharp_i+1(x + flow(x))",
        },
        "sequences": [],
    }
    write_json(out / MANIFEST, manifest)
    spikes_total = 0
    with tqdm(total=len(plan) * cfg.frames, desc="synth", unit="frame", disable=not progress) as bar:
        if workers > 1:
            records = _build_parallel(cfg, plan, out / STAGING, workers, bar)
        for i, (split, index) in enumerate(plan):
            name = sequence_name(index, cfg.source_frames)
            staging = out / STAGING / split / name
            record = records[i] if workers > 1 else _build_sequence(cfg, index, photos, staging, bar)
            final = out / split / name
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, final)
            spikes_total += record["spikes"]
            manifest["sequences"].append({"split": split, "name": name, **record})
    shutil.rmtree(out / STAGING, ignore_errors=True)
    geometry = Geometry(*cfg.spike_size, flip=True, rate_hz=cfg.rate_hz, name="synth")
    log = build_align_log(out, PerFrameFiles(frames_per_blur=f"NN*{SUBFRAMES}"), geometry)
    validate_align_log(log, out)
    align_path = write_align_log(log, out / "align.csv")
    manifest["complete"] = True
    write_json(out / MANIFEST, manifest)
    if replacing:
        swap_dataset(out, final_out)
        out, align_path = final_out, final_out / "align.csv"
    n_spike_frames = len(plan) * cfg.frames * cfg.spike_frames_per_blur
    hs, ws = cfg.spike_size
    return SynthResult(
        out_dir=out,
        sequences=tuple((s, sequence_name(k, cfg.source_frames)) for s, k in plan),
        frames=cfg.frames,
        size=cfg.size,
        spike_size=cfg.spike_size,
        spike_frames=n_spike_frames,
        firing_rate=spikes_total / (n_spike_frames * hs * ws),
        align_log=align_path,
        seconds=time.perf_counter() - start,
    )
